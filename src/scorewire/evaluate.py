"""Evaluation metrics in NumPy: what ``scorewire evaluate`` prints, and what the
rolling feedback metrics (:mod:`scorewire.monitoring.feedback`) are made of.

scikit-learn is not a runtime dependency of scorewire, so these are written
here; the tests hold each to ``sklearn.metrics`` on real data:

=====================  ====================================================
accuracy               share of rows whose predicted label is the true one
ROC AUC                binary: on P(classes[1]) — the Mann–Whitney statistic,
                       ties counting one half (equal to the area under the
                       ROC curve); multiclass: one-vs-rest, macro average
log-loss               mean −ln p(true class), p clipped to [ε, 1 − ε] with ε
                       the machine epsilon of the probabilities' dtype
confusion matrix       rows: true label, columns: predicted label
RMSE, MAE, R²          R² = 1 − SS_res / SS_tot (1 for a perfect fit of a
                       constant target, else 0 when SS_tot is 0); several
                       targets: the mean over targets
=====================  ====================================================

:func:`reference_parity` compares served outputs with the scikit-learn
estimator's own predictions (the deployment parity check); it calls the
estimator, so it needs scikit-learn, which is the caller's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInput

# ---------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------

def encode_labels(y: Any, classes: Sequence[Any]) -> np.ndarray:
    """The index of each label of ``y`` in ``classes``; InvalidInput naming the
    first label that is not a class.

    Numbers compare by value (a CSV's ``1.0`` is class ``1``), strings by text.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.reshape(-1)
    values = list(classes)
    numeric = all(isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool) for c in values)
    if numeric and y.dtype.kind in "iuf" and values:
        cls = np.asarray(values, dtype=np.float64)
        order = np.argsort(cls, kind="stable")
        sorted_cls = cls[order]
        pos = np.clip(np.searchsorted(sorted_cls, y), 0, len(values) - 1)
        found = sorted_cls[pos] == y
        if not found.all():
            raise InvalidInput(f"label {_show(y[~found][0])} is not one of the model's classes {values[:20]}")
        return order[pos].astype(np.intp)
    index = {c: i for i, c in enumerate(values)}
    out = np.empty(y.shape[0], dtype=np.intp)
    for i, v in enumerate(y.tolist()):
        j = index.get(v)
        if j is None and isinstance(v, str):
            j = index.get(parse_number(v))
        if j is None:
            raise InvalidInput(f"label {_show(v)} is not one of the model's classes {values[:20]}")
        out[i] = j
    return out


def parse_number(text: str) -> object:
    """A label given as text, as the number it spells (int when whole); None if it is not one."""
    try:
        f = float(text)
    except ValueError:
        return None
    return int(f) if f.is_integer() else f


