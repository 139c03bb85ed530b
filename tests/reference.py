"""A pure-NumPy reference scorer for :class:`~scorewire.formats.linear_spec.LinearSpec`.

Slow and obvious on purpose: the parity tests hold the compiled kernel to it, and
it documents the arithmetic each link performs.
"""

from __future__ import annotations

import numpy as np

from scorewire.formats.linear_spec import LinearSpec, classes_array


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only: no overflow for any finite z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def reference_scores(spec: LinearSpec, X: np.ndarray) -> dict[str, np.ndarray]:
    """Decision, link output and labels for X, by role name, in float64."""
    X = np.asarray(X, dtype=np.float64)
    # z = X @ coef.T + intercept
    z = X @ spec.coef.T + spec.intercept
    if spec.link == "identity":
        p = z
    elif spec.link == "logistic":
        p = np.column_stack([_sigmoid(-z[:, 0]), _sigmoid(z[:, 0])])
    elif spec.link == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    elif spec.link == "sigmoid":
        p = _sigmoid(z)
    elif spec.link == "ovr":
        p = _sigmoid(z)
        p = p / p.sum(axis=1, keepdims=True)
    else:  # pragma: no cover - LinearSpec.validate rejects it
        raise ValueError(spec.link)
    out = {"decision": z, "value": z, "probabilities": p}
    if spec.task == "classification":
        # the kernel's label rule (_label_row in ext/_kernel.pyx)
        idx = (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(axis=1)
        out["label"] = classes_array(spec.classes)[idx]
    return out
