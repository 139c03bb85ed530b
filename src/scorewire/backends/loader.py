"""Turn a model artifact into a scoring model.

=============  ==========================================================
``model.json``  scorewire's linear format → native kernel
``model.pmml``  PMML RegressionModel → native kernel
``model.onnx``  linear graph (see ``scorewire.formats.onnx_graph``) → native kernel;
                anything else → onnxruntime
=============  ==========================================================

No format here executes code from the artifact: pickles are never loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from ..errors import ModelLoadError
from ..formats.linear_json import load_linear_json
from ..types import Signature
from .native import NativeLinearModel, default_n_threads
from .ort import OnnxModel

ARTIFACTS = ("model.json", "model.onnx", "model.pmml")


class Model(Protocol):
    """What every backend offers the service."""

    #: "native" (the kernel) or "onnxruntime"
    backend: str
    signature: Signature
    #: why an ONNX graph runs on onnxruntime rather than the kernel ("" otherwise)
    native_reason: str

    def output_names(self, requested: Iterable[str] | None) -> tuple[str, ...]: ...

    def predict(self, X: np.ndarray, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]: ...


def find_artifact(version_dir: str | os.PathLike[str]) -> Path:
    """The one model artifact in a version directory."""
    d = Path(version_dir)
    found = [d / name for name in ARTIFACTS if (d / name).is_file()]
    if not found:
        raise ModelLoadError(f"{d}: no model artifact (expected one of {', '.join(ARTIFACTS)})")
    if len(found) > 1:
        raise ModelLoadError(f"{d}: more than one model artifact ({', '.join(p.name for p in found)})")
    return found[0]


def read_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Parse and check an ONNX file; ModelLoadError naming it when it is not valid."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{os.fspath(path)}: cannot read ({exc.strerror})") from None
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError, RuntimeError):
        raise ModelLoadError(f"{os.fspath(path)}: not a valid ONNX model (truncated or corrupt)") from None
    if not model.graph.node:
        raise ModelLoadError(f"{os.fspath(path)}: not a valid ONNX model (empty graph)")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "invalid"
        raise ModelLoadError(f"{os.fspath(path)}: ONNX check failed ({first})") from None
    return model


def load_model(
    path: str | os.PathLike[str], backend: str = "auto", n_threads: int | None = None
) -> Model:
    """Load a model from an artifact file or a version directory holding one.

    ``backend``: "auto" (native when the model is linear, else onnxruntime),
    "native" (fail unless it is linear) or "onnxruntime" (ONNX only).
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
            spec = load_linear_json(p)
        else:
            from ..formats.pmml import load_pmml

            spec = load_pmml(p)
        return NativeLinearModel(spec, n_threads=threads)
    if name.endswith(".onnx"):
        from ..formats.onnx_graph import inspect_onnx

        model = read_onnx(p)
        if backend != "onnxruntime":
            result = inspect_onnx(model)
            if result.spec is not None:
                return NativeLinearModel(result.spec, n_threads=threads)
            if backend == "native":
                raise ModelLoadError(f"{p}: backend native, but the graph is not linear ({result.reason})")
        reason = "forced by backend" if backend == "onnxruntime" else result.reason
        return OnnxModel(model, n_threads=threads, source=str(p), native_reason=reason)
    raise ModelLoadError(f"{p}: unknown artifact type (expected one of {', '.join(ARTIFACTS)})")
