"""Feedback: ground truth for earlier predictions, joined by request id, and
rolling quality metrics per model version.

The prediction window
    :meth:`FeedbackStore.record` keeps what a joined metric needs of each answered
    request that carried a request id — for a classifier its predicted labels and
    probability rows, for a regressor its values — as references to the output
    arrays (no copy; the outputs must not be modified afterwards). It appends to a
    queue without taking a lock (O(1)); on :meth:`FeedbackStore.flush`, before
    any read, and every 128 records (later, through the store's ``defer`` function
    when it has one), the queue moves into an insertion-ordered map bounded by count
    (``max_requests``), by rows (``max_rows``) and by age (``max_age_s``,
    monotonic clock, stamped at record time); the oldest entries leave first.
    A memory guide: a one-row classifier prediction holds two small arrays,
    roughly 300–400 bytes, so the default 100 000 requests are tens of MB.

Outcomes
    Each :class:`FeedbackItem` gives the true label (or value) of every row of one
    earlier request, and gets one :class:`Outcome`: ``MATCHED``; ``UNKNOWN`` (never
    recorded here); ``EXPIRED`` (recorded, but it left the window before the
    feedback came); ``DUPLICATE`` (feedback was already joined for it); ``INVALID``
    (wrong number of values, a label that is not one of the model's classes, a
    non-finite value — with a message). Only ``INVALID`` leaves the prediction
    waiting. None of them fails the whole call; each is counted. Expired and
    answered ids are remembered (ids only, bounded) to tell them from unknown ones.

The rolling metrics
    Joined rows go into a ring of the last ``window_rows`` rows. Classifiers:
    accuracy, log-loss (p clipped to [ε, 1 − ε], ε the machine epsilon of the
    probabilities' dtype, as :func:`scorewire.evaluate.log_loss`) and, for two
    classes, ROC AUC on P(classes[1]) (sorting the window: computed when asked and
    cached until new feedback arrives). Regressors: RMSE and MAE. A metric that
    needs an output the request did not ask for (log-loss without probabilities)
    covers the rows that have it and is NaN when none do. A classifier whose class
    labels are unknown (an ONNX graph that does not state them) gets accuracy
    only, by comparing labels.

Thread safety: one lock per store guards the window, the ring and the counters.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..evaluate import binary_roc_auc, encode_labels


class Outcome(enum.Enum):
    """What happened to one feedback item."""

    MATCHED = "matched"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


@dataclass(frozen=True)
class FeedbackItem:
    """The ground truth of one earlier request: one label or value per row."""

    request_id: str
    truth: Any  # a sequence or array with one entry per row of the request


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one :class:`FeedbackItem`."""

    request_id: str
    outcome: Outcome
    message: str = ""  # why, for INVALID


@dataclass(frozen=True)
class FeedbackConfig:
    """How much a :class:`FeedbackStore` remembers."""

    #: predictions waiting for feedback: at most this many requests …
    max_requests: int = 100_000
    #: … holding at most this many rows …
    max_rows: int = 1_000_000
    #: … none older than this (seconds)
    max_age_s: float = 3600.0
    #: joined rows the rolling metrics cover
    window_rows: int = 10_000
    #: ids of expired and answered requests remembered (to report EXPIRED / DUPLICATE):
    #: at least half this many, at most this many
    remembered_ids: int = 100_000

    def __post_init__(self) -> None:
        if min(self.max_requests, self.max_rows, self.window_rows, self.remembered_ids) < 1 or self.max_age_s <= 0:
            raise ValueError("feedback limits must be positive")


@dataclass(frozen=True)
class OutputRoles:
    """Which output names carry the label, the probabilities and the value."""

    label: str | None = None
    probabilities: str | None = None
    value: str | None = None

    @classmethod
    def of_model(cls, model: Any) -> OutputRoles:
        """The roles of a model's outputs: a native model states them; for others
        they are read off the signature (a 1-D integer or string output is the
        label, a 2-D float output of a classifier the probabilities, the first
        float output of a regressor the value)."""
        spec = getattr(model, "spec", None)
        named = getattr(spec, "outputs", None)
        if isinstance(named, Mapping):
            by_role: dict[str, str] = {}
            for name, role in named.items():
                by_role.setdefault(role, name)
            return cls(by_role.get("label"), by_role.get("probabilities"), by_role.get("value"))
        sig = model.signature
        label = proba = value = None
        for o in sig.outputs:
            if len(o.shape) == 1 and o.dtype in ("int64", "int32", "object") and label is None:
                label = o.name
            elif o.dtype in ("float32", "float64"):
                if sig.task == "classification" and len(o.shape) == 2 and proba is None:
                    proba = o.name
                elif sig.task == "regression" and value is None:
                    value = o.name
        return cls(label, proba, value)


