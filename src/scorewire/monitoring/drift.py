"""Input drift: per-feature PSI of the rows a model version serves, against the
reference statistics ``scorewire export --reference-data`` wrote to
``<version>/reference.json``.

The reference
    One entry per feature: inner quantile ``bin_edges`` (strictly increasing) and
    the share of reference rows in each of the ``len(edges) + 1`` bins, where a value
    v falls in bin ``searchsorted(edges, v, side="right")`` — the number of edges
    ≤ v (see :func:`scorewire.reference_statistics`). A missing file means no drift
    monitoring for that version; a malformed one is a :class:`ModelLoadError`
    naming the file.

Sampling (why ``observe`` is cheap)
    Every served row is *included* with probability 1/k, where k is the current
    sampling period, and counted with weight k — a Horvitz–Thompson estimate of
    the served histogram whatever the mix of request sizes:

    * a request of n < k rows is skipped unless ``random() * k < n``
      (probability n/k); when taken, one of its rows (chosen at random) is copied
      into a small stash, binned with the next 63 such rows (or when a snapshot
      is taken) — later, through the monitor's ``defer`` function when it has one.
      The skip is one C-level ``random()`` and a comparison.
    * a request of n ≥ k rows is always taken: every s-th row from a random start,
      s = max(k, ceil(n / max_rows_per_call)), each counted with weight s — so
      one huge request bins at most ``max_rows_per_call`` rows. Up to 16 such
      rows go to the stash too.

    k adapts to the traffic: at each bucket change it becomes the previous
    bucket's estimated row count divided by ``target_samples_per_bucket`` T
    (clamped to [min_sample_every, max_sample_every]), and it doubles within a
    bucket that has binned 2T rows, again at 3T, 3.5T, 3.75T, … So a bucket bins
    fewer than about 4T rows whatever the request rate, a quiet model still
    collects enough rows, and ``min_sample_every`` bounds the amortised cost of a
    one-row request. Buckets also change on :meth:`DriftMonitor.snapshot` (a
    metrics scrape), so k comes down after a busy spell even if no row is sampled.

Binning
    Vectorised: the bin of v in column j is the number of edges[j] ≤ v, the
    reference's ``searchsorted(side="right")``, computed for a whole (rows ×
    features) block in one comparison pass per edge rank against the edges padded
    to a common count with +inf (≤ 9 passes for decile bins). The block's per-bin
    counts are one ``bincount`` over feature-offset bin ids. Non-finite values (a
    model with ``nan_policy = "allow"``) are left out, as they are from the
    reference. A float32 model's inputs are compared with float32-rounded edges,
    so a value equal to an edge stays equal to it.

The rolling window
    A ring of ``n_buckets`` time buckets of ``window_s / n_buckets`` seconds each
    (monotonic clock). A sample is added to the current bucket; a bucket older
    than the window is ignored by :meth:`DriftMonitor.snapshot` and cleared when
    its slot is reused, so old traffic ages out even when no new traffic comes.

PSI
    For one feature with reference bin shares e_i and served shares a_i::

        PSI = Σ_i (a_i − e_i) · ln(a_i / e_i),    a_i, e_i clipped below at ε = 1e-4

    (ε keeps an empty bin from making a term infinite). Conventionally PSI < 0.1
    is no significant change, 0.1–0.2 a moderate shift (:data:`PSI_MODERATE`) and
    above 0.2 a significant one (:data:`PSI_ALERT`, the alert threshold). With
    fewer than ``min_samples`` binned rows in the window a feature's PSI is NaN:
    on a small sample PSI is biased upwards (about (bins − 1) / rows on
    identically distributed data).

Counters for a fleet
    PSI does not add up across processes, but histograms do. Besides its rolling
    window the monitor keeps the weighted counts binned since the last
    :meth:`DriftMonitor.take_binned` call; the monitoring export adds them to
    Prometheus counters per feature and bin (estimated served rows: sums of
    Horvitz–Thompson weights), with the reference shares beside them, so that a
    recording rule can compute the fleet's PSI over any window from the sum of
    every replica's counters (deploy/prometheus/rules.yml).

Thread safety
    ``observe`` may be called from the event loop and from worker threads at
    once. The skip decision reads shared state without a lock (a stale k only
    changes which rows are sampled, never the counts' consistency); binning runs
    outside the lock; adding a sample to its bucket, rotating buckets and
    :meth:`DriftMonitor.snapshot` hold one lock.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..formats.files import DEFAULT, ModelFiles
from ..formats.reference import REFERENCE_FILE, Reference

#: PSI at or above this: a moderate shift
PSI_MODERATE = 0.1
#: PSI at or above this: a significant shift — the alert threshold
PSI_ALERT = 0.2
#: bin shares are clipped below at this before the logarithm
PSI_EPSILON = 1e-4
#: rows sampled a few at a time are stashed and binned in blocks of this many
_STASH_ROWS = 64
_FEW_ROWS = 16



def psi(actual: Sequence[float] | np.ndarray, expected: Sequence[float] | np.ndarray,
        eps: float = PSI_EPSILON) -> float:  # fmt: skip
    """Σ (a − e) · ln(a / e) over bins, shares clipped below at ``eps``."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