def _show(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return repr(v.item() if isinstance(v, np.generic) else v)[:64]


# ---------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------

def accuracy(y_true: Any, y_pred: Any) -> float:
    """The share of equal labels (NaN for no rows)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    _same_length(t, p)
    return float(np.mean(t == p)) if t.size else math.nan


def confusion_matrix(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> tuple[tuple[Any, ...], np.ndarray]:
    """``(labels, counts)``: counts[i, j] rows of true label i predicted as j.

    ``labels`` defaults to the sorted labels found in either array.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    _same_length(t, p)
    if labels is None:
        labels = tuple(np.unique(np.concatenate([t.reshape(-1), p.reshape(-1)])).tolist())
    labels = tuple(labels)
    k = len(labels)
    ti, pi = encode_labels(t, labels), encode_labels(p, labels)
    counts = np.bincount(ti * k + pi, minlength=k * k).reshape(k, k)
    return labels, counts.astype(np.int64)


def binary_roc_auc(positive: Any, score: Any) -> float:
    """ROC AUC of scores for a boolean target; NaN unless both classes occur.

    The Mann–Whitney U statistic over average ranks (a tie between a positive
    and a negative counts one half), which is the trapezoidal area under the
    ROC curve.
    """
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    _same_length(pos, s)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # average rank (1-based) of each distinct score: ties share the mean of their ranks
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    avg_rank = upper - (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse][pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_auc(y_true: Any, proba: Any, classes: Sequence[Any]) -> float:
    """ROC AUC: binary on P(classes[1]), multiclass one-vs-rest macro average.

    ``proba`` is (rows, len(classes)), or (rows,) with P(classes[1]) for two
    classes. In the multiclass case a class absent from ``y_true`` (whose AUC is
    undefined) is left out of the average; NaN when no class has one.
    """
    idx = encode_labels(y_true, classes)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 2 and len(classes) == 2):
        return binary_roc_auc(idx == 1, p if p.ndim == 1 else p[:, 1])
    _check_proba(p, idx, classes)
    per_class = [binary_roc_auc(idx == c, p[:, c]) for c in range(p.shape[1])]
    defined = [a for a in per_class if not math.isnan(a)]
    return float(np.mean(defined)) if defined else math.nan


def log_loss(y_true: Any, proba: Any, classes: Sequence[Any]) -> float:
    """Mean −ln p(true class), probabilities clipped to [ε, 1 − ε] (ε of their dtype)."""
    idx = encode_labels(y_true, classes)
    p = np.asarray(proba)
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    if p.ndim == 1:
        p = np.column_stack([1 - p, p])
    _check_proba(p, idx, classes)
    if not idx.size:
        return math.nan
    eps = np.finfo(p.dtype).eps
    chosen = np.clip(p[np.arange(idx.size), idx], eps, 1 - eps)
    return float(-np.mean(np.log(chosen.astype(np.float64))))


def _check_proba(p: np.ndarray, idx: np.ndarray, classes: Sequence[Any]) -> None:
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise InvalidInput(f"probabilities have shape {p.shape}, expected (rows, {len(classes)})")
    _same_length(idx, p)


# ---------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------

def _errors(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim == 1 and p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if t.shape != p.shape:
        raise InvalidInput(f"{t.shape[0] if t.ndim else 0} true values of shape {t.shape} "
                           f"for predictions of shape {p.shape}")  # fmt: skip
    t2 = t.reshape(t.shape[0], -1) if t.ndim else t.reshape(1, 1)
    return t2, p.reshape(t2.shape)


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error (several targets: the mean of their RMSEs)."""
    t, p = _errors(y_true, y_pred)
    return float(np.mean(np.sqrt(np.mean((p - t) ** 2, axis=0)))) if t.size else math.nan


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error (several targets: the mean of their MAEs)."""
    t, p = _errors(y_true, y_pred)
    return float(np.mean(np.abs(p - t))) if t.size else math.nan


def r2(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination (several targets: the mean of their R²)."""
    t, p = _errors(y_true, y_pred)
    if not t.size:
        return math.nan
    ss_res = np.sum((t - p) ** 2, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(scores))


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[:1] != b.shape[:1]:
        raise InvalidInput(f"{a.shape[0] if a.ndim else 1} true values for {b.shape[0] if b.ndim else 1} predictions")


# ---------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassificationReport:
    """What ``scorewire evaluate`` prints for a classifier."""

    rows: int
    accuracy: float
    roc_auc: float  # NaN without probabilities, or with a single class in the data
    log_loss: float  # NaN without probabilities
    labels: tuple[Any, ...]
    confusion: np.ndarray  # rows: true label, columns: predicted


@dataclass(frozen=True)
class RegressionReport:
    """What ``scorewire evaluate`` prints for a regressor."""

    rows: int
    rmse: float
    mae: float
    r2: float


def classification_report(
    y_true: Any, y_pred: Any, classes: Sequence[Any], proba: Any | None = None
) -> ClassificationReport:
    """Accuracy, confusion matrix and, with probabilities, ROC AUC and log-loss."""
    classes = tuple(classes)
    ti = encode_labels(y_true, classes)
    pi = encode_labels(y_pred, classes)
    _same_length(ti, pi)
    k = len(classes)
    confusion = np.bincount(ti * k + pi, minlength=k * k).reshape(k, k).astype(np.int64)
    auc = ll = math.nan
    if proba is not None:
        auc = roc_auc(y_true, proba, classes)
        ll = log_loss(y_true, proba, classes)
    return ClassificationReport(
        rows=int(ti.size),
        accuracy=float(np.mean(ti == pi)) if ti.size else math.nan,
        roc_auc=auc,
        log_loss=ll,
        labels=classes,
        confusion=confusion,
    )


def regression_report(y_true: Any, y_pred: Any) -> RegressionReport:
    """RMSE, MAE and R²."""
    t, _ = _errors(y_true, y_pred)
    return RegressionReport(rows=int(t.shape[0]), rmse=rmse(y_true, y_pred), mae=mae(y_true, y_pred), r2=r2(y_true, y_pred))


def format_report(report: ClassificationReport | RegressionReport) -> str:
    """The report as aligned text, as ``scorewire evaluate`` prints it."""
    lines = [f"rows       {report.rows}"]
    if isinstance(report, RegressionReport):
        lines += [f"RMSE       {_num(report.rmse)}", f"MAE        {_num(report.mae)}", f"R²         {_num(report.r2)}"]
        return "\n".join(lines)
    lines += [
        f"accuracy   {_num(report.accuracy)}",
        f"ROC AUC    {_num(report.roc_auc)}",
        f"log-loss   {_num(report.log_loss)}",
        "confusion matrix (rows: true label, columns: predicted label)",
    ]
    names = [str(lab) for lab in report.labels]
    width = max([len(n) for n in names] + [len(str(int(report.confusion.max(initial=0))))]) + 2
    pad = max(len(n) for n in names) if names else 0
    lines.append(" " * pad + "".join(n.rjust(width) for n in names))
    for name, row in zip(names, report.confusion, strict=True):
        lines.append(name.rjust(pad) + "".join(str(int(c)).rjust(width) for c in row))
    return "\n".join(lines)


def _num(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.6g}"


# ---------------------------------------------------------------------------
# the deployment parity check
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ParityReport:
    """How far the served outputs are from the scikit-learn estimator's own."""

    compared: str  # "probabilities" or "value"
    rows: int
    max_abs_diff: float
    label_mismatches: int | None = None  # classifiers with a label output

    def format(self) -> str:
        text = f"parity with the reference estimator: max |Δ {self.compared}| = {self.max_abs_diff:.3g} over {self.rows} rows"
        if self.label_mismatches is not None:
            text += f", {self.label_mismatches} label(s) differ"
        return text


def reference_parity(
    estimator: Any,
    X: np.ndarray,
    *,
    probabilities: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    values: np.ndarray | None = None,
) -> ParityReport:
    """Compare served outputs with ``estimator``'s predictions on the same rows.

    Classifiers: ``probabilities`` against ``predict_proba`` (or, without them,
    ``labels`` against ``predict`` only); regressors: ``values`` against
    ``predict``, given the rows as a float64 array.
    """
    X_in = np.asarray(X, dtype=np.float64)
    mismatches = None
    if labels is not None:
        expected_labels = _predict(estimator, "predict", X_in)
        mismatches = _count_different(expected_labels, np.asarray(labels))
    if probabilities is not None:
        expected = _predict(estimator, "predict_proba", X_in).astype(np.float64)
        got = np.asarray(probabilities, dtype=np.float64)
        compared = "probabilities"
    elif values is not None:
        expected = _predict(estimator, "predict", X_in).astype(np.float64)
        got = np.asarray(values, dtype=np.float64)
        compared = "value"
    elif mismatches is not None:
        return ParityReport("label", int(X.shape[0]), math.nan, mismatches)
    else:
        raise InvalidInput("nothing to compare: give probabilities, labels or values")
    if got.shape != expected.shape:
        got = got.reshape(expected.shape) if got.size == expected.size else got
    if got.shape != expected.shape:
        raise InvalidInput(f"served {compared} have shape {got.shape}, the estimator gives {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    return ParityReport(compared, int(X.shape[0]), diff, mismatches)


def _count_different(a: np.ndarray, b: np.ndarray) -> int:
    """Labels that differ: numbers by value, anything else by text."""
    if a.dtype.kind in "iuf" and b.dtype.kind in "iuf":
        return int(np.sum(a.astype(np.float64) != b.astype(np.float64)))
    return int(np.sum(a.astype(str) != b.astype(str)))


def _predict(estimator: Any, method: str, X: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        # fitted on a DataFrame, given an array of the same columns: harmless here
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return np.asarray(getattr(estimator, method)(X))