@dataclass(frozen=True)
class FeedbackMetrics:
    """Rolling quality and feedback counts of one model version."""

    task: str  # "classification" | "regression"
    #: joined rows the quality metrics cover (the last ``window_rows``)
    window_rows: int
    accuracy: float = math.nan
    log_loss: float = math.nan
    roc_auc: float = math.nan  # two-class classifiers only
    rmse: float = math.nan
    mae: float = math.nan
    #: predictions recorded, and those waiting for feedback now
    recorded: int = 0
    pending: int = 0
    #: feedback items by outcome
    matched: int = 0
    unknown: int = 0
    expired: int = 0
    duplicate: int = 0
    invalid: int = 0
    #: joined rows since the start
    matched_rows: int = 0


_ANSWERED = "answered"
_EXPIRED = "expired"
#: record() moves its queue into the window itself when it is this long (a
#: housekeeping task calling flush() keeps that work off the request path)
_DRAIN_EVERY = 128
#: requests of at most this many rows are joined with plain Python (cheaper than NumPy)
_SCALAR_ROWS = 16
_EPS64 = float(np.finfo(np.float64).eps)


class _Joined:
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


class FeedbackStore:
    """Recent predictions of one model version by request id, joined with ground
    truth into rolling metrics. See the module docstring.

    Parameters
    ----------
    task : "classification" or "regression"
    classes : class labels in probability-column order (None: unknown)
    roles : which outputs carry label / probabilities / value
    config : the window's bounds
    clock : monotonic seconds (tests pass a fake one)
    """

    def __init__(
        self,
        task: str,
        classes: Sequence[Any] | None = None,
        roles: OutputRoles | None = None,
        config: FeedbackConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"unknown task {task!r}")
        self.task = task
        self.classes = tuple(classes) if classes is not None else None
        if roles is None:
            roles = OutputRoles("label", "probabilities") if task == "classification" else OutputRoles(value="value")
        self.roles = roles
        self.config = config = config or FeedbackConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._label_name, self._proba_name, self._value_name = roles.label, roles.probabilities, roles.value
        self._max_rows = config.max_rows
        # record() appends here without a lock; moved into _live in batches (under the lock)
        self._incoming: deque[tuple[str, float, int, Any, Any, Any]] = deque()
        #: ``defer(fn)`` runs fn later (the service's ``_soon``): record() hands the
        #: queue's move to it. None: record() moves it itself.
        self.defer: Callable[..., Any] | None = None
        self._drain_queued = False
        # request id -> (recorded at, rows, label, probabilities, value), oldest first
        self._live: OrderedDict[str, tuple[float, int, Any, Any, Any]] = OrderedDict()
        self._live_rows = 0
        # ids of requests that left the window: id -> _EXPIRED | _ANSWERED, in two
        # generations of remembered_ids / 2 (the older one is dropped whole)
        self._gone: dict[str, str] = {}
        self._gone_old: dict[str, str] = {}
        self._class_index = {c: i for i, c in enumerate(self.classes)} if self.classes is not None else None
        # the ring of joined rows: one array per metric input
        self._keys = ("err",) if task == "regression" else ("correct", "loss", "p1", "y1")
        #   correct: 1.0 / 0.0 (NaN: no label to compare); loss: −ln p(true) (NaN: no
        #   probabilities); p1: P(classes[1]) and y1: true label is classes[1] (two
        #   classes only); err: prediction − truth
        self._ring = {k: np.full(config.window_rows, np.nan) for k in self._keys}
        self._pos = 0
        self._filled = 0
        self._quality: dict[str, float] | None = None  # cached until the ring changes
        self._counts = dict.fromkeys(
            ("recorded", "matched", "unknown", "expired", "duplicate", "invalid", "matched_rows"), 0
        )

    @classmethod
    def for_model(cls, model: Any, config: FeedbackConfig | None = None, **kwargs: Any) -> FeedbackStore:
        """A store for a loaded model (its task, classes and output roles)."""
        sig = model.signature
        return cls(sig.task, sig.classes, OutputRoles.of_model(model), config, **kwargs)

    # ------------------------------------------------------------ recording
    def record(self, request_id: str, outputs: Mapping[str, np.ndarray]) -> bool:
        """Remember a request's outputs for later feedback; False when there is
        nothing to remember (no id, none of the needed outputs, no rows or too many).

        O(1) and lock-free: an append to a queue that is moved into the window
        (under the lock) by :meth:`flush`, before every read, and by this method
        every ``_DRAIN_EVERY`` records.
        """
        if not request_id:
            return False
        label = outputs.get(self._label_name) if self._label_name else None
        proba = outputs.get(self._proba_name) if self._proba_name else None
        value = outputs.get(self._value_name) if self._value_name else None
        first = label if label is not None else proba if proba is not None else value
        if first is None:
            return False
        n = first.shape[0]
        if n == 0 or n > self._max_rows:
            return False
        incoming = self._incoming
        incoming.append((request_id, self._clock(), n, label, proba, value))
        if len(incoming) >= _DRAIN_EVERY:
            defer = self.defer
            if defer is None:
                with self._lock:
                    self._drain()
            elif not self._drain_queued:
                self._drain_queued = True
                defer(self.flush)
        return True

    def flush(self) -> None:
        """Move recorded predictions into the window and apply its bounds now
        (for a periodic housekeeping task: it keeps that work off the request path)."""
        self._drain_queued = False
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        """Move recorded predictions into the window, then apply its bounds (lock held)."""
        incoming, live = self._incoming, self._live
        moved = len(incoming)  # appends racing with us wait for the next drain
        for _ in range(moved):
            rid, t, n, label, proba, value = incoming.popleft()
            old = live.pop(rid, None)
            if old is not None:
                self._live_rows -= old[1]
            live[rid] = (t, n, label, proba, value)
            self._live_rows += n
        self._counts["recorded"] += moved
        cfg = self.config
        live = self._live
        for _ in range(len(live) - cfg.max_requests):  # over the count: no need to look
            rid, entry = live.popitem(last=False)
            self._live_rows -= entry[1]
            self._remember(rid, _EXPIRED)
        oldest = self._clock() - cfg.max_age_s
        while live:
            rid, entry = next(iter(live.items()))
            if self._live_rows <= cfg.max_rows and entry[0] >= oldest:
                break
            live.popitem(last=False)
            self._live_rows -= entry[1]
            self._remember(rid, _EXPIRED)

    def _remember(self, request_id: str, what: str) -> None:
        gone = self._gone
        gone[request_id] = what
        if len(gone) >= (self.config.remembered_ids + 1) // 2:
            self._gone_old, self._gone = gone, {}

    def _forgotten(self, request_id: str) -> str | None:
        """_EXPIRED or _ANSWERED for a request that left the window, else None."""
        what = self._gone.get(request_id)
        return what if what is not None else self._gone_old.get(request_id)

    def status(self, request_id: str) -> str | None:
        """"live", "expired", "answered" or None (never seen, or long forgotten)."""
        with self._lock:
            self._drain()
            if request_id in self._live:
                return "live"
            return self._forgotten(request_id)

    # ------------------------------------------------------------- feedback
    def feedback(self, items: Iterable[FeedbackItem]) -> list[ItemResult]:
        """Join ground truth with recorded predictions; one result per item, in order.

        An id given twice in one call: the first is joined, the second is a DUPLICATE.
        """
        results = []
        joined = _Joined(self._keys)
        counts = self._counts
        with self._lock:
            self._drain()
            for item in items:
                rid = item.request_id
                entry = self._live.get(rid) if rid else None
                if entry is None:
                    gone = self._forgotten(rid) if rid else None
                    outcome = (
                        Outcome.UNKNOWN if gone is None else Outcome.EXPIRED if gone == _EXPIRED else Outcome.DUPLICATE
                    )
                    counts[outcome.value] += 1
                    results.append(ItemResult(rid, outcome))
                    continue
                try:
                    self._join(entry, item.truth, joined)
                except InvalidInput as exc:
                    counts["invalid"] += 1
                    results.append(ItemResult(rid, Outcome.INVALID, exc.message))
                    continue
                del self._live[rid]
                self._live_rows -= entry[1]
                self._remember(rid, _ANSWERED)
                counts["matched"] += 1
                counts["matched_rows"] += entry[1]
                results.append(ItemResult(rid, Outcome.MATCHED))
            self._append(joined.columns())
        return results

    def _join(self, entry: tuple[float, int, Any, Any, Any], truth: Any, joined: _Joined) -> None:
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
        index = self._class_index
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
            self._join_arrays(np.asarray(idx, dtype=np.intp), label, p, joined)
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

    def _join_arrays(self, idx: np.ndarray, label: Any, p: np.ndarray | None, joined: _Joined) -> None:
        """The vectorised :meth:`_join` of a large request's rows."""
        assert self.classes is not None
        n = idx.size
        nan = np.full(n, np.nan)
        if label is not None:
            correct = (encode_labels(label, self.classes) == idx).astype(np.float64)
        elif p is not None:
            correct = (p.argmax(axis=1) == idx).astype(np.float64)  # the first maximum, as in _join
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

    def _append(self, columns: dict[str, np.ndarray]) -> None:
        """Write joined rows into the ring (lock held)."""
        m = next(iter(columns.values())).shape[0]
        if m == 0:
            return
        w = self.config.window_rows
        skip = max(0, m - w)  # more rows than the ring holds: keep the last ones
        idx = (self._pos + np.arange(m - skip)) % w
        for key, ring in self._ring.items():
            ring[idx] = columns[key][skip:]
        self._pos = int((self._pos + m - skip) % w)
        self._filled = min(w, self._filled + m - skip)
        self._quality = None

    # -------------------------------------------------------------- metrics
    def metrics(self) -> FeedbackMetrics:
        """The rolling metrics and the counters."""
        with self._lock:
            self._drain()
            c = dict(self._counts)
            pending = len(self._live)
            filled = self._filled
            q = self._quality
            if q is None:
                q = self._quality = self._compute_quality()
        return FeedbackMetrics(
            task=self.task, window_rows=filled,
            accuracy=q.get("accuracy", math.nan), log_loss=q.get("log_loss", math.nan),
            roc_auc=q.get("roc_auc", math.nan), rmse=q.get("rmse", math.nan), mae=q.get("mae", math.nan),
            recorded=c["recorded"], pending=pending, matched=c["matched"], unknown=c["unknown"],
            expired=c["expired"], duplicate=c["duplicate"], invalid=c["invalid"], matched_rows=c["matched_rows"],
        )  # fmt: skip

    def _compute_quality(self) -> dict[str, float]:
        n = self._filled  # the ring fills from slot 0, so its first n slots are in use
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


def _mean_defined(a: np.ndarray) -> float:
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan


def route_feedback(
    stores: Mapping[int, FeedbackStore], items: Sequence[FeedbackItem]
) -> list[tuple[int | None, ItemResult]]:
    """Feedback for a model with several versions: each item goes to the version
    that answered its request (one still holding the prediction first, else one
    that remembers it as expired or answered); an id no version knows is UNKNOWN,
    counted on the newest version. Returns (version, result) per item, in order.
    """
    if not stores:
        return [(None, ItemResult(item.request_id, Outcome.UNKNOWN)) for item in items]
    newest = max(stores)
    targets: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        statuses = {v: s.status(item.request_id) for v, s in stores.items()} if item.request_id else {}
        live = [v for v, st in statuses.items() if st == "live"]
        seen = [v for v, st in statuses.items() if st is not None]
        target = max(live) if live else max(seen) if seen else newest
        targets.setdefault(target, []).append(i)
    results: list[tuple[int | None, ItemResult] | None] = [None] * len(items)
    for version, positions in targets.items():
        for pos, result in zip(positions, stores[version].feedback([items[p] for p in positions]), strict=True):
            results[pos] = (version, result)
    return [r for r in results if r is not None]