# ---------------------------------------------------------------------------
# the monitor
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DriftConfig:
    """How a :class:`DriftMonitor` samples and how long it remembers."""

    #: the rolling window, split into ``n_buckets`` time buckets
    window_s: float = 3600.0
    n_buckets: int = 12
    #: binned rows a bucket aims for; sets the sampling period k
    target_samples_per_bucket: int = 2048
    #: bounds of k (a row is sampled with probability 1/k); the lower bound keeps
    #: a one-row request's amortised cost low, the upper one keeps a rare model seen
    min_sample_every: int = 16
    max_sample_every: int = 1 << 20
    #: most rows binned from one request (a stride through larger ones)
    max_rows_per_call: int = 64
    #: fewer binned rows than this in the window: PSI is NaN (not enough data)
    min_samples: int = 500

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.n_buckets >= 1):
            raise ValueError("window_s must be positive and n_buckets at least 1")
        if not (1 <= self.min_sample_every <= self.max_sample_every):
            raise ValueError("need 1 <= min_sample_every <= max_sample_every")
        if self.max_rows_per_call < 1 or self.target_samples_per_bucket < 1 or self.min_samples < 1:
            raise ValueError("max_rows_per_call, target_samples_per_bucket and min_samples must be positive")


@dataclass(frozen=True)
class DriftSnapshot:
    """Per-feature PSI over the current window, and how much data it rests on."""

    feature_names: tuple[str, ...]
    #: per-feature PSI; NaN when the window holds too few rows (or the feature
    #: had no finite reference value)
    psi: tuple[float, ...]
    #: rows binned in the window
    sampled_rows: int
    #: estimated rows served in the window (sampled rows × their weights)
    estimated_rows: float
    window_s: float
    #: the current sampling period k (one row in k is binned)
    sample_every: int

    @property
    def max_psi(self) -> float:
        """The largest finite PSI, NaN when there is none."""
        finite = [v for v in self.psi if not math.isnan(v)]
        return max(finite) if finite else math.nan

    def drifted(self, threshold: float = PSI_ALERT) -> list[str]:
        """Names of the features whose PSI is at or above ``threshold``."""
        return [n for n, v in zip(self.feature_names, self.psi, strict=True) if v >= threshold]


