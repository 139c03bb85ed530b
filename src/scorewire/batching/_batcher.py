"""The asyncio half of batching: one queue per model version.

Requests wait at most ``max_delay_us`` for company (only requests whose inputs
agree in every dim but the first are merged: see ``_merge.batch_key``); a batch holds at most
``max_batch_rows`` rows (a single larger request runs alone); the queue holds at
most ``max_queue_rows`` rows, beyond which a request is refused at once
(Overloaded). A request whose deadline has passed is dropped before it joins a
batch (DeadlineExceeded); one whose caller went away is skipped. A batch's failure
reaches every waiter. Only the monotonic clock (``loop.time()``) is used.

Telemetry: with a :class:`~scorewire.observability.metrics.VersionMetrics`, each
request's queue wait, each batch's scoring time and rows, and the queue's depth
in rows are recorded; a request submitted with its (sampled) span gets ``queue``
and ``score`` spans and a ``batch`` span linked to every sampled request it served
(recorded after the batch, with its real start and end times). With an
:class:`~scorewire.observability.infer_stats.InferStats`, each batch answered adds
its requests' queue wait and its own durations (merge, score, split) to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DeadlineExceeded, Overloaded, ScorewireError
from ..formats.model_toml import BatchConfig
from ..observability import tracing
from ..tensors import rows_of
from ..types import Inputs
from ._merge import batch_key, merge_inputs, rows_match, split_outputs

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ..observability.infer_stats import InferStats
    from ..observability.metrics import VersionMetrics

log = logging.getLogger("scorewire.batching")


@dataclass(slots=True)
class _Pending:
    X: Inputs
    outputs: tuple[str, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    deadline: float | None  # time.monotonic() seconds
    queued: int  # time.perf_counter_ns()
    rows: int
    key: tuple[tuple[int, ...], ...] | None  # see batch_key: what a batch's requests share
    span: Span | None = None  # the request's span, when sampled
    queued_ns: int = 0  # time.time_ns(), for the span


class DynamicBatcher:
    """Batches the requests of one model version.

    ``predict(X, outputs)`` is the model's own predict; ``all_outputs`` its output
    names (a request's empty output list means all of them); ``whole_outputs`` the
    names of those that have no row dimension (the same for every request).
    """

    def __init__(
        self,
        predict: Callable[[Inputs, tuple[str, ...] | None], dict[str, np.ndarray]],
        all_outputs: tuple[str, ...],
        config: BatchConfig,
        executor: Executor | None = None,
        offload_min_values: int = 16384,
        on_batch: Callable[[int, int], None] | None = None,
        metrics: VersionMetrics | None = None,
        stats: InferStats | None = None,
        whole_outputs: frozenset[str] = frozenset(),
    ) -> None:
        self._predict = predict
        self._all = all_outputs
        self._whole = whole_outputs
        self.config = config
        self._executor = executor
        self._offload_min_values = offload_min_values
        self._on_batch = on_batch
        self._metrics = metrics
        self._stats = stats
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        #: while the worker waits for company: set when the batch is full
        self._full: asyncio.Future[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def waiting_for_company(self) -> bool:
        """True while the worker holds a batch open for more requests: until it is
        full, its oldest request has waited ``max_delay_us``, or the batcher closes
        (lets a test order its requests by this state rather than by sleeping)."""
        return self._full is not None

    async def submit(
        self, X: Inputs, outputs: tuple[str, ...], deadline: float | None = None, span: Span | None = None
    ) -> dict[str, np.ndarray]:
        """Queue X (a matrix, or inputs by name) and wait for its outputs (``span``:
        the request's, when sampled)."""
        if self._closed:
            from ..errors import Unavailable

            raise Unavailable("the model is shutting down")
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the deadline passed before the request was queued")
        if isinstance(X, np.ndarray):
            rows, key = X.shape[0], None
        else:
            rows, key = rows_of(X), batch_key(X)
        if self._queued_rows + rows > self.config.max_queue_rows and self._queue:
            raise Overloaded(
                f"the model's batching queue is full ({self._queued_rows} rows queued, limit {self.config.max_queue_rows})"
            )
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run())
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        pending = _Pending(X, outputs or self._all, future, deadline, time.perf_counter_ns(), rows, key)
        if span is not None:
            pending.span = span
            pending.queued_ns = time.time_ns()
        self._queue.append(pending)
        self._queued_rows += rows
        if self._metrics is not None:
            self._metrics.queue_rows.set(self._queued_rows)
        full = self._full
        if full is None:  # the worker is idle or scoring
            assert self._wakeup is not None
            self._wakeup.set()
        elif self._queued_rows >= self.config.max_batch_rows:
            _release(full)
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        max_rows = self.config.max_batch_rows
        delay = self.config.max_delay_us / 1e6
        while not (self._closed and not self._queue):
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # wait for company until the oldest request has waited max_delay, or
            # the batch is full: one future and one timer per batch, set by submit
            # or the timer (not a wake-up, a task and a timer per arriving request)
            if self._queued_rows < max_rows and delay > 0 and not self._closed:
                full = self._full = loop.create_future()
                timer = loop.call_later(delay, _release, full)
                try:
                    await full
                finally:
                    timer.cancel()
                    self._full = None
            batch = self._take(max_rows)
            if batch:
                await self._score(batch)

    def _take(self, max_rows: int) -> list[_Pending]:
        """Pop up to max_rows rows of live requests (at least one request) that the
        first of them can be merged with (the same batch key); requests of another
        key keep their places in the queue."""
        batch: list[_Pending] = []
        rows = 0
        now = time.monotonic()
        queue = self._queue
        skipped: list[_Pending] = []  # of another key, in queue order
        while queue:
            p = queue[0]
            if batch and p.key != batch[0].key:
                skipped.append(queue.popleft())
                continue
            if batch and rows + p.rows > max_rows:
                break
            queue.popleft()
            self._queued_rows -= p.rows
            if p.future.done():  # the caller went away
                continue
            if p.deadline is not None and now >= p.deadline:
                p.future.set_exception(DeadlineExceeded("the deadline passed while the request was queued"))
                continue
            batch.append(p)
            rows += p.rows
        queue.extendleft(reversed(skipped))
        if self._metrics is not None:
            self._metrics.queue_rows.set(self._queued_rows)
        return batch

    async def _score(self, batch: list[_Pending]) -> None:
        metrics = self._metrics
        started = time.perf_counter_ns()
        if metrics is not None:
            for p in batch:
                metrics.queue_wait.observe((started - p.queued) / 1e9)
        traced = [(p.span, p.queued_ns) for p in batch if p.span is not None]
        started_ns = time.time_ns() if traced else 0
        rows = 0
        try:
            X, offsets = merge_inputs([p.X for p in batch])
            rows = offsets[-1]
            names = tuple(dict.fromkeys(n for p in batch for n in p.outputs))
            scoring = time.perf_counter_ns()
            outputs = await self._call(X, names)
            scored = time.perf_counter_ns()
            if metrics is not None:
                metrics.scored((scored - scoring) / 1e9, rows)
            if len(batch) > 1 and not rows_match(outputs, rows, self._whole):
                # an output whose first dim is not the rows cannot be split: each
                # request is scored alone (the graph's shapes did not say so)
                parts = [await self._call(p.X, p.outputs) for p in batch]
            else:
                parts = split_outputs(outputs, offsets, [p.outputs for p in batch], self._whole)
        except Exception as exc:  # the batch failed: every waiter hears of it
            if not isinstance(exc, ScorewireError):
                log.exception("batch of %d requests failed", len(batch))
            if traced:
                tracing.trace_batch(traced, len(batch), rows, started_ns, time.time_ns(), exc)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        stats = self._stats
        if stats is not None:
            split = time.perf_counter_ns()
            stats.executed(rows, scoring - started, scored - scoring, split - scored)
            waited = sum(started - p.queued for p in batch)
            stats.batch_answered(len(batch), waited, scoring - started, scored - scoring, split - scored)
        if traced:
            tracing.trace_batch(traced, len(batch), rows, started_ns, time.time_ns())
        if self._on_batch is not None:
            self._on_batch(len(batch), rows)
        for p, part in zip(batch, parts, strict=True):
            if not p.future.done():
                p.future.set_result(part)

    async def _call(self, X: Inputs, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The model's predict, on the executor when X is large."""
        size = X.size if isinstance(X, np.ndarray) else sum(a.size for a in X.values())
        if size >= self._offload_min_values and self._executor is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._predict, X, names)
        return self._predict(X, names)

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._full is not None:
            _release(self._full)
        if self._worker is not None:
            await self._worker


def _release(waiting: asyncio.Future[None]) -> None:
    """End the worker's wait for company (once: by the timer, a full batch or close)."""
    if not waiting.done():
        waiting.set_result(None)
