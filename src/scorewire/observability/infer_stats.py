"""Per model version request statistics, in the shape of Triton's ``InferStatistics``.

The request path only adds integers here: nanoseconds from ``time.perf_counter_ns``
and counts, into the slots of one :class:`InferStats` per served version (the
service's, on the event loop: no lock). Nothing is formatted or labelled until
someone asks (:meth:`InferStats.snapshot`, for OIP's ``ModelStatistics``).

What each duration covers, measured in the scoring core (decoding the request
from the wire and encoding the response are not part of them):

- ``success`` / ``fail``: the request in the core, from its arrival to its answer
  (or error);
- ``queue``: waiting in the model version's batching queue (0 without batching);
- ``compute_input``: checking the input against the signature; in a batch, also
  merging the requests' rows into one matrix;
- ``compute_infer``: the model scoring the rows (in a batch, the whole batch: as
  Triton, each request of a batch is counted with the batch's time);
- ``compute_output``: after scoring: splitting a batch's outputs, and monitoring
  (drift sampling, feedback recording).

``inference_count`` counts rows (each row is one inference), ``execution_count``
model executions (a batch, or a request scored alone), and the batch statistics are
kept per number of rows scored at once — for the first :data:`MAX_BATCH_SIZES`
distinct numbers seen; executions of other sizes are counted in the totals only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: the distinct batch sizes whose executions are kept apart (a client choosing row
#: counts must not grow a version's statistics without bound)
MAX_BATCH_SIZES = 1024


@dataclass(frozen=True)
class Duration:
    """A count and a cumulative duration (ns), as Triton's ``StatisticDuration``."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class BatchSnapshot:
    """The executions of one batch size."""

    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


@dataclass(frozen=True)
class StatsSnapshot:
    """One version's statistics at one moment (see the module docstring)."""

    #: wall-clock time of the last successful request, ms since the epoch (0: none)
    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batches: tuple[BatchSnapshot, ...]


class InferStats:
    """The counters of one model version (module docstring). Every method is a few
    integer additions; call them on one thread (the event loop).

    A request scored alone is one list of integers updated in place (its
    execution and its request are the same event); the totals are summed when a
    snapshot is taken. Requests answered from a batch are counted in the slots,
    their batches in ``batches``."""

    __slots__ = (
        "_other",
        "_other_batches",
        "alone",
        "batches",
        "fail_count",
        "fail_ns",
        "infer_ns",
        "inferences",
        "input_ns",
        "last_ns",
        "output_ns",
        "queue_ns",
        "success_count",
        "success_ns",
    )

    def __init__(self) -> None:
        #: requests scored alone, by rows → [requests, rows, success ns, input ns, infer ns, output ns]
        self.alone: dict[int, list[int]] = {}
        #: the same for the row counts past MAX_BATCH_SIZES (totals only)
        self._other = [0, 0, 0, 0, 0, 0]
        # requests answered from a batch
        self.success_count = self.success_ns = self.inferences = 0
        self.queue_ns = self.input_ns = self.infer_ns = self.output_ns = 0
        #: batches, by rows → [executions, input ns, infer ns, output ns]
        self.batches: dict[int, list[int]] = {}
        #: the same for the row counts past MAX_BATCH_SIZES (counted as executions only)
        self._other_batches = [0, 0, 0, 0]
        self.fail_count = self.fail_ns = 0
        #: time.perf_counter_ns() when the last successful request was answered
        self.last_ns = 0

    def _size(self, table: dict[int, list[int]], rows: int, width: int) -> list[int] | None:
        """A new row count's entry in ``table``, or None past MAX_BATCH_SIZES."""
        if len(table) >= MAX_BATCH_SIZES:
            return None
        entry = table[rows] = [0] * width
        return entry

    def answered_alone(self, rows: int, started: int, checked: int, scored: int, done: int) -> None:
        """A request of ``rows`` rows scored alone: perf_counter_ns() at its
        arrival, once its input was checked, once scored, and at its answer."""
        a = self.alone.get(rows)
        if a is None:
            a = self._size(self.alone, rows, 6) or self._other
        a[0] += 1
        a[1] += rows
        a[2] += done - started
        a[3] += checked - started
        a[4] += scored - checked
        a[5] += done - scored
        self.last_ns = done

    def executed(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One batch of ``rows`` rows scored (by the batcher)."""
        b = self.batches.get(rows)
        if b is None:
            b = self._size(self.batches, rows, 4) or self._other_batches
        b[0] += 1
        b[1] += input_ns
        b[2] += infer_ns
        b[3] += output_ns

    def batch_answered(self, requests: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """A batch of ``requests`` requests was scored: their summed queue wait, and
        the batch's own durations (each request is counted with them)."""
        self.queue_ns += queue_ns
        self.input_ns += requests * input_ns
        self.infer_ns += requests * infer_ns
        self.output_ns += requests * output_ns

    def answered_batched(self, rows: int, started: int, checked: int, returned: int, done: int) -> None:
        """A request of ``rows`` rows answered from a batch: perf_counter_ns() at
        its arrival, once its input was checked, once back from its batch, and at
        its answer."""
        self.success_count += 1
        self.success_ns += done - started
        self.input_ns += checked - started
        self.output_ns += done - returned
        self.inferences += rows
        self.last_ns = done

    def failed(self, started: int) -> None:
        """A request failed (after its model version was found)."""
        self.fail_count += 1
        self.fail_ns += time.perf_counter_ns() - started

    def snapshot(self) -> StatsSnapshot:
        """Everything counted so far (formats nothing on the request path)."""
        n, rows, success_ns = self.success_count, self.inferences, self.success_ns
        input_ns, infer_ns, output_ns = self.input_ns, self.infer_ns, self.output_ns
        executions = sum(b[0] for b in self.batches.values()) + self._other_batches[0]
        batches = {size: list(b) for size, b in self.batches.items()}
        for a in [*self.alone.values(), self._other]:
            n += a[0]
            rows += a[1]
            success_ns += a[2]
            input_ns += a[3]
            infer_ns += a[4]
            output_ns += a[5]
            executions += a[0]
        for size, a in self.alone.items():
            b = batches.setdefault(size, [0, 0, 0, 0])
            for i in range(4):
                b[i] += a[0] if i == 0 else a[i + 2]
        last_ms = 0
        if self.last_ns:
            last_ms = (time.time_ns() - (time.perf_counter_ns() - self.last_ns)) // 1_000_000
        return StatsSnapshot(
            last_inference_ms=last_ms,
            inference_count=rows,
            execution_count=executions,
            success=Duration(n, success_ns),
            fail=Duration(self.fail_count, self.fail_ns),
            queue=Duration(n, self.queue_ns),
            compute_input=Duration(n, input_ns),
            compute_infer=Duration(n, infer_ns),
            compute_output=Duration(n, output_ns),
            batches=tuple(
                BatchSnapshot(size, Duration(c, i), Duration(c, f), Duration(c, o))
                for size, (c, i, f, o) in sorted(batches.items())
            ),
        )
