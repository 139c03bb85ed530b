"""The public surface is pinned: a change to it is deliberate."""

from __future__ import annotations

import numpy as np

import scorewire

PUBLIC = [
    "AsyncClient",
    "Client",
    "ClientError",
    "Code",
    "DeadlineExceeded",
    "InternalError",
    "InvalidInput",
    "LinearSpec",
    "Model",
    "ModelLoadError",
    "ModelRepository",
    "ModelVersion",
    "NativeLinearModel",
    "NotFound",
    "OnnxModel",
    "Overloaded",
    "ScorewireError",
    "Signature",
    "State",
    "TensorSpec",
    "Unavailable",
    "__version__",
    "demo_repository",
    "export_estimator",
    "export_keras",
    "load_model",
    "reference_statistics",
]


def test_exported_members():
    assert sorted(scorewire.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(scorewire, name), name
    # submodules are reachable but not part of __all__; every other public name is
    # listed (``annotations`` is the __future__ import)
    public_attrs = {n for n in dir(scorewire) if not n.startswith("_")}
    extra = {n for n in public_attrs - set(PUBLIC) if not isinstance(getattr(scorewire, n), type(scorewire))}
    assert extra == {"annotations"}


def test_in_process_api_round_trip():
    model = scorewire.load_model(scorewire.demo_repository() / "breast-cancer" / "1")
    assert model.backend == "native"
    sig = model.signature
    assert sig.n_features == 30 and sig.task == "classification" and sig.classes == (0, 1)
    out = model.predict(np.zeros((2, 30)), outputs=("probabilities",))
    assert list(out) == ["probabilities"] and out["probabilities"].shape == (2, 2)
