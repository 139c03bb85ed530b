"""Tolerances of the parity tests, in one place.

float64: 1e-12 relative; float32: 1e-6 relative. A decision z = X @ w + b can be
much smaller than its terms (cancellation), and then any two correct summation
orders differ relative to z itself. So a decision's error is measured relative to
``max(|z|, sum|x_j w_j| + |b|)`` — the scale of the sum's own rounding error.
Probabilities near 0 get an absolute floor of 1e-15 (float64) / 1e-7 (float32):
scikit-learn computes P(class 0) as 1 - P(class 1), which has no more than that.
"""

from __future__ import annotations

import numpy as np

RTOL = {"float64": 1e-12, "float32": 1e-6}
ATOL_PROBA = {"float64": 1e-15, "float32": 1e-7}


def decision_scale(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """sum_j |x_j w_cj| + |b_c| per row and decision column."""
    return np.abs(np.asarray(X, dtype=np.float64)) @ np.abs(coef).T + np.abs(intercept)


def assert_decisions_close(got, want, scale, dtype: str) -> None:
    got = np.asarray(got, dtype=np.float64).reshape(np.shape(want))
    want = np.asarray(want, dtype=np.float64)
    scale = np.asarray(scale).reshape(want.shape) if np.size(scale) == want.size else scale
    bound = RTOL[dtype] * np.maximum(np.abs(want), scale)
    bad = np.abs(got - want) > bound
    assert not bad.any(), f"{bad.sum()} decisions differ beyond {RTOL[dtype]} relative to their scale"


def assert_proba_close(got, want, dtype: str) -> None:
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), want, rtol=RTOL[dtype], atol=ATOL_PROBA[dtype]
    )
