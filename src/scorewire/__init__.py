"""scorewire: a gRPC model server for tabular models with a compiled linear core.

The in-process API::

    import scorewire
    model = scorewire.load_model("models/credit/1")        # or a model.* file
    model.signature                                         # inputs, outputs, classes
    model.predict(X, outputs=("probabilities",))           # {"probabilities": ndarray}

    repo = scorewire.ModelRepository(scorewire.demo_repository())
    repo.load_all()
    repo.resolve("breast-cancer").model.predict(X)

A running server, from Python::

    with scorewire.Client("127.0.0.1:50051") as client:
        client.predict("breast-cancer", X).outputs["probabilities"]
"""

from __future__ import annotations

from importlib import resources as _resources
from pathlib import Path as _Path

from .backends.loader import Model, load_model
from .backends.native import NativeLinearModel
from .backends.ort import OnnxModel
from .errors import (
    Code,
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    ModelLoadError,
    NotFound,
    Overloaded,
    ScorewireError,
    Unavailable,
)
from .export import export_estimator, export_keras
from .formats.linear_spec import LinearSpec
from .formats.reference import reference_statistics
from .grpc.client import AsyncClient, Client, ClientError
from .repository import ModelRepository, ModelVersion, State
from .types import Signature, TensorSpec

__version__ = "0.1.0"


def demo_repository() -> _Path:
    """The demo model repository that ships inside the package."""
    return _Path(str(_resources.files("scorewire") / "demo"))


__all__ = [
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
