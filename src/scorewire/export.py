"""``scorewire export``: fitted scikit-learn estimators → safe repository artifacts.

Linear estimators (optionally behind a StandardScaler, MinMaxScaler or MaxAbsScaler
in a Pipeline, folded into the weights) become ``model.json``; anything else becomes
``model.onnx`` through skl2onnx. Reference feature statistics for drift monitoring
go to ``reference.json`` beside the artifact. A saved Keras model whose network is
linear (see :mod:`scorewire.formats.keras`) becomes ``model.json`` too; Keras files
are read, never run.

This is the one place in scorewire that unpickles, and only a file the user names:
the server itself never loads a pickle.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInput
from .formats.linear_json import dump_linear_json
from .formats.linear_spec import LinearSpec
from .formats.reference import reference_statistics


@dataclass(frozen=True)
class ExportResult:
    """Where an export wrote its files, and how the model will be served."""

    artifact: Path
    reference: Path | None
    backend: str  # "native" or "onnxruntime"


# ---------------------------------------------------------------------------
# linear estimators → LinearSpec
# ---------------------------------------------------------------------------

def _fold_scaler(step: Any, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold x' = (x - offset) * scale into w·x' + b: w' = w * scale, b' = b - w' · offset."""
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    d = coef.shape[1]
    if isinstance(step, StandardScaler):
        scale = 1.0 / step.scale_ if step.scale_ is not None else np.ones(d)
        offset = step.mean_ if step.mean_ is not None else np.zeros(d)
    elif isinstance(step, MinMaxScaler):
        if step.clip:
            raise InvalidInput("MinMaxScaler(clip=True) is not linear and cannot be folded")
        # x' = x * scale_ + min_  =  (x + min_ / scale_) * scale_
        scale = step.scale_
        offset = -step.min_ / step.scale_
    elif isinstance(step, MaxAbsScaler):
        scale = 1.0 / step.scale_
        offset = np.zeros(d)
    else:
        raise TypeError(type(step).__name__)
    new_coef = coef * scale
    return new_coef, intercept - new_coef @ offset


def linear_spec_from_sklearn(estimator: Any) -> LinearSpec | None:
    """A LinearSpec for a fitted linear estimator or scaler+linear Pipeline, else None."""
    from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
    from sklearn.linear_model._base import LinearClassifierMixin, LinearModel
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    scalers: list[Any] = []
    final = estimator
    if isinstance(estimator, Pipeline):
        *pre, (_, final) = estimator.steps
        for _, step in pre:
            if step is None or step == "passthrough":
                continue
            if not isinstance(step, (StandardScaler, MinMaxScaler, MaxAbsScaler)):
                return None
            scalers.append(step)
    names = getattr(estimator, "feature_names_in_", None)
    feature_names = tuple(str(n) for n in names) if names is not None else None
    if isinstance(final, LinearClassifierMixin):
        coef = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(final.intercept_, dtype=np.float64)).copy()
        classes = tuple(c.item() if isinstance(c, np.generic) else c for c in final.classes_)
        if isinstance(final, LogisticRegression):
            ovr = getattr(final, "multi_class", "auto") == "ovr" or final.solver == "liblinear"
            link = "logistic" if coef.shape[0] == 1 else ("ovr" if ovr else "softmax")
        elif isinstance(final, SGDClassifier) and final.loss == "log_loss":
            link = "logistic" if coef.shape[0] == 1 else "ovr"
        else:
            link = "identity"  # decision scores only (hinge, perceptron, ridge classifier)
        outputs = (
            {"label": "label", "decision": "decision"}
            if link == "identity"
            else {"label": "label", "probabilities": "probabilities", "decision": "decision"}
        )
        task = "classification"
    elif isinstance(final, (LinearModel, LinearRegression)) and hasattr(final, "coef_"):
        coef = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
        intercept = np.broadcast_to(
            np.asarray(final.intercept_, dtype=np.float64), (coef.shape[0],)
        ).copy()
        classes, link, task, outputs = None, "identity", "regression", {"value": "value"}
    else:
        return None
    for step in reversed(scalers):
        coef, intercept = _fold_scaler(step, coef, intercept)
    return LinearSpec(
        task=task,
        link=link,
        coef=coef,
        intercept=intercept,
        classes=classes,
        feature_names=feature_names,
        dtype="float64",
        outputs=outputs,
    )


def n_features_of(estimator: Any) -> int:
    n = getattr(estimator, "n_features_in_", None)
    if n is None:
        raise InvalidInput("the estimator is not fitted (no n_features_in_)")
    return int(n)


def onnx_from_sklearn(estimator: Any, n_features: int) -> bytes:
    """skl2onnx conversion with one float32 input named ``input`` and no ZipMap."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options: dict[Any, Any] = {}
    if hasattr(estimator, "predict_proba"):
        options = {id(estimator): {"zipmap": False}}
    onx = to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


# ---------------------------------------------------------------------------
# reference statistics
# ---------------------------------------------------------------------------

def read_csv_matrix(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """A numeric CSV with a header row → (column names, float64 matrix)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InvalidInput(f"{os.fspath(path)}: empty CSV file") from None
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise InvalidInput(f"{os.fspath(path)}:{lineno}: {len(row)} fields, header has {len(header)}")
            try:
                rows.append([float(v) for v in row])
            except ValueError:
                raise InvalidInput(f"{os.fspath(path)}:{lineno}: a value is not a number") from None
    return [h.strip() for h in header], np.asarray(rows, dtype=np.float64).reshape(len(rows), len(header))


# ---------------------------------------------------------------------------
# the export
# ---------------------------------------------------------------------------

def next_version(model_dir: Path) -> int:
    existing = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return max(existing, default=0) + 1


