"""The prediction window: what a store remembers of each answered request, by id.

:meth:`PredictionWindow.record` appends to a queue without a lock (O(1));
:meth:`PredictionWindow.drain` (lock held) moves the queue into an insertion-ordered
map bounded by count, rows and age, the oldest leaving first. Ids that left the
window are remembered (ids only, in two bounded generations) as expired or
answered, to tell them from unknown ones.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from ._types import FeedbackConfig

EXPIRED = "expired"
ANSWERED = "answered"

#: one remembered prediction: (recorded at, rows, label, probabilities, value)
Entry = tuple[float, int, Any, Any, Any]


class PredictionWindow:
    """Recorded predictions waiting for feedback (see the module docstring). The
    owner holds a lock around every method but :meth:`record`."""

    def __init__(self, config: FeedbackConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        # record() appends here without a lock; moved into _live in batches (drain)
        self.incoming: deque[tuple[str, float, int, Any, Any, Any]] = deque()
        # request id -> Entry, oldest first
        self._live: OrderedDict[str, Entry] = OrderedDict()
        self._live_rows = 0
        # ids of requests that left the window: id -> EXPIRED | ANSWERED, in two
        # generations of remembered_ids / 2 (the older one is dropped whole)
        self._gone: dict[str, str] = {}
        self._gone_old: dict[str, str] = {}

    def record(self, request_id: str, n: int, label: Any, proba: Any, value: Any) -> int:
        """Queue one prediction (no lock); returns how many are queued."""
        incoming = self.incoming
        incoming.append((request_id, self._clock(), n, label, proba, value))
        return len(incoming)

    def drain(self) -> int:
        """Move queued predictions into the window, then apply its bounds; returns
        how many were moved."""
        incoming, live = self.incoming, self._live
        moved = len(incoming)  # appends racing with us wait for the next drain
        for _ in range(moved):
            rid, t, n, label, proba, value = incoming.popleft()
            old = live.pop(rid, None)
            if old is not None:
                self._live_rows -= old[1]
            live[rid] = (t, n, label, proba, value)
            self._live_rows += n
        cfg = self.config
        for _ in range(len(live) - cfg.max_requests):  # over the count: no need to look
            rid, entry = live.popitem(last=False)
            self._live_rows -= entry[1]
            self._remember(rid, EXPIRED)
        oldest = self._clock() - cfg.max_age_s
        while live:
            rid, entry = next(iter(live.items()))
            if self._live_rows <= cfg.max_rows and entry[0] >= oldest:
                break
            live.popitem(last=False)
            self._live_rows -= entry[1]
            self._remember(rid, EXPIRED)
        return moved

    def get(self, request_id: str) -> Entry | None:
        return self._live.get(request_id)

    def answered(self, request_id: str) -> None:
        """The prediction got its feedback: it leaves the window, remembered as answered."""
        entry = self._live.pop(request_id)
        self._live_rows -= entry[1]
        self._remember(request_id, ANSWERED)

    @property
    def pending(self) -> int:
        return len(self._live)

    @property
    def remembered(self) -> int:
        """Ids remembered as expired or answered."""
        return len(self._gone) + len(self._gone_old)

    def _remember(self, request_id: str, what: str) -> None:
        gone = self._gone
        gone[request_id] = what
        if len(gone) >= (self.config.remembered_ids + 1) // 2:
            self._gone_old, self._gone = gone, {}

    def forgotten(self, request_id: str) -> str | None:
        """EXPIRED or ANSWERED for a request that left the window, else None."""
        what = self._gone.get(request_id)
        return what if what is not None else self._gone_old.get(request_id)

    def status(self, request_id: str) -> str | None:
        """"live", "expired", "answered" or None (never seen, or long forgotten)."""
        if request_id in self._live:
            return "live"
        return self.forgotten(request_id)