class DriftMonitor:
    """Rolling histograms of one model version's inputs, and PSI against its reference.

    See the module docstring for the sampling design and the PSI formula.

    Parameters
    ----------
    reference : the version's reference bins
    config : sampling and window parameters
    check_finite : leave non-finite values out (needed only for a model whose
        ``nan_policy`` allows them; rejected inputs never reach the monitor)
    dtype : the model's input dtype (float32 inputs are binned against float32 edges)
    clock : monotonic seconds (tests pass a fake one)
    seed : seed of the sampling RNG (tests); None for a random one
    """

    def __init__(
        self,
        reference: Reference,
        config: DriftConfig | None = None,
        check_finite: bool = True,
        dtype: str | np.dtype = "float64",
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.reference = reference
        self.config = config = config or DriftConfig()
        self.check_finite = check_finite
        self._clock = clock
        rng = random.Random(seed)
        self._random = rng.random
        self._randrange = rng.randrange
        self._bucket_s = config.window_s / config.n_buckets
        self._cap = config.max_rows_per_call
        d = len(reference.features)
        nb = max(f.edges.size for f in reference.features) + 1  # bins per feature, padded
        self._d, self._nb = d, nb
        edges = np.full((d, nb - 1), np.inf)
        expected = np.zeros((d, nb))
        self._valid = np.zeros((d, nb), dtype=bool)  # real (not padding) bins
        for j, f in enumerate(reference.features):
            edges[j, : f.edges.size] = f.edges
            expected[j, : f.fractions.size] = f.fractions
            self._valid[j, : f.fractions.size] = True
        # NOTE: float32 inputs are compared with float32-rounded edges: a value equal
        # to an edge in the data (quantile edges often are data values) stays equal
        self.dtype = np.dtype(dtype)
        self._edges_by_rank = [np.ascontiguousarray(edges[:, i], dtype=self.dtype) for i in range(nb - 1)]
        self._rank_dtype = np.uint8 if nb <= 256 else np.intp
        self._expected = expected
        self._has_reference = expected.sum(axis=1) > 0
        self._offsets = np.arange(d, dtype=np.intp) * nb  # feature j's bins start at j * nb
        self._trash = d * nb  # where non-finite values are counted (ignored)
        # the ring of time buckets; a row of counts per bucket, with the trash slot at the end
        n = config.n_buckets
        self._counts = np.zeros((n, d * nb + 1))
        #: weighted counts and binned rows not yet taken by take_binned (for counters)
        self._unexported = np.zeros(d * nb + 1)
        self._unexported_rows = 0
        self._sampled = np.zeros(n, dtype=np.int64)
        self._weight = np.zeros(n)
        self._bucket_id = np.full(n, -(1 << 62), dtype=np.int64)
        self._current = -(1 << 62)
        self._lock = threading.Lock()
        #: the sampling period: a row is binned with probability 1 / _k
        self._k = config.min_sample_every
        #: binned rows in the current bucket at which _k doubles, and the next step
        self._slow_mark = 2 * config.target_samples_per_bucket
        self._slow_step = config.target_samples_per_bucket
        #: rows sampled from small requests wait here and are binned together
        self._stash = np.empty((_STASH_ROWS, d), dtype=self.dtype)
        self._stash_w = np.empty(_STASH_ROWS)
        self._n_stashed = 0
        #: ``defer(fn, *args)`` runs fn later (the service's ``_soon``): a full stash
        #: is binned there, after the request that filled it. None: inline.
        self.defer: Callable[..., Any] | None = None

    @classmethod
    def from_version_dir(
        cls, path: str | Path, n_features: int | None = None, files: ModelFiles = DEFAULT, **kwargs: Any
    ) -> DriftMonitor | None:
        """A monitor for the version directory's reference.json; None when it has none.
        ModelLoadError when the file is malformed, or when the monitor's histograms
        (every feature padded to the most bins any has, once per time bucket) would
        take more than ``files.max_bytes``: counted before they are allocated."""
        reference = Reference.load(path, n_features, files)
        if reference is None:
            return None
        config = kwargs.get("config") or DriftConfig()
        cells = len(reference.features) * (max(f.edges.size for f in reference.features) + 1)
        source = str(Path(path) / REFERENCE_FILE if Path(path).is_dir() else path)
        files.check_size(source, "the drift monitor's histograms of its bins would take", 8 * cells * (config.n_buckets + 4))
        return cls(reference, **kwargs)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.reference.feature_names

    @property
    def sample_every(self) -> int:
        """The current sampling period k."""
        return self._k

    # ------------------------------------------------------------ observing
    def observe(self, X: np.ndarray) -> None:
        """Maybe sample rows of X, shape (rows, features), into the current bucket.

        Cheap by design (see the module docstring): most small requests return
        after one random draw.
        """
        n = X.shape[0]
        k = self._k
        if n < k:
            # taken with probability n / k, then one row: each row's chance is 1 / k
            if self._random() * k >= n:
                return
            i = self._randrange(n) if n > 1 else 0
            self._add_few(X[i : i + 1], k)
            return
        s = max(k, -(-n // self._cap))
        start = self._randrange(s)
        rows = X[start::s]
        if rows.shape[0] <= _FEW_ROWS:
            self._add_few(rows, s)
        else:
            self._add_many(rows, s)

    def _add_few(self, rows: np.ndarray, weight: int) -> None:
        """Stash a few sampled rows; bin the stash whenever it fills up."""
        while rows.shape[0]:
            with self._lock:
                j = self._n_stashed
                take = min(rows.shape[0], self._stash.shape[0] - j)
                self._stash[j : j + take] = rows[:take]
                self._stash_w[j : j + take] = weight
                self._n_stashed = j = j + take
                full = j == self._stash.shape[0]
                if full:
                    block, weights = self._take_stash()
            if full:
                defer = self.defer
                if defer is not None:
                    defer(self._add_many, block, weights)
                else:
                    self._add_many(block, weights)
            rows = rows[take:]

    def _take_stash(self) -> tuple[np.ndarray, np.ndarray]:
        """The stashed rows and their weights; a fresh stash in their place (lock held)."""
        n = self._n_stashed
        rows, weights = self._stash, self._stash_w
        self._stash, self._stash_w = np.empty_like(rows), np.empty_like(weights)
        self._n_stashed = 0
        return rows[:n], weights[:n]

    def _add_many(self, rows: np.ndarray, weight: float | np.ndarray) -> None:
        """Bin rows (each counted ``weight`` times, a scalar or one per row) into the current bucket."""
        m = rows.shape[0]
        if m == 0:
            return
        # bin of rows[i, j] = the number of edges[j] <= rows[i, j]; its id: j * nb + bin
        rows = np.ascontiguousarray(rows)  # a strided sample: one copy makes the passes faster
        rank = np.zeros(rows.shape, dtype=self._rank_dtype)
        above = np.empty(rows.shape, dtype=bool)
        for e in self._edges_by_rank:  # one pass per edge rank (at most 9 for decile bins)
            np.greater_equal(rows, e, out=above)
            rank += above
        bins = rank + self._offsets  # intp
        if self.check_finite:
            bins[~np.isfinite(rows)] = self._trash
        delta: np.ndarray
        if isinstance(weight, np.ndarray):
            delta = np.bincount(bins.ravel(), np.repeat(weight, self._d), minlength=self._trash + 1)
            total = float(weight.sum())
        else:
            delta = weight * np.bincount(bins.ravel(), minlength=self._trash + 1)
            total = float(weight) * m
        with self._lock:
            slot = self._rotate()
            self._counts[slot] += delta
            self._sampled[slot] += m
            self._unexported += delta
            self._unexported_rows += m
            self._weight[slot] += total
            self._maybe_slow_down(slot)

    def _rotate(self) -> int:
        """The current bucket's slot, starting a new bucket when time moved on (lock held)."""
        b = int(self._clock() // self._bucket_s)
        n = self.config.n_buckets
        if b != self._current:
            cfg = self.config
            if self._current == b - 1:
                # the last bucket's traffic sets the sampling period of this one
                rows = self._weight[self._current % n]
                k = math.ceil(rows / cfg.target_samples_per_bucket)
                self._k = min(max(k, cfg.min_sample_every), cfg.max_sample_every)
            elif self._current < b - 1:
                self._k = cfg.min_sample_every  # idle for a whole bucket: start low again
            slot = b % n
            self._counts[slot] = 0.0
            self._sampled[slot] = 0
            self._weight[slot] = 0.0
            self._bucket_id[slot] = b
            self._current = b
            self._slow_mark = 2 * cfg.target_samples_per_bucket
            self._slow_step = cfg.target_samples_per_bucket
            return slot
        return b % n

    def _maybe_slow_down(self, slot: int) -> None:
        """Halve the sampling rate when this bucket has binned more than planned (lock held)."""
        if self._sampled[slot] >= self._slow_mark:
            # at 2T binned rows, then 3T, 3.5T, 3.75T, …: a bucket bins fewer than ~4T rows
            self._k = min(self._k * 2, self.config.max_sample_every)
            self._slow_step = max(1, self._slow_step // 2)
            self._slow_mark = int(self._sampled[slot]) + self._slow_step

    # ------------------------------------------------------------ reporting
    def histogram(self) -> tuple[np.ndarray, int, float]:
        """(weighted counts (features × bins), binned rows, estimated rows) over the window."""
        with self._lock:
            rows, weights = self._take_stash()
        self._add_many(rows, weights)
        with self._lock:
            self._rotate()  # NOTE: also how k recovers after a busy spell when no row is sampled
            b = self._current
            live = self._bucket_id > b - self.config.n_buckets
            counts = self._counts[live].sum(axis=0)
            sampled = int(self._sampled[live].sum())
            weight = float(self._weight[live].sum())
        return counts[: self._trash].reshape(self._d, self._nb), sampled, weight

    def take_binned(self) -> tuple[np.ndarray, int]:
        """(weighted counts (features × bins), binned rows) since the last call, and
        start counting afresh: what a monitoring export adds to counters that only
        go up. Stashed rows are binned first. Calls from several threads each take
        a disjoint part."""
        with self._lock:
            rows, weights = self._take_stash()
        self._add_many(rows, weights)
        with self._lock:
            counts, self._unexported = self._unexported, np.zeros_like(self._unexported)
            binned, self._unexported_rows = self._unexported_rows, 0
        return counts[: self._trash].reshape(self._d, self._nb), binned

    def reference_bins(self) -> list[tuple[int, str, np.ndarray]]:
        """(feature index, name, reference shares of its bins) of every feature
        that has a reference (one with no finite reference value has no PSI)."""
        return [
            (j, f.name, f.fractions)
            for j, f in enumerate(self.reference.features)
            if self._has_reference[j]
        ]

    def psi(self) -> np.ndarray:
        """Per-feature PSI over the window (NaN: not enough data; see the module docstring)."""
        return np.asarray(self.snapshot().psi)

    def snapshot(self) -> DriftSnapshot:
        """PSI per feature and the amount of data behind it."""
        counts, sampled, weight = self.histogram()
        totals = counts.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            actual = counts / totals[:, None]
        a = np.maximum(actual, PSI_EPSILON)
        e = np.maximum(self._expected, PSI_EPSILON)
        terms = np.where(self._valid, (a - e) * np.log(a / e), 0.0)
        values = terms.sum(axis=1)
        ok = (totals > 0) & self._has_reference & (sampled >= self.config.min_samples)
        values = np.where(ok, values, np.nan)
        return DriftSnapshot(
            feature_names=self.feature_names,
            psi=tuple(float(v) for v in values),
            sampled_rows=sampled,
            estimated_rows=weight,
            window_s=self.config.window_s,
            sample_every=self._k,
        )

    def reset(self) -> None:
        """Forget everything observed."""
        with self._lock:
            self._counts[:] = 0.0
            self._sampled[:] = 0
            self._unexported[:] = 0.0
            self._unexported_rows = 0
            self._weight[:] = 0.0
            self._bucket_id[:] = -(1 << 62)
            self._current = -(1 << 62)
            self._k = self.config.min_sample_every
            self._slow_mark = 2 * self.config.target_samples_per_bucket
            self._slow_step = self.config.target_samples_per_bucket
            self._n_stashed = 0

