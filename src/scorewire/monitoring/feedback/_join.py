"""Joining ground truth to a recorded prediction: one request's rows become
per-row metric inputs (for classifiers ``correct``, ``loss``, ``p1``, ``y1``; for
regressors ``err``), or InvalidInput when the truth does not fit the prediction."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import InvalidInput
from ...evaluate import encode_labels
from ._window import Entry

#: requests of at most this many rows are joined with plain Python (cheaper than NumPy)
_SCALAR_ROWS = 16
_EPS64 = float(np.finfo(np.float64).eps)


class Joined:
    """Per-row metric inputs collected during one feedback call: Python lists for
    the rows of small requests, array chunks for large ones."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.scalars: dict[str, list[float]] = {k: [] for k in keys}
        self.chunks: dict[str, list[np.ndarray]] = {k: [] for k in keys}

    def columns(self) -> dict[str, np.ndarray]:
        return {
            k: np.concatenate([np.asarray(self.scalars[k], dtype=np.float64), *self.chunks[k]])
            for k in self.scalars
        }


class Joiner:
    """Joins truth to the predictions of one model (its task and classes).

    The metric inputs per row: ``correct`` 1.0 / 0.0 (NaN: no label to compare);
    ``loss`` −ln p(true) (NaN: no probabilities); ``p1`` P(classes[1]) and ``y1``
    true label is classes[1] (two classes only); ``err`` prediction − truth.
    """

    def __init__(self, task: str, classes: tuple[Any, ...] | None) -> None:
        self.task = task
        self.classes = classes
        self.class_index = {c: i for i, c in enumerate(classes)} if classes is not None else None
        self.keys = ("err",) if task == "regression" else ("correct", "loss", "p1", "y1")

    def batch(self) -> Joined:
        """An empty collection of joined rows, for one feedback call."""
        return Joined(self.keys)

    def add(self, entry: Entry, truth: Any, joined: Joined) -> None:
        """Add one request's per-row metric inputs to ``joined``; InvalidInput (and
        nothing added) when the truth does not fit the prediction."""
        _, n, label, proba, value = entry
        if self.task == "regression":
            v = np.asarray(value, dtype=np.float64).reshape(-1)
            try:
                t = np.asarray(truth, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise InvalidInput("true values must be numbers") from None
            if t.size != v.size:
                per_row = v.size // n
                raise InvalidInput(f"{t.size} true values for a request of {n} rows" + (f" × {per_row} targets" if per_row > 1 else ""))
            if not np.isfinite(t).all():
                raise InvalidInput("true values must be finite")
            joined.chunks["err"].append(v - t)
            return
        truths = _flat_list(truth)
        if len(truths) != n:
            raise InvalidInput(f"{len(truths)} true labels for a request of {n} rows")
        index = self.class_index
        if index is None:  # labels unknown: accuracy by comparing labels only
            correct = [1.0 if _same_label(a, b) else 0.0 for a, b in zip(label.tolist(), truths, strict=True)] if label is not None else [math.nan] * n
            for key, values in (("correct", correct), ("loss", [math.nan] * n), ("p1", [math.nan] * n), ("y1", [math.nan] * n)):
                joined.scalars[key].extend(values)
            return
        idx = [_class_of(index, v) for v in truths]
        if None in idx:
            bad = truths[idx.index(None)]
            raise InvalidInput(f"label {str(bad)[:64]!r} is not one of the model's classes")
        k = len(index)
        p = proba if proba is not None and proba.ndim == 2 and proba.shape[1] == k else None
        if n > _SCALAR_ROWS:
            self._add_arrays(np.asarray(idx, dtype=np.intp), label, p, joined)
            return
        rows = p.tolist() if p is not None else None
        if label is not None:
            correct = [1.0 if index.get(a) == i else 0.0 for a, i in zip(label.tolist(), idx, strict=True)]
        elif rows is not None:
            # the first maximum, as the kernel's label rule (_label_row in ext/_kernel.pyx)
            correct = [1.0 if r.index(max(r)) == i else 0.0 for r, i in zip(rows, idx, strict=True)]
        else:
            correct = [math.nan] * n
        joined.scalars["correct"].extend(correct)
        if rows is None:
            for key in ("loss", "p1", "y1"):
                joined.scalars[key].extend([math.nan] * n)
            return
        assert p is not None
        eps = float(np.finfo(p.dtype).eps) if p.dtype.kind == "f" else _EPS64
        joined.scalars["loss"].extend(-math.log(min(max(r[i], eps), 1.0 - eps)) for r, i in zip(rows, idx, strict=True))
        if k == 2:
            joined.scalars["p1"].extend(r[1] for r in rows)
            joined.scalars["y1"].extend(float(i == 1) for i in idx)
        else:
            joined.scalars["p1"].extend([math.nan] * n)
            joined.scalars["y1"].extend([math.nan] * n)

    def _add_arrays(self, idx: np.ndarray, label: Any, p: np.ndarray | None, joined: Joined) -> None:
        """The vectorised :meth:`add` of a large request's rows."""
        assert self.classes is not None
        n = idx.size
        nan = np.full(n, np.nan)
        if label is not None:
            correct = (encode_labels(label, self.classes) == idx).astype(np.float64)
        elif p is not None:
            correct = (p.argmax(axis=1) == idx).astype(np.float64)  # the first maximum, as in add
        else:
            correct = nan
        chunks = joined.chunks
        chunks["correct"].append(correct)
        if p is None:
            for key in ("loss", "p1", "y1"):
                chunks[key].append(nan)
            return
        eps = np.finfo(p.dtype).eps if p.dtype.kind == "f" else _EPS64
        chunks["loss"].append(-np.log(np.clip(p[np.arange(n), idx], eps, 1 - eps).astype(np.float64)))
        two = p.shape[1] == 2
        chunks["p1"].append(p[:, 1].astype(np.float64) if two else nan)
        chunks["y1"].append((idx == 1).astype(np.float64) if two else nan)


def _flat_list(truth: Any) -> list[Any]:
    """The truth of one request as a flat list of Python values."""
    if isinstance(truth, np.ndarray):
        return truth.reshape(-1).tolist()
    if isinstance(truth, (list, tuple)):
        return [v.item() if isinstance(v, np.generic) else v for v in truth]
    return [truth.item() if isinstance(truth, np.generic) else truth]


def _class_of(index: dict[Any, int], v: Any) -> int | None:
    """The class index of one true label; numbers by value, numeric text as its number."""
    i = index.get(v)
    if i is None and isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        i = index.get(int(f) if f.is_integer() else f)
    if i is None and isinstance(v, float) and not isinstance(v, bool) and math.isnan(v):
        return None
    return i


def _same_label(a: Any, b: Any) -> bool:
    return bool(a == b) or str(a) == str(b)
