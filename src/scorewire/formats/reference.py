"""``reference.json``: the reference feature statistics a model version's served
inputs are compared with (drift), read and written here.

One entry per feature: moments, inner quantile ``bin_edges`` (strictly increasing)
and the share of reference rows in each of the ``len(edges) + 1`` bins, where a
value v falls in bin ``searchsorted(edges, v, side="right")`` — the number of edges
≤ v. :func:`reference_statistics` writes it (``scorewire export
--reference-data``); :meth:`Reference.load` reads it, and a malformed file is a
ModelLoadError naming it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from .files import DEFAULT, ModelFiles, quoted

#: the ``format`` of a reference.json
REFERENCE_FORMAT = "scorewire.reference"
REFERENCE_FILE = "reference.json"
#: quantile bins per feature in reference statistics
REFERENCE_BINS = 10
#: the most bin edges a feature may have in a reference.json read (scorewire writes
#: REFERENCE_BINS - 1; the drift monitor pads every feature to the widest one)
MAX_BIN_EDGES = 255

_FEATURE_KEYS = {"name", "count", "mean", "std", "min", "max", "bin_edges", "bin_fractions"}
_TOP_KEYS = {"format", "format_version", "n_rows", "features"}


def reference_statistics(X: np.ndarray, feature_names: list[str] | None = None) -> dict[str, Any]:
    """Per-feature statistics of training-like data: moments and quantile bins.

    ``bin_edges`` are the inner quantile edges (at most REFERENCE_BINS - 1, unique);
    ``bin_fractions`` the share of rows in each of the len(edges) + 1 bins, where a
    value v falls in bin ``searchsorted(edges, v, side="right")``.
    """
    X = np.asarray(X, dtype=np.float64)
    features = []
    for j in range(X.shape[1]):
        col = X[:, j]
        col = col[np.isfinite(col)]
        qs = np.quantile(col, np.linspace(0, 1, REFERENCE_BINS + 1)[1:-1]) if col.size else np.array([])
        edges = np.unique(qs)
        counts = np.bincount(np.searchsorted(edges, col, side="right"), minlength=edges.size + 1)
        features.append(
            {
                "name": feature_names[j] if feature_names else f"f{j}",
                "count": int(col.size),
                "mean": float(col.mean()) if col.size else 0.0,
                "std": float(col.std()) if col.size else 0.0,
                "min": float(col.min()) if col.size else 0.0,
                "max": float(col.max()) if col.size else 0.0,
                "bin_edges": edges.tolist(),
                "bin_fractions": (counts / max(col.size, 1)).tolist(),
            }
        )
    return {"format": REFERENCE_FORMAT, "format_version": 1, "n_rows": int(X.shape[0]), "features": features}


@dataclass(frozen=True)
class FeatureReference:
    """One feature's reference bins, and its mean when the file states it."""

    name: str
    edges: np.ndarray  # inner bin edges, strictly increasing
    fractions: np.ndarray  # len(edges) + 1 shares (all zero: the reference had no finite value)
    mean: float | None = None


@dataclass(frozen=True)
class Reference:
    """The per-feature reference bins of one model version."""

    features: tuple[FeatureReference, ...]
    n_rows: int = 0

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def means(self) -> np.ndarray | None:
        """The features' means, float64 (d,): the baseline of a model's explanations;
        None unless the file states every feature's mean."""
        if any(f.mean is None for f in self.features):
            return None
        return np.asarray([f.mean for f in self.features], dtype=np.float64)

    @classmethod
    def from_dict(cls, doc: Any, source: str = REFERENCE_FILE, n_features: int | None = None) -> Reference:
        """Validate a parsed reference.json; ModelLoadError naming ``source`` if it is malformed."""

        def bad(msg: str) -> ModelLoadError:
            return ModelLoadError(f"{source}: {msg}")

        if not isinstance(doc, dict):
            raise bad("expected a JSON object")
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            raise bad(f"unknown field {quoted(sorted(unknown)[0])}")
        if doc.get("format") != REFERENCE_FORMAT:
            raise bad(f"format must be {REFERENCE_FORMAT!r}")
        if doc.get("format_version") != 1 or isinstance(doc.get("format_version"), bool):
            raise bad("unsupported format_version (this scorewire reads 1)")
        n_rows = doc.get("n_rows", 0)
        if not _is_int(n_rows) or n_rows < 0:
            raise bad("n_rows must be a non-negative integer")
        raw = doc.get("features")
        if not isinstance(raw, list) or not raw:
            raise bad("features must be a non-empty list")
        if n_features is not None and len(raw) != n_features:
            raise bad(f"{len(raw)} features, the model takes {n_features}")
        features = []
        for j, f in enumerate(raw):
            where = f"feature {j}"
            if not isinstance(f, dict):
                raise bad(f"{where}: expected an object")
            unknown = set(f) - _FEATURE_KEYS
            if unknown:
                raise bad(f"{where}: unknown field {quoted(sorted(unknown)[0])}")
            name = f.get("name", f"f{j}")
            if not isinstance(name, str):
                raise bad(f"{where}: name must be a string")
            for key in ("count", "mean", "std", "min", "max"):
                if key in f and not _is_number(f[key]):
                    raise bad(f"{where}: {key} must be a finite number")
            if isinstance(f.get("bin_edges"), list) and len(f["bin_edges"]) > MAX_BIN_EDGES:
                raise bad(f"{where}: {len(f['bin_edges'])} bin_edges, over the limit of {MAX_BIN_EDGES}")
            edges = _number_list(f.get("bin_edges"), bad, f"{where}: bin_edges")
            fractions = _number_list(f.get("bin_fractions"), bad, f"{where}: bin_fractions")
            if edges.size and not np.all(np.diff(edges) > 0):
                raise bad(f"{where}: bin_edges must be strictly increasing")
            if fractions.size != edges.size + 1:
                raise bad(f"{where}: {fractions.size} bin_fractions for {edges.size} bin_edges (expected one more)")
            total = float(fractions.sum())
            if np.any(fractions < 0) or not (total == 0.0 or abs(total - 1.0) <= 1e-6):
                raise bad(f"{where}: bin_fractions must be non-negative and sum to 1")
            mean = float(f["mean"]) if "mean" in f else None
            features.append(FeatureReference(name, edges, fractions, mean))
        return cls(tuple(features), int(n_rows))

    @classmethod
    def parse(cls, data: bytes | str, source: str = REFERENCE_FILE, n_features: int | None = None) -> Reference:
        """A reference.json document; ModelLoadError naming ``source`` if it is malformed."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise ModelLoadError(f"{source}: not valid JSON ({str(exc)[:120]})") from None
        return cls.from_dict(doc, source, n_features)

    @classmethod
    def load(cls, path: str | Path, n_features: int | None = None, files: ModelFiles = DEFAULT) -> Reference | None:
        """Read ``path`` (a reference.json, or a version directory holding one; see
        :class:`~scorewire.formats.files.ModelFiles`); None when there is none."""
        p = Path(path)
        if p.is_dir():
            p = p / REFERENCE_FILE
        data = files.read(p, missing_ok=True)
        return None if data is None else cls.parse(data, str(p), n_features)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite JSON number that float64 holds (an integer past its range is not)."""
    if isinstance(v, float):
        return math.isfinite(v)
    return _is_int(v) and -sys.float_info.max <= v <= sys.float_info.max


def _number_list(v: Any, bad: Callable[[str], ModelLoadError], what: str) -> np.ndarray:
    if not isinstance(v, list) or not all(_is_number(x) for x in v):
        raise bad(f"{what} must be a list of finite numbers")
    return np.asarray(v, dtype=np.float64)