def export_estimator(
    estimator: Any,
    repo: str | os.PathLike[str],
    name: str,
    version: int | None = None,
    reference: np.ndarray | None = None,
    reference_names: list[str] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write a fitted estimator into ``repo/name/version/``."""
    from .repository import valid_model_name

    if not valid_model_name(name):
        raise InvalidInput(f"invalid model name {name[:64]!r}: use letters, digits, '_', '-', '.'")
    n_features = n_features_of(estimator)
    vdir = _version_dir(Path(repo) / name, version, overwrite)

    spec = linear_spec_from_sklearn(estimator)
    if spec is not None and spec.feature_names is None and reference_names and len(reference_names) == n_features:
        spec = LinearSpec(**{**spec.__dict__, "feature_names": tuple(reference_names)})
    if spec is not None:
        artifact = vdir / "model.json"
        dump_linear_json(spec, artifact)
        backend = "native"
    else:
        artifact = vdir / "model.onnx"
        artifact.write_bytes(onnx_from_sklearn(estimator, n_features))
        backend = "onnxruntime"

    names = reference_names or (list(spec.feature_names) if spec and spec.feature_names else None)
    ref_path = _write_reference(vdir, reference, names, n_features)
    return ExportResult(artifact=artifact, reference=ref_path, backend=backend)


def _version_dir(model_dir: Path, version: int | None, overwrite: bool) -> Path:
    """The version directory to write (the next version by default), made and emptied
    of artifacts."""
    version = next_version(model_dir) if version is None else version
    if version < 1:
        raise InvalidInput("the version must be a positive integer")
    vdir = model_dir / str(version)
    if vdir.exists() and any(vdir.iterdir()) and not overwrite:
        raise InvalidInput(f"{vdir} already exists and is not empty")
    vdir.mkdir(parents=True, exist_ok=True)
    for old in ("model.json", "model.onnx", "model.pmml", "reference.json"):
        (vdir / old).unlink(missing_ok=True)
    return vdir


def _write_reference(
    vdir: Path, reference: np.ndarray | None, names: list[str] | None, n_features: int
) -> Path | None:
    """``reference.json`` (drift monitoring's baseline) from reference rows, if given."""
    if reference is None:
        return None
    if reference.ndim != 2 or reference.shape[1] != n_features:
        raise InvalidInput(f"reference data has {reference.shape[-1]} columns, the model takes {n_features}")
    ref_path = vdir / "reference.json"
    with open(ref_path, "w", encoding="utf-8") as fh:
        json.dump(reference_statistics(reference, names), fh, indent=1)
        fh.write("\n")
    return ref_path


def export_keras(
    model_path: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    name: str,
    version: int | None = None,
    reference: np.ndarray | None = None,
    reference_names: list[str] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write a saved Keras model (``.keras`` or ``.h5``) whose network is linear as
    ``model.json`` into ``repo/name/version/`` (see :mod:`scorewire.formats.keras`)."""
    from .formats.keras import read_keras
    from .repository import valid_model_name

    if not valid_model_name(name):
        raise InvalidInput(f"invalid model name {name[:64]!r}: use letters, digits, '_', '-', '.'")
    spec = read_keras(model_path)
    if reference_names and len(reference_names) == spec.n_features:
        spec = replace(spec, feature_names=tuple(reference_names))
    vdir = _version_dir(Path(repo) / name, version, overwrite)
    artifact = vdir / "model.json"
    dump_linear_json(spec, artifact)
    ref_path = _write_reference(vdir, reference, reference_names, spec.n_features)
    return ExportResult(artifact=artifact, reference=ref_path, backend="native")


def export_file(
    model_path: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    name: str,
    version: int | None = None,
    reference_csv: str | os.PathLike[str] | None = None,
    target: str | None = None,
) -> ExportResult:
    """Export the model in ``model_path``, by what the file is: a saved Keras model
    (``.keras`` zip or HDF5 ``.h5``, read without running anything) or a joblib/pickle
    file of a fitted scikit-learn estimator — unpickled: trusted, the user's own file."""
    ref = names = None
    if reference_csv is not None:
        names, ref = read_csv_matrix(reference_csv)
        if target is not None:
            if target not in names:
                raise InvalidInput(f"{os.fspath(reference_csv)}: no column {target!r}")
            keep = [i for i, n in enumerate(names) if n != target]
            names, ref = [names[i] for i in keep], ref[:, keep]
    kind = model_file_kind(model_path)
    if kind == "keras":
        return export_keras(model_path, repo, name, version, ref, names)
    return export_estimator(_unpickle(model_path), repo, name, version, ref, names)


#: what ``scorewire export`` reads, for the message that refuses anything else
SUPPORTED_FILES = (
    "a joblib or pickle file of a fitted scikit-learn estimator, or a Keras model (.keras, or legacy .h5); "
    "convert other models to ONNX and put model.onnx in the repository"
)

#: the first bytes of a pickle (protocol 2+) and of the compressed files joblib writes
_PICKLE_MAGIC = (b"\x80", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d\x00\x00", b"\x04\x22\x4d\x18")


def model_file_kind(model_path: str | os.PathLike[str]) -> str:
    """``"keras"`` or ``"pickle"``, by the file's first bytes; anything else is refused
    in one line naming what export reads."""
    from .formats.keras import is_keras_file

    with open(model_path, "rb") as fh:
        head = fh.read(8)
    label = Path(model_path).name
    if is_keras_file(head):
        return "keras"
    if Path(model_path).suffix.lower() in (".keras", ".h5", ".hdf5"):
        raise InvalidInput(f"{label}: not a Keras model file (no zip or HDF5 header); scorewire export reads {SUPPORTED_FILES}")
    if head.startswith(_PICKLE_MAGIC):
        return "pickle"
    raise InvalidInput(f"{label}: not a file scorewire export reads; it reads {SUPPORTED_FILES}")


def _unpickle(model_path: str | os.PathLike[str]) -> Any:
    """joblib.load, with a file that is not a pickle of an estimator refused in one line."""
    import joblib

    label = Path(model_path).name
    try:
        return joblib.load(model_path)  # NOTE: unpickling runs code: the user's own file only
    except ModuleNotFoundError as exc:
        raise InvalidInput(f"{label}: unpickling needs the module {exc.name!r}, which is not installed") from None
    except Exception as exc:  # a damaged pickle can raise nearly anything (struct.error, …)
        raise InvalidInput(f"{label}: not a pickle scorewire export can read ({type(exc).__name__}); it reads {SUPPORTED_FILES}") from None
