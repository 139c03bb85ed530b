"""The feedback store of one model version: the prediction window, the join and
the rolling metrics behind one lock (see the package docstring)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import InvalidInput
from ._join import Joiner
from ._quality import QualityRing
from ._types import FeedbackConfig, FeedbackItem, FeedbackMetrics, ItemResult, Outcome, OutputRoles
from ._window import EXPIRED, PredictionWindow

#: record() moves its queue into the window itself when it is this long (a
#: housekeeping task calling flush() keeps that work off the request path)
_DRAIN_EVERY = 128

_COUNTS = ("recorded", "matched", "unknown", "expired", "duplicate", "invalid", "matched_rows")


class FeedbackStore:
    """Recent predictions of one model version by request id, joined with ground
    truth into rolling metrics.

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
        self._lock = threading.Lock()
        self._label_name, self._proba_name, self._value_name = roles.label, roles.probabilities, roles.value
        self._max_rows = config.max_rows
        #: the predictions waiting for feedback
        self.window = PredictionWindow(config, clock)
        #: ``defer(fn)`` runs fn later (the service's ``_soon``): record() hands the
        #: queue's move to it. None: record() moves it itself.
        self.defer: Callable[..., Any] | None = None
        self._drain_queued = False
        self._joiner = Joiner(task, self.classes)
        self._ring = QualityRing(task, self._joiner.keys, config.window_rows)
        self._counts = dict.fromkeys(_COUNTS, 0)

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
        if first is None or first.ndim == 0:
            return False
        n = first.shape[0]
        if n == 0 or n > self._max_rows:
            return False
        if self.window.record(request_id, n, label, proba, value) >= _DRAIN_EVERY:
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
        """The window's drain, counted (lock held)."""
        self._counts["recorded"] += self.window.drain()

    def status(self, request_id: str) -> str | None:
        """"live", "expired", "answered" or None (never seen, or long forgotten)."""
        with self._lock:
            self._drain()
            return self.window.status(request_id)

    # ------------------------------------------------------------- feedback
    def feedback(self, items: Iterable[FeedbackItem]) -> list[ItemResult]:
        """Join ground truth with recorded predictions; one result per item, in order.

        An id given twice in one call: the first is joined, the second is a DUPLICATE.
        """
        results = []
        joined = self._joiner.batch()
        counts = self._counts
        window = self.window
        with self._lock:
            self._drain()
            for item in items:
                rid = item.request_id
                entry = window.get(rid) if rid else None
                if entry is None:
                    gone = window.forgotten(rid) if rid else None
                    outcome = (
                        Outcome.UNKNOWN if gone is None else Outcome.EXPIRED if gone == EXPIRED else Outcome.DUPLICATE
                    )
                    counts[outcome.value] += 1
                    results.append(ItemResult(rid, outcome))
                    continue
                try:
                    self._joiner.add(entry, item.truth, joined)
                except InvalidInput as exc:
                    counts["invalid"] += 1
                    results.append(ItemResult(rid, Outcome.INVALID, exc.message))
                    continue
                window.answered(rid)
                counts["matched"] += 1
                counts["matched_rows"] += entry[1]
                results.append(ItemResult(rid, Outcome.MATCHED))
            self._ring.append(joined.columns())
        return results

    # -------------------------------------------------------------- metrics
    def metrics(self) -> FeedbackMetrics:
        """The rolling metrics and the counters."""
        with self._lock:
            self._drain()
            c = dict(self._counts)
            pending = self.window.pending
            filled = self._ring.filled
            q = self._ring.quality()
        return FeedbackMetrics(
            task=self.task, window_rows=filled,
            accuracy=q.get("accuracy", math.nan), log_loss=q.get("log_loss", math.nan),
            roc_auc=q.get("roc_auc", math.nan), rmse=q.get("rmse", math.nan), mae=q.get("mae", math.nan),
            recorded=c["recorded"], pending=pending, matched=c["matched"], unknown=c["unknown"],
            expired=c["expired"], duplicate=c["duplicate"], invalid=c["invalid"], matched_rows=c["matched_rows"],
        )  # fmt: skip
