"""Tolerances of the parity tests, and how labels are compared, in one place.

float64: 1e-12 relative; float32: 1e-6 relative. A decision z = X @ w + b can be
much smaller than its terms (cancellation), and then any two correct summation
orders differ relative to z itself. So a decision's error is measured relative to
``max(|z|, sum|x_j w_j| + |b|)`` — the scale of the sum's own rounding error.
Probabilities near 0 get an absolute floor of 1e-15 (float64) / 1e-7 (float32):
scikit-learn computes P(class 0) as 1 - P(class 1), which has no more than that.

Labels. Two correct implementations may round a decision differently, so where the
two best decisions of a row are within their rounding of each other (one decision
column: z within its rounding of 0) either label is right, and which one a machine
gives depends on its SIMD width or BLAS kernel. :func:`assert_labels_equal` compares
labels only on rows whose predicted class no error within the bound can change, and
fails when those are not most of the rows (then the data does not test labels).
Exact ties are a rule, not rounding: :func:`exact_ties` builds them, in small
integers that every summation order adds exactly.
"""

from __future__ import annotations

import numpy as np

RTOL = {"float64": 1e-12, "float32": 1e-6}
ATOL_PROBA = {"float64": 1e-15, "float32": 1e-7}


def decision_scale(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """sum_j |x_j w_cj| + |b_c| per row and decision column."""
    return np.abs(np.asarray(X, dtype=np.float64)) @ np.abs(coef).T + np.abs(intercept)


def decision_bound(want, scale, dtype: str) -> np.ndarray:
    """How far a correct decision may be from ``want``: RTOL[dtype] of its scale."""
    want = np.asarray(want, dtype=np.float64)
    scale = np.asarray(scale).reshape(want.shape) if np.size(scale) == want.size else scale
    return RTOL[dtype] * np.maximum(np.abs(want), scale)


def assert_decisions_close(got, want, scale, dtype: str) -> None:
    got = np.asarray(got, dtype=np.float64).reshape(np.shape(want))
    want = np.asarray(want, dtype=np.float64)
    bad = np.abs(got - want) > decision_bound(want, scale, dtype)
    assert not bad.any(), f"{bad.sum()} decisions differ beyond {RTOL[dtype]} relative to their scale"


def assert_proba_close(got, want, dtype: str) -> None:
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), want, rtol=RTOL[dtype], atol=ATOL_PROBA[dtype]
    )


def decided_rows(decisions, bound) -> np.ndarray:
    """Rows whose predicted class no error within ``bound`` can change.

    ``decisions`` (n, k) or (n,): one decision column is decided when ``|z| > bound``
    (the label is ``z > 0``); k columns when the best one, lowered by its bound, is
    still above every other one raised by its bound. ``bound`` broadcasts to the
    decisions' shape. A row with an exact tie is never decided.
    """
    z = np.asarray(decisions, dtype=np.float64)
    z = z[:, None] if z.ndim == 1 else z
    bound = np.asarray(bound, dtype=np.float64)
    bound = bound.reshape(z.shape) if bound.size == z.size else np.broadcast_to(bound, z.shape)
    if z.shape[1] == 1:
        return np.abs(z[:, 0]) > bound[:, 0]
    rows = np.arange(len(z))
    best = z.argmax(axis=1)
    low = z[rows, best] - bound[rows, best]
    high = z + bound
    high[rows, best] = -np.inf
    return low > high.max(axis=1)


def assert_labels_equal(got, want, decisions, bound, *, min_decided: float = 0.5) -> None:
    """``got`` and ``want`` labels equal on every decided row (:func:`decided_rows`).

    Rows within rounding of a tie are left out: two correct implementations may
    disagree there. At least ``min_decided`` of the rows must be decided, else the
    comparison would test nothing.
    """
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    decided = decided_rows(decisions, bound)
    assert decided.shape == got.shape, (decided.shape, got.shape)
    if got.size:
        assert decided.mean() >= min_decided, (
            f"only {decided.sum()} of {got.size} rows are decided beyond the bound: "
            "the data does not test labels"
        )
    np.testing.assert_array_equal(got[decided], want[decided])


def first_maximum(z) -> np.ndarray:
    """The tie rule, spelt out row by row: the index of the first maximum of each row
    of z (n, k), or ``int(z > 0)`` for one column (n, 1). As scikit-learn's
    ``LinearClassifierMixin.predict`` and the kernel; written without numpy.argmax so
    that it checks rather than repeats it."""
    out = []
    z = np.asarray(z)
    for row in (z[:, None] if z.ndim == 1 else z).tolist():
        if len(row) == 1:
            out.append(1 if row[0] > 0 else 0)
        else:
            out.append(row.index(max(row)))
    return np.asarray(out, dtype=np.int64)


def exact_ties(k: int, d: int, rng: np.random.Generator, per_pattern: int = 2):
    """(coef (k, d), intercept (k,), X (n, d)) in small integers, so that every
    decision is exact in float32 and float64 in any summation order (with or without
    FMA), and rows with every kind of tie at the top. Needs d >= k.

    One decision column (k == 1): rows with z == 0, z > 0 and z < 0. k columns: for
    every set of two or more columns, rows where exactly those share the maximum, and
    rows with one maximum; ``per_pattern`` rows of each.

    Built, not searched for: k of the features (in random places) enter one decision
    each with weight +-1, the others every decision with random weights; a row's other
    features are drawn, and those k are then solved for the decisions wanted.
    """
    from itertools import combinations

    assert d >= k
    free = rng.integers(-3, 4, size=(k, d - k))
    sign = rng.choice([-1, 1], size=k)
    intercept = rng.integers(-2, 3, size=k)
    if k == 1:
        patterns = [np.array([True])] * 3  # z = 0, then z > 0, z < 0 below
    else:
        patterns = [np.eye(k, dtype=bool)[c] for c in range(k)]
        patterns += [np.isin(np.arange(k), cols) for n in range(2, k + 1) for cols in combinations(range(k), n)]
    rows = []
    for p, top in enumerate(patterns):
        for _ in range(per_pattern):
            if k == 1:
                z = np.array([(0, 1, -1)[p] * int(rng.integers(1, 5) if p else 0)])
            else:
                m = int(rng.integers(-4, 5))
                z = np.where(top, m, m - rng.integers(1, 4, size=k))
            r = rng.integers(-2, 3, size=d - k)
            t = sign * (z - free @ r - intercept)  # z = sign * t + free @ r + intercept
            rows.append(np.concatenate([t, r]))
    perm = rng.permutation(d)  # the +-1 features anywhere among the others
    coef = np.concatenate([np.diag(sign), free], axis=1)[:, perm]
    X = np.array(rows)[:, perm]
    z = X @ coef.T + intercept  # in integers: exact
    if k > 1:  # the construction's check: each row's maximum is shared as planned
        assert np.array_equal(z == z.max(axis=1, keepdims=True), np.repeat(patterns, per_pattern, axis=0))
    return coef.astype(np.float64), intercept.astype(np.float64), X.astype(np.float64)
