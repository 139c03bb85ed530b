"""Turn a model artifact into a scoring model.

=============  ==========================================================
``model.json``  scorewire's linear format → native kernel
``model.pmml``  PMML RegressionModel → native kernel
``model.onnx``  linear graph (see ``scorewire.formats.onnx_graph``) → native kernel;
                anything else → onnxruntime
=============  ==========================================================

A native model's explanations are measured from the feature means of the
``reference.json`` beside its artifact (see ``scorewire.formats.reference``), or from
zeros when there is none or it does not state every mean.

No format here executes code from the artifact: pickles are never loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ModelLoadError
from ..formats.files import DEFAULT, ModelFiles
from ..formats.linear_json import load_linear_json
from ..formats.linear_spec import LinearSpec
from ..formats.onnx_graph import inspect_onnx, read_onnx
from ..formats.reference import REFERENCE_FILE, Reference
from ..types import Inputs, Signature
from .native import NativeLinearModel, default_n_threads
from .ort import OnnxModel

ARTIFACTS = ("model.json", "model.onnx", "model.pmml")

log = logging.getLogger("scorewire.backends")


class Model(Protocol):
    """What every backend offers the service."""

    #: "native" (the kernel) or "onnxruntime"
    backend: str
    signature: Signature
    #: why an ONNX graph runs on onnxruntime rather than the kernel ("" otherwise)
    native_reason: str

    def output_names(self, requested: Iterable[str] | None) -> tuple[str, ...]: ...

    def predict(self, X: Inputs, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Score one matrix (a tabular signature: ``signature.tabular``) or the
        model's inputs by name (any other)."""
        ...


def find_artifact(version_dir: str | os.PathLike[str]) -> Path:
    """The one model artifact in a version directory. Nothing else there is ever
    loaded: a pickle (``model.pkl``, ``model.joblib``) is not an artifact."""
    d = Path(version_dir)
    found = [d / name for name in ARTIFACTS if (d / name).is_file()]
    if not found:
        raise ModelLoadError(f"{d}: no model artifact (expected one of {', '.join(ARTIFACTS)})")
    if len(found) > 1:
        raise ModelLoadError(f"{d}: more than one model artifact ({', '.join(p.name for p in found)})")
    return found[0]


def load_model(
    path: str | os.PathLike[str], backend: str = "auto", n_threads: int | None = None, files: ModelFiles = DEFAULT
) -> Model:
    """Load a model from an artifact file or a version directory holding one.

    ``backend``: "auto" (native when the model is linear, else onnxruntime),
    "native" (fail unless it is linear) or "onnxruntime" (ONNX only). ``files``:
    how the artifact is read — its size limit, and the repository it must be in
    (see :class:`~scorewire.formats.files.ModelFiles`).
    """
    p = Path(path)
    if p.is_dir():
        p = find_artifact(p)
    threads = default_n_threads() if n_threads is None else n_threads
    name = p.name
    if name.endswith(".json") or name.endswith(".pmml"):
        if backend == "onnxruntime":
            raise ModelLoadError(f"{p}: a {p.suffix} model is scored natively; backend onnxruntime needs model.onnx")
        if name.endswith(".json"):
            spec = load_linear_json(p, files)
        else:
            from ..formats.pmml import load_pmml

            spec = load_pmml(p, files)
        return _native(p, spec, threads, files)
    if name.endswith(".onnx"):
        model = read_onnx(p, files)
        if backend != "onnxruntime":
            result = inspect_onnx(model)
            if result.spec is not None:
                return _native(p, result.spec, threads, files)
            if backend == "native":
                raise ModelLoadError(f"{p}: backend native, but the graph is not linear ({result.reason})")
        reason = "forced by backend" if backend == "onnxruntime" else result.reason
        return OnnxModel(model, n_threads=threads, source=str(p), native_reason=reason)
    raise ModelLoadError(f"{p}: unknown artifact type (expected one of {', '.join(ARTIFACTS)})")


def _native(artifact: Path, spec: LinearSpec, n_threads: int, files: ModelFiles) -> NativeLinearModel:
    """A native model, its explanations measured from its version's reference means."""
    baseline = explanation_baseline(artifact.parent, spec.n_features, files)
    return NativeLinearModel(spec, n_threads=n_threads, baseline=baseline)


def explanation_baseline(version_dir: Path, n_features: int, files: ModelFiles = DEFAULT) -> np.ndarray | None:
    """What a version's explanations are measured from: the feature means of its
    reference.json (a malformed one fails the load), or None (zeros) without one."""
    reference = Reference.load(version_dir, n_features, files)
    baseline = reference.means if reference is not None else None
    if reference is not None and baseline is None:
        log.warning("%s does not state every feature's mean: explanations use a zero baseline",
                    version_dir / REFERENCE_FILE)  # fmt: skip
    return baseline
