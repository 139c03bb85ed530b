"""The rolling quality metrics: a ring of the last ``window_rows`` joined rows,
and the metrics over it (computed when asked, cached until new rows arrive)."""

from __future__ import annotations

import math

import numpy as np

from ...evaluate import binary_roc_auc


class QualityRing:
    """The last ``window_rows`` joined rows, one array per metric input (``keys``)."""

    def __init__(self, task: str, keys: tuple[str, ...], window_rows: int) -> None:
        self.task = task
        self._ring = {k: np.full(window_rows, np.nan) for k in keys}
        self._pos = 0
        #: slots in use (the ring fills from slot 0)
        self.filled = 0
        self._quality: dict[str, float] | None = None  # cached until the ring changes

    def append(self, columns: dict[str, np.ndarray]) -> None:
        """Write joined rows into the ring, the oldest leaving first."""
        m = next(iter(columns.values())).shape[0]
        if m == 0:
            return
        w = next(iter(self._ring.values())).shape[0]
        skip = max(0, m - w)  # more rows than the ring holds: keep the last ones
        idx = (self._pos + np.arange(m - skip)) % w
        for key, ring in self._ring.items():
            ring[idx] = columns[key][skip:]
        self._pos = int((self._pos + m - skip) % w)
        self.filled = min(w, self.filled + m - skip)
        self._quality = None

    def quality(self) -> dict[str, float]:
        """accuracy, log_loss, roc_auc (classifiers) or rmse, mae (regressors)."""
        if self._quality is None:
            self._quality = self._compute()
        return self._quality

    def _compute(self) -> dict[str, float]:
        n = self.filled
        ring = {k: a[:n] for k, a in self._ring.items()}
        if self.task == "regression":
            err = ring["err"]
            return {
                "rmse": float(np.sqrt(np.mean(err**2))) if n else math.nan,
                "mae": float(np.mean(np.abs(err))) if n else math.nan,
            }
        p1 = ring["p1"]
        has_p1 = ~np.isnan(p1)
        return {
            "accuracy": _mean_defined(ring["correct"]),
            "log_loss": _mean_defined(ring["loss"]),
            "roc_auc": binary_roc_auc(ring["y1"][has_p1] == 1.0, p1[has_p1]) if has_p1.any() else math.nan,
        }


def _mean_defined(a: np.ndarray) -> float:
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan
