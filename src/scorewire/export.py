"""``scorewire export``: fitted scikit-learn estimators → safe repository artifacts.

Linear estimators (optionally behind a StandardScaler, MinMaxScaler or MaxAbsScaler
in a Pipeline, folded into the weights) become ``model.json``; anything else becomes
``model.onnx`` through skl2onnx. Reference feature statistics for drift monitoring
go to ``reference.json`` beside the artifact. A saved Keras model whose network is
linear (see :mod:`scorewire.formats.keras`) becomes ``model.json`` too; Keras files
are read, never run.

scikit-learn's ensembles — VotingClassifier (soft, hard), VotingRegressor,
StackingClassifier, StackingRegressor — become an ensemble (``[ensemble]`` in
model.toml, see :mod:`scorewire.formats.ensemble`) over member models, one per
estimator, each exported as above into a model of its own named
``<name>-<estimator name>``.

This is the one place in scorewire that unpickles, and only a file the user names:
the server itself never loads a pickle.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInput
from .formats.ensemble import EnsembleConfig, EnsembleMember, ensemble_toml
from .formats.linear_json import dump_linear_json
from .formats.linear_spec import LinearSpec
from .formats.reference import reference_statistics


@dataclass(frozen=True)
class ExportResult:
    """Where an export wrote its files, and how the model will be served."""

    artifact: Path  # an ensemble's: its model.toml
    reference: Path | None
    backend: str  # "native" or "onnxruntime"; an ensemble's: "ensemble", or "native" when it folds
    #: an ensemble's members, in its order
    members: tuple[ExportResult, ...] = ()


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


def onnx_from_sklearn(estimator: Any, n_features: int, dtype: str = "float32") -> bytes:
    """skl2onnx conversion with one input named ``input`` (float32, or float64 when
    ``dtype`` says so) and no ZipMap."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    options: dict[Any, Any] = {}
    if hasattr(estimator, "predict_proba"):
        options = {id(estimator): {"zipmap": False}}
    tensor_type = DoubleTensorType if dtype == "float64" else FloatTensorType
    onx = to_onnx(
        estimator,
        initial_types=[("input", tensor_type([None, n_features]))],
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
    """Write a fitted estimator into ``repo/name/version/`` (a scikit-learn
    ensemble: see :func:`export_ensemble`)."""
    from .repository import valid_model_name

    if not valid_model_name(name):
        raise InvalidInput(f"invalid model name {name[:64]!r}: use letters, digits, '_', '-', '.'")
    if is_sklearn_ensemble(estimator):
        return export_ensemble(estimator, repo, name, version, reference, reference_names, overwrite)
    vdir = _version_dir(Path(repo) / name, version, overwrite)
    return _write_model(estimator, vdir, reference, reference_names)


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


def _write_model(
    estimator: Any,
    vdir: Path,
    reference: np.ndarray | None,
    reference_names: list[str] | None,
    dtype: str | None = None,
    classes: tuple[object, ...] | None = None,
) -> ExportResult:
    """Write one estimator's artifact (and reference.json) into ``vdir``.

    ``dtype``: the input dtype, for an ensemble's members, which must agree (None:
    model.json float64, model.onnx float32). ``classes``: the labels of the member
    of a scikit-learn ensemble, which fits its members on the classes' positions
    (0, 1, ...): the member is written with the labels themselves."""
    n_features = n_features_of(estimator)
    spec = linear_spec_from_sklearn(estimator)
    if spec is not None and spec.feature_names is None and reference_names and len(reference_names) == n_features:
        spec = replace(spec, feature_names=tuple(reference_names))
    if spec is not None:
        if classes is not None and spec.classes is not None:
            spec = replace(spec, classes=_relabel(spec.classes, classes))
        if dtype is not None:
            spec = replace(spec, dtype=dtype)
        artifact = vdir / "model.json"
        dump_linear_json(spec, artifact)
        backend = "native"
    else:
        if classes is not None and hasattr(estimator, "classes_"):
            estimator = _with_classes(estimator, classes)
        artifact = vdir / "model.onnx"
        artifact.write_bytes(onnx_from_sklearn(estimator, n_features, dtype or "float32"))
        backend = "onnxruntime"

    names = reference_names or (list(spec.feature_names) if spec and spec.feature_names else None)
    ref_path = _write_reference(vdir, reference, names, n_features)
    return ExportResult(artifact=artifact, reference=ref_path, backend=backend)


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


# ---------------------------------------------------------------------------
# scikit-learn ensembles → an ensemble over member models
# ---------------------------------------------------------------------------

def is_sklearn_ensemble(estimator: Any) -> bool:
    """A VotingClassifier, VotingRegressor, StackingClassifier or StackingRegressor."""
    from sklearn.ensemble import (
        StackingClassifier,
        StackingRegressor,
        VotingClassifier,
        VotingRegressor,
    )

    return isinstance(estimator, (VotingClassifier, VotingRegressor, StackingClassifier, StackingRegressor))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _relabel(encoded: tuple[object, ...], classes: tuple[object, ...]) -> tuple[object, ...]:
    """A member's classes (positions 0, 1, ... in the ensemble's classes) as labels."""
    try:
        return tuple(classes[int(c)] for c in encoded)  # type: ignore[call-overload]
    except (TypeError, ValueError, IndexError):
        raise InvalidInput("a member of the ensemble was fitted on other classes than the ensemble's") from None


def _with_classes(estimator: Any, classes: tuple[object, ...]) -> Any:
    """A copy of a fitted classifier whose ``classes_`` are the ensemble's labels
    (what skl2onnx writes into the graph)."""
    from sklearn.pipeline import Pipeline

    est = copy.deepcopy(estimator)
    target = est.steps[-1][1] if isinstance(est, Pipeline) else est
    labels = np.asarray(_relabel(tuple(target.classes_), classes))
    try:
        target.classes_ = labels
    except AttributeError:
        raise InvalidInput(f"cannot give the member {type(target).__name__} the ensemble's class labels") from None
    return est


def _member_names(name: str, names: list[str]) -> list[str]:
    """``<name>-<estimator name>`` for each member, made a valid model name, distinct."""
    from .repository import valid_model_name

    out: list[str] = []
    for i, n in enumerate(names):
        candidate = f"{name}-{re.sub(r'[^A-Za-z0-9_.-]', '_', n).replace('..', '_')}"[:120]
        if not valid_model_name(candidate) or candidate in out:
            candidate = f"{name}-{i + 1}"
        out.append(candidate)
    return out


def export_ensemble(
    estimator: Any,
    repo: str | os.PathLike[str],
    name: str,
    version: int | None = None,
    reference: np.ndarray | None = None,
    reference_names: list[str] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write a fitted scikit-learn ensemble as an ensemble model ``name`` over one
    member model per estimator (``<name>-<estimator name>``, each at its next
    version, pinned in the ensemble's model.toml).

    The members take one input dtype: float64 when every member that is not linear
    converts to ONNX in float64 (and onnxruntime runs it), else float32 for all.
    A stacking ensemble's final estimator must be linear (its ``model.json`` goes to
    the ensemble's version directory); the members feed it what scikit-learn's
    ``stack_method_`` says: ``predict_proba`` → probabilities, ``decision_function``
    → decision (linear members only: an ONNX graph states no decision),
    ``predict`` → value (regressors).
    """
    from sklearn.base import is_classifier
    from sklearn.ensemble import StackingClassifier, StackingRegressor, VotingClassifier

    n_features = n_features_of(estimator)
    names = [n for n, e in estimator.estimators if not (isinstance(e, str) and e == "drop")]
    fitted = list(estimator.estimators_)
    if len(names) != len(fitted):  # pragma: no cover - scikit-learn keeps them aligned
        raise InvalidInput("the ensemble's estimators do not match its fitted estimators")
    stacking = isinstance(estimator, (StackingClassifier, StackingRegressor))
    classes = tuple(_plain(c) for c in estimator.classes_) if is_classifier(estimator) else None
    if isinstance(estimator, VotingClassifier):
        combiner = "soft_vote" if estimator.voting == "soft" else "hard_vote"
    else:
        combiner = "stack" if stacking else "mean"
    weights = [1.0] * len(fitted)
    if not stacking and estimator.weights is not None:
        weights = [float(w) for (_, e), w in zip(estimator.estimators, estimator.weights, strict=True)
                   if not (isinstance(e, str) and e == "drop")]  # fmt: skip
    feeds = [""] * len(fitted)
    final = None
    if stacking:
        feeds = [_stack_feed(m, n) for m, n in zip(estimator.stack_method_, names, strict=True)]
        final = linear_spec_from_sklearn(estimator.final_estimator_)
        if final is None:
            raise InvalidInput(
                f"the final estimator ({type(estimator.final_estimator_).__name__}) is not linear: scorewire scores "
                "a stacking ensemble's final model with its linear kernel"
            )
        if classes is not None and final.classes is not None:
            final = replace(final, classes=_relabel(final.classes, classes))
        final = replace(final, feature_names=None, dtype="float64")
        for m, n, feed in zip(fitted, names, feeds, strict=True):
            if feed == "decision" and linear_spec_from_sklearn(m) is None:
                raise InvalidInput(
                    f"member {n!r} feeds its decision_function, which scorewire gives for linear members only"
                )

    member_dirs = [Path(repo) / n for n in _member_names(name, names)]
    linear = [linear_spec_from_sklearn(m) is not None for m in fitted]
    dtype = "float64" if all(linear) or _converts_in_float64(fitted, linear, reference) else "float32"
    results = []
    for m, model_dir in zip(fitted, member_dirs, strict=True):
        vdir = _version_dir(model_dir, None, False)
        results.append(_write_model(m, vdir, reference, reference_names, dtype, classes))

    pinned = tuple(
        EnsembleMember(d.name, int(r.artifact.parent.name), w, f)
        for d, r, w, f in zip(member_dirs, results, weights, feeds, strict=True)
    )
    config = EnsembleConfig(combiner, pinned, passthrough=bool(stacking and estimator.passthrough))
    model_dir = Path(repo) / name
    vdir = _version_dir(model_dir, version, overwrite)
    if final is not None:
        dump_linear_json(final, vdir / "model.json")
    description = f"{type(estimator).__name__} of {len(fitted)}, written by scorewire export"
    (model_dir / "model.toml").write_text(ensemble_toml(config, description), encoding="utf-8")
    ref_path = _write_reference(vdir, reference, reference_names, n_features)
    backend = _ensemble_backend(config, results, final)
    return ExportResult(model_dir / "model.toml", ref_path, backend, tuple(results))


def _stack_feed(method: str, name: str) -> str:
    """The role a member feeds the final model, from scikit-learn's ``stack_method_``."""
    feeds = {"predict_proba": "probabilities", "decision_function": "decision", "predict": "value"}
    if method not in feeds:  # pragma: no cover - scikit-learn has no other
        raise InvalidInput(f"member {name!r}: unknown stack_method {method!r}")
    return feeds[method]


def _converts_in_float64(fitted: list[Any], linear: list[bool], reference: np.ndarray | None) -> bool:
    """Whether every member that is not linear converts to ONNX with a float64 input,
    onnxruntime scores the graph, and it computes in float64: its float outputs are
    float64 (skl2onnx's tree converters either fail or, for a random forest, give
    float32 probabilities)."""
    from .backends.ort import OnnxModel
    from .formats.onnx_graph import parse_onnx

    for m, is_linear in zip(fitted, linear, strict=True):
        if is_linear:
            continue
        n = n_features_of(m)
        probe = reference[:2] if reference is not None and reference.ndim == 2 else np.zeros((1, n))
        try:
            model = OnnxModel(parse_onnx(onnx_from_sklearn(m, n, "float64")))
            model.predict(np.asarray(probe, dtype=np.float64))
        except Exception:  # skl2onnx and onnxruntime raise many kinds: any is a "no"
            return False
        if any(o.dtype == "float32" for o in model.signature.outputs):
            return False
    return True


def _ensemble_backend(config: EnsembleConfig, results: list[ExportResult], final: LinearSpec | None) -> str:
    """How the written ensemble will be served: "native" when it folds, else "ensemble"."""
    from .backends.ensemble import Member, build_ensemble
    from .backends.loader import load_model

    members = [Member(m.model, m.version or 1, load_model(r.artifact), m)
               for m, r in zip(config.members, results, strict=True)]  # fmt: skip
    return build_ensemble(config, members, final).backend


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
