"""ScoringService: the transport-agnostic core of one request.

Every edge (scorewire.v1, OIP v2, the CLI) turns its wire message into a
:class:`~scorewire.types.PredictRequest` and calls :meth:`ScoringService.predict`,
which resolves the model, checks the input against its signature and limits, honours
the deadline, scores (on a worker thread when the batch is large, so the event loop
keeps serving small requests), and returns named output arrays.

Telemetry stays transport-neutral here: with metrics on, the time and rows of each
scoring call go to the model version's Prometheus histograms; with a request's
(sampled) span passed in, the span gets the model version, backend and rows, and
``score`` (and, when batched, ``queue``) children.

Monitoring (:mod:`scorewire.monitoring`): each answered request is counted, its
rows sampled for drift — on the event loop for a small request (usually one random
draw), on a worker thread after the answer for a large one — and, with a request
id, its outputs recorded for feedback. :meth:`ScoringService.feedback` joins ground
truth to them; :meth:`ScoringService.model_stats` reports requests, drift and
feedback per version; :meth:`ScoringService.export_monitoring` keeps the drift and
feedback gauges current.

Traffic between versions: a request that names no version goes where its model's
:class:`~scorewire.repository.Traffic` sends it (by its ``route_key``, else its
request id); the service never hands a request to a version the repository has
retired (it picks again). When the model has a shadow version, a copy of the
request and of its answer is queued for the shadow after the answer is made (see
:meth:`ScoringService._mirror`): scored and compared on the monitoring thread,
bounded, never in the way of an answer.

:class:`RepositoryWatch` (``--poll-interval-s``) loads what changed on disk through
:meth:`ScoringService.load`, as LoadModel does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends.native import all_finite
from .batching import DynamicBatcher, batch_key, merge_inputs
from .errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelLoadError,
    NotFound,
    Overloaded,
    ScorewireError,
    Unavailable,
)
from .monitoring import monitor as _monitor
from .monitoring.feedback import FeedbackItem, ItemResult, route_feedback
from .monitoring.shadow import ShadowMonitor
from .observability import tracing
from .observability.infer_stats import InferStats, StatsSnapshot
from .observability.metrics import version_metrics
from .repository import ModelEntry, ModelRepository, ModelVersion, State, Traffic
from .tensors import InputSchema, quoted, rows_of, size_of
from .types import BASE_VALUE, Inputs, PredictRequest, PredictResponse

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("scorewire.service")


class ScoringService:
    """Decides how one request is answered; knows nothing about protobuf or gRPC."""

    def __init__(
        self,
        repository: ModelRepository,
        max_batch_rows: int = 1_000_000,
        offload_min_values: int = 16384,
        executor: ThreadPoolExecutor | None = None,
        metrics: bool = False,
    ) -> None:
        self.repository = repository
        self.max_batch_rows = max_batch_rows
        self.offload_min_values = offload_min_values
        self._executor = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="scorewire-score")
        #: record Prometheus metrics (off: not one metric call per request)
        self.metrics = metrics
        #: one thread for monitoring work no response waits for (off the scoring threads)
        self._monitor_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorewire-monitor")
        #: what the request path reads of each served version, made on first use;
        #: dropped (its batcher closed) when the repository retires the version
        self._lanes: dict[ModelVersion, _Lane] = {}
        #: the event loop the batchers run on (the first one a batcher was made on)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: batchers closing (each answers what it holds, then stops)
        self._closing: set[asyncio.Task[None]] = set()
        #: the copies of requests waiting for each shadow version (see _mirror)
        self._mirrors: dict[ModelVersion, _Mirror] = {}
        with contextlib.suppress(RuntimeError):  # made on the loop that serves: retirements go there
            self._loop = asyncio.get_running_loop()
        repository.on_retire(self._retired)
        self._on_change: list[Callable[[str], None]] = []

    def check_input(self, mv: ModelVersion, X: Inputs) -> Inputs:
        """Reject what the model cannot score, naming the problem, never the data;
        the inputs as the model takes them (see :meth:`_Lane.check`)."""
        return self._lane(mv).check(X)

    def _lane(self, mv: ModelVersion) -> _Lane:
        """The version's :class:`_Lane`, made on first use."""
        lane = self._lanes.get(mv)
        if lane is None:
            lane = self._lanes[mv] = _Lane(self, mv)
            if lane.batcher is not None and self._loop is None:
                with contextlib.suppress(RuntimeError):  # no loop: a synchronous caller
                    self._loop = asyncio.get_running_loop()
        return lane

    def _retired(self, mv: ModelVersion) -> None:
        """The repository no longer serves ``mv`` (any thread): drop its lane on the
        event loop, where requests take lanes, so none takes it after."""
        self._mirrors.pop(mv, None)  # copies still queued for it are scored, then forgotten
        if mv not in self._lanes:
            return
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or loop is running:
            self._drop_lane(mv)
            return
        try:
            loop.call_soon_threadsafe(self._drop_lane, mv)
        except RuntimeError:  # the loop is closed: nothing runs on it any more
            self._lanes.pop(mv, None)

    def _drop_lane(self, mv: ModelVersion) -> None:
        """Forget ``mv``'s lane and close its batcher (what it holds is answered)."""
        lane = self._lanes.pop(mv, None)
        if lane is None or lane.batcher is None:
            return
        task = asyncio.ensure_future(lane.batcher.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def row_limit(self, mv: ModelVersion) -> int:
        """The most rows a request to ``mv`` may carry (more: Overloaded)."""
        limit = self.max_batch_rows
        configured = mv.config.max_batch_rows
        return configured if configured is not None and configured < limit else limit

    def resolve(self, model: str, version: int | None = None) -> ModelVersion:
        """The ready version a request for ``model`` (and ``version``) gets."""
        return self.repository.resolve(model, version)

    def _take(self, request: PredictRequest) -> tuple[ModelVersion, _Lane, Traffic | None]:
        """The version that answers ``request``, its lane, and its model's Traffic
        when the request went through it. A version the repository has retired
        (``mv.retired``: replaced or dropped while this request picked it, on another
        thread) is never handed a request: it picks again, and finds what replaced it."""
        key = request.route_key or request.request_id
        for _ in range(8):
            mv, traffic = self.repository.route(request.model, request.version, key)
            lane = self._lanes.get(mv)
            if lane is None:
                lane = self._lane(mv)
                if mv.retired:  # retired while the lane was made: the listener may have missed it
                    self._lanes.pop(mv, None)  # its batcher never started: nothing to close
                    continue
            elif mv.retired:
                continue
            return mv, lane, traffic
        raise Unavailable(f"model {request.model!r} is being reloaded; try again")

    async def predict(self, request: PredictRequest, span: Span | None = None) -> PredictResponse:
        """Score one request (see the module docstring). ``span``: the request's
        span when it is sampled, else None."""
        started = perf_counter_ns()
        mv, lane, traffic = self._take(request)
        try:
            X = lane.check(request.inputs, request.input_name)
            model = lane.model
            outputs = model.output_names(request.outputs)  # unknown names fail here, not in a batch
            if isinstance(X, np.ndarray):
                rows, size = X.shape[0], X.size
            else:
                rows, size = rows_of(X), size_of(X)
            if span is not None:
                tracing.annotate(span, mv.name, mv.version, model.backend, rows)
            deadline = request.deadline
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded("the deadline passed before scoring started")
            checked = perf_counter_ns()
            batcher = lane.batcher
            batched = batcher is not None and rows < batcher.config.max_batch_rows  # one as large as a batch would only wait
            if batched:
                assert batcher is not None
                result = await batcher.submit(X, outputs, deadline, span)
            elif span is not None or self.metrics:
                result = await self._score_observed(mv, X, outputs, span)
            elif size >= self.offload_min_values:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._executor, model.predict, X, outputs)
            else:
                result = model.predict(X, outputs)
            scored = perf_counter_ns()
            monitor = lane.monitor
            if monitor is not None:
                if size < self.offload_min_values:
                    monitor.after_predict(X, request.request_id, result)
                else:  # a large request's rows are sampled on a worker thread, after the answer
                    monitor.after_predict(X, request.request_id, result, observe=False)
                    if monitor.drift is not None:
                        self._background(monitor.drift.observe, X)
        except Exception:
            lane.stats.failed(started)
            raise
        if batched:
            lane.stats.answered_batched(rows, started, checked, scored, perf_counter_ns())
        else:
            lane.stats.answered_alone(rows, started, checked, scored, perf_counter_ns())
        if traffic is not None and traffic.shadow is not None and traffic.shadow is not mv and lane.mirrored:
            self._mirror(traffic, mv, X, result)
        return PredictResponse(mv.name, mv.version, result, request.request_id)

    # ---------------------------------------------------------------- shadows
    def _mirror(self, traffic: Traffic, mv: ModelVersion, X: Inputs, result: dict[str, np.ndarray]) -> None:
        """Queue a copy of a request ``mv`` answered (and of its answer) for the
        model's shadow version, sampled by its ``shadow_fraction``. Nothing is
        scored here: the copies are scored on the monitoring thread by a job this
        schedules after the current step of the event loop, which is the one that
        sends the answer. The queue is bounded (:data:`MIRROR_QUEUE_ROWS` rows,
        :data:`MIRROR_QUEUE_REQUESTS` requests); a copy that does not fit is dropped
        and counted. Nothing of it can fail the request."""
        shadow = traffic.shadow
        assert shadow is not None
        if traffic.fraction < 1.0 and random.random() >= traffic.fraction:
            return
        mirror = self._mirrors.get(shadow)
        if mirror is None:
            if shadow.retired or shadow.monitor is None or shadow.model is None:
                return
            mirror = self._mirrors[shadow] = _Mirror(shadow, self.metrics)
            if shadow.retired:  # retired meanwhile: forget it again
                self._mirrors.pop(shadow, None)
                return
        if mirror.offer(mv, X, result):
            asyncio.get_running_loop().call_soon(self._background, mirror.drain)

    async def _score_observed(
        self, mv: ModelVersion, X: Inputs, outputs: tuple[str, ...], span: Span | None
    ) -> dict[str, np.ndarray]:
        """Score without batching, timed for the metrics and traced as ``score``
        (the unobserved path stays in :meth:`predict`, free of both)."""
        model = mv.model
        assert model is not None
        score = None if span is None else tracing.child(span, "score")
        started = time.perf_counter()
        try:
            if size_of(X) >= self.offload_min_values:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._executor, model.predict, X, outputs)
            else:
                result = model.predict(X, outputs)
        except BaseException as exc:
            if score is not None:
                tracing.set_error(score, exc)
            raise
        finally:
            if score is not None:
                score.end()
        if self.metrics:
            version_metrics(mv.name, mv.version).scored(time.perf_counter() - started, rows_of(X))
        return result

    def _background(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the monitoring thread, not waiting for it (work no
        response depends on; callable from any thread); dropped once it is shut down."""
        try:
            future = self._monitor_executor.submit(fn, *args)
        except RuntimeError:  # shutting down: monitoring data no longer matters
            return
        future.add_done_callback(_log_failure)

    def _soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon, not waiting for it: a monitor's periodic step (a
        feedback drain, a drift stash to bin). Called on the event loop it runs there,
        after the current step: handing pure-Python work to another thread saves no
        CPU under the GIL and adds a GIL hand-off each time (~3 µs per request in a
        profile of 1-row requests). From any other thread: :meth:`_background`."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._background(fn, *args)
            return
        loop.call_soon(_run_logged, fn, args)

    def statistics(self, model: str = "", version: int | None = None) -> list[tuple[ModelVersion, StatsSnapshot]]:
        """The request statistics of the ready versions of ``model`` (or of one;
        "": of every model), by name and version: what each has answered since it
        loaded (see :mod:`scorewire.observability.infer_stats`). NotFound for an
        unknown model or a version that is not ready."""
        entries = [self.repository.entry(model)] if model else self.models()
        out = []
        for entry in entries:
            versions = dict(entry.versions)
            if version is not None:
                mv = versions.get(version)
                if mv is None or mv.state is not State.READY:
                    raise NotFound(f"model {entry.name!r} has no ready version {version}")
                versions = {version: mv}
            for v in sorted(versions):
                mv = versions[v]
                if mv.state is not State.READY:
                    continue
                lane = self._lanes.get(mv)
                stats = lane.stats if lane is not None else InferStats()
                out.append((mv, stats.snapshot()))
        return out

    # --------------------------------------------------------- control plane
    def models(self) -> list[ModelEntry]:
        """Every model the repository knows, by name."""
        return sorted(self.repository.entries(), key=lambda e: e.name)

    def model(self, name: str) -> ModelEntry:
        """One model and its versions (NotFound when the repository has none by that name)."""
        return self.repository.entry(name)

    def key_header(self, model: str) -> str:
        """The metadata header whose value places ``model``'s requests in its traffic
        split ("": none; for the edge, which fills ``PredictRequest.route_key``)."""
        headers = self.repository.key_headers
        return headers.get(model, "") if headers else ""

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(model)`` on the event loop after :meth:`load` or
        :meth:`unload` changed ``model`` — and for each ensemble made of ``model``,
        which the repository loaded again with it (the server updates its health then)."""
        self._on_change.append(listener)

    def _changed(self, model: str) -> None:
        for name in (model, *self.repository.ensembles_of(model)):
            for listener in self._on_change:
                listener(name)

    async def load(self, model: str, reuse: bool = False) -> ModelEntry:
        """(Re)load ``model`` from the repository, on a worker thread; its served
        versions keep answering until their replacements are ready. ``reuse``: keep
        the versions whose files and configuration are unchanged as they are (see
        ModelRepository.prepare). NotFound for a model the repository does not have,
        ModelLoadError when none of its versions is ready afterwards."""
        loop = asyncio.get_running_loop()
        entry = await loop.run_in_executor(None, functools.partial(self.repository.load, model, reuse))
        self._changed(model)
        if entry.state is not State.READY:
            raise ModelLoadError(f"model {model!r} failed to load: {entry.load_error()}")
        return entry

    def unload(self, model: str) -> None:
        """Stop serving ``model`` (NotFound when it is not loaded)."""
        self.repository.unload(model)
        self._changed(model)

    # ------------------------------------------------------------ monitoring
    async def feedback(
        self, model: str, items: Sequence[FeedbackItem], count_unknown: bool = True
    ) -> list[tuple[int | None, ItemResult]]:
        """Join ground truth to the recorded predictions of ``model`` (any loaded
        version; see :func:`~scorewire.monitoring.feedback.route_feedback`): one
        (version, result) per item, in order. ``count_unknown=False``: an id this
        process does not know is answered UNKNOWN without being counted (the edge
        asks other processes for it first). NotFound for an unknown model."""
        entry = self.repository.entry(model)
        stores = {v: mv.monitor.feedback for v, mv in list(entry.versions.items()) if mv.monitor is not None}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, route_feedback, stores, items, count_unknown)

    async def model_stats(self, model: str, version: int | None = None) -> list[_monitor.VersionStats]:
        """Requests, drift and feedback of each loaded version of ``model`` (or one)."""
        entry = self.repository.entry(model)
        versions = dict(entry.versions)
        if version is not None:
            if version not in versions:
                raise NotFound(f"model {model!r} has no version {version}")
            versions = {version: versions[version]}
        loop = asyncio.get_running_loop()
        stats = []
        for v in sorted(versions):
            mv = versions[v]
            if mv.monitor is None:
                stats.append(_monitor.VersionStats(v, mv.state.value, 0, 0, None, None, None))
                continue
            latency = _monitor.request_summary(model, v) if self.metrics else None
            stats.append(await loop.run_in_executor(None, mv.monitor.stats, v, mv.state.value, latency))
        return stats

    def export_monitoring(self) -> None:
        """Set the drift and feedback gauges of every loaded version and add to its
        drift bin counters (blocking: a few ms per version; call it from one
        worker thread, now and then)."""
        for entry in self.repository.entries():
            for v, mv in list(entry.versions.items()):
                monitor = mv.monitor
                if monitor is not None:
                    _monitor.export_gauges(entry.name, v, monitor.stats(v, mv.state.value))
                    if monitor.drift is not None:
                        _monitor.export_drift_bins(entry.name, v, monitor.drift)

    def export_drift_series(self, model: str) -> None:
        """Export the drift bin counters of ``model``'s loaded versions now (the
        rows binned so far, none right after a load): called when a version turns
        ready, so that its counters exist at 0 before rows arrive; Prometheus'
        ``rate`` does not count what a counter already held when first scraped."""
        try:
            versions = list(self.repository.entry(model).versions.items())
        except NotFound:
            return
        for v, mv in versions:
            monitor = mv.monitor
            if mv.state is State.READY and monitor is not None and monitor.drift is not None:
                _monitor.export_drift_bins(model, v, monitor.drift)

    async def run_monitoring_export(self, interval_s: float) -> None:
        """Call :meth:`export_monitoring` every ``interval_s`` seconds, on the
        monitoring thread, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            try:
                await loop.run_in_executor(self._monitor_executor, self.export_monitoring)
            except RuntimeError:  # the monitoring thread is shut down
                return
            except Exception:
                log.exception("exporting the monitoring gauges failed")

    async def aclose(self) -> None:
        """Answer what the batchers hold, then stop them; drop pending monitoring work."""
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            if lane.batcher is not None:
                await lane.batcher.close()
        while self._closing:
            await asyncio.gather(*self._closing)
        self._monitor_executor.shutdown(wait=False, cancel_futures=True)

    def predict_sync(self, request: PredictRequest) -> PredictResponse:
        """The same, for callers without an event loop (scores on this thread; no
        batching, no shadow)."""
        mv, lane, _ = self._take(request)
        X = lane.check(request.inputs, request.input_name)
        result = lane.model.predict(X, request.outputs or None)
        if lane.monitor is not None:
            lane.monitor.after_predict(X, request.request_id, result)
        return PredictResponse(mv.name, mv.version, result, request.request_id)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._monitor_executor.shutdown(wait=True)


class _Lane:
    """What the request path reads of one ready model version, gathered when the
    service first scores it: one attribute each instead of chains of lookups and
    properties per request; and the version's batcher. Valid for the version's life
    (a reload makes a new ModelVersion, config and all). A tabular model's matrix is
    checked here; any other model's inputs by name by its :class:`InputSchema`."""

    __slots__ = (
        "batcher", "check_finite", "dtype", "input_name", "mirrored", "model", "monitor", "n_features", "name",
        "row_limit", "schema", "stats",
    )  # fmt: skip

    def __init__(self, service: ScoringService, mv: ModelVersion) -> None:
        model = mv.model
        assert model is not None
        sig = model.signature
        self.name = mv.name
        self.model = model
        self.dtype = sig.input.np_dtype
        self.input_name = sig.input.name
        self.n_features = sig.n_features
        #: None for a tabular model (given one matrix), else how its named inputs are checked
        self.schema = None if sig.tabular else InputSchema(sig, mv.name)
        #: a shadow version may score copies of its requests: their outputs have a row
        #: per input row, so that copies can be stacked and compared
        self.mirrored = sig.tabular or sig.batched
        config = mv.config
        self.row_limit = service.row_limit(mv)
        self.check_finite = config.nan_policy == "reject"
        #: the version's request statistics (OIP ModelStatistics), shared with its batcher
        self.stats = InferStats()
        self.batcher: DynamicBatcher | None = None
        if config.batching.enabled_for(model.backend) and sig.batched:
            self.batcher = DynamicBatcher(
                model.predict,
                model.output_names(None),
                config.batching,
                executor=service._executor,
                offload_min_values=service.offload_min_values,
                metrics=version_metrics(mv.name, mv.version) if service.metrics else None,
                stats=self.stats,
                whole_outputs=frozenset(o.name for o in sig.outputs if o.role == BASE_VALUE),
            )
        monitor = mv.monitor
        if monitor is not None and not monitor.wired:
            monitor.wire(service._soon)
        self.monitor = monitor

    def check(self, X: Inputs, input_name: str = "") -> Inputs:
        """The inputs as the model takes them (a matrix, or arrays by name); reject
        what the model cannot score, naming the problem, never the data.
        ``input_name``: one array's name as the request gave it ("": none)."""
        if self.schema is not None:
            return self._named(X, input_name)
        if input_name and input_name != self.input_name and isinstance(X, np.ndarray):
            raise InvalidInput(f"model {self.name!r} has one input, named {self.input_name!r}")
        if not isinstance(X, np.ndarray):  # by name: the one input's
            if len(X) != 1 or self.model.signature.input.name not in X:
                InputSchema(self.model.signature, self.name).names_of(X)
            X = next(iter(X.values()))
            if not isinstance(X, np.ndarray):
                raise InvalidInput("an input must be an array")
        if X.ndim != 2:
            raise InvalidInput(f"input must have shape [rows, features] (rank 2), got rank {X.ndim}")
        if X.dtype is not self.dtype and X.dtype != self.dtype:
            raise InvalidInput(f"model {self.name!r} takes {self.dtype.name} input, got {X.dtype}")
        rows, features = X.shape
        if features != self.n_features:
            raise InvalidInput(f"model {self.name!r} takes {self.n_features} features per row, got {features}")
        if rows > self.row_limit:
            raise Overloaded(f"{rows} rows is over the limit of {self.row_limit} rows per request")
        if self.check_finite and rows and features and not all_finite(X):
            raise InvalidInput("input contains NaN or infinite values (this model's nan_policy is 'reject')")
        return X

    def _named(self, X: Inputs, input_name: str) -> dict[str, np.ndarray]:
        """A model that is not tabular: its inputs by name, checked by its schema (one
        array alone is taken for a model of one input, under its name if given)."""
        assert self.schema is not None
        if isinstance(X, np.ndarray):
            specs = self.schema.specs
            if input_name and len(specs) == 1 and input_name != specs[0].name:
                raise InvalidInput(f"model {self.name!r} has one input, named {specs[0].name!r}")
            if input_name and len(specs) > 1 and any(s.name == input_name for s in specs):
                X = {input_name: X}  # one of several: the schema names the missing ones
                return self.schema.check(X, self.row_limit, self.check_finite)
            if len(specs) != 1:
                names = ", ".join(quoted(s.name) for s in specs[:8])
                raise InvalidInput(f"model {quoted(self.name)} takes {len(specs)} inputs ({names}): send them by name")
            X = {specs[0].name: X}
        return self.schema.check(X, self.row_limit, self.check_finite)


#: the most rows, and requests, waiting for one shadow version; more are dropped (counted)
MIRROR_QUEUE_ROWS = 65536
MIRROR_QUEUE_REQUESTS = 4096
#: the most rows a shadow scores at once
MIRROR_BATCH_ROWS = 4096


class _Mirror:
    """The copies of requests waiting for one shadow version, and how they are
    scored: :meth:`offer` on the event loop (cheap, bounded), :meth:`drain` on the
    monitoring thread (stacks what is queued, scores it with the shadow's model,
    compares with what the serving versions answered)."""

    def __init__(self, shadow: ModelVersion, metrics: bool) -> None:
        assert shadow.model is not None and shadow.monitor is not None
        self.shadow = shadow
        self.model = shadow.model
        monitor = shadow.monitor
        if monitor.shadow is None:
            monitor.shadow = ShadowMonitor(shadow.name, shadow.version, shadow.model.signature, metrics)
        self.monitor: ShadowMonitor = monitor.shadow
        self._items: deque[tuple[ModelVersion, Inputs, dict[str, np.ndarray]]] = deque()
        self._rows = 0
        self._scheduled = False
        self._lock = threading.Lock()
        self._failures_logged = 0

    def offer(self, mv: ModelVersion, X: Inputs, result: dict[str, np.ndarray]) -> bool:
        """Queue a copy of what ``mv`` answered; True when a drain must be scheduled."""
        rows = rows_of(X)
        schedule = False
        with self._lock:
            if self._rows + rows > MIRROR_QUEUE_ROWS or len(self._items) >= MIRROR_QUEUE_REQUESTS:
                full = True
            else:
                full = False
                self._items.append((mv, X, result))
                self._rows += rows
                schedule, self._scheduled = not self._scheduled, True
        if full:
            self.monitor.dropped(mv.version)
            return False
        self.monitor.against(mv.version).mirrored += 1
        return schedule

    def drain(self) -> None:
        """Score and compare what is queued, until nothing is (monitoring thread)."""
        while True:
            with self._lock:
                if not self._items:
                    self._scheduled = False
                    return
                batch = [self._items.popleft()]
                rows = rows_of(batch[0][1])
                while self._items and rows + rows_of(self._items[0][1]) <= MIRROR_BATCH_ROWS:
                    item = self._items.popleft()
                    batch.append(item)
                    rows += rows_of(item[1])
                self._rows -= rows
            self._score(batch)

    def _score(self, batch: list[tuple[ModelVersion, Inputs, dict[str, np.ndarray]]]) -> None:
        # one group per serving version and input layout: a split's versions may differ
        groups: dict[tuple[Hashable, ...], list[tuple[ModelVersion, Inputs, dict[str, np.ndarray]]]] = {}
        for item in batch:
            mv, X, result = item
            layout = (X.dtype.str, X.shape[1]) if isinstance(X, np.ndarray) else batch_key(X)
            groups.setdefault((id(mv), layout, tuple(result)), []).append(item)
        for items in groups.values():
            mv = items[0][0]
            try:
                X, _ = merge_inputs([X for _, X, _ in items])
                shadow = self.model.predict(X, None)
            except Exception as exc:
                self.monitor.failed(mv.version, len(items))
                if self._failures_logged < 3:  # once per kind of trouble, not per request
                    self._failures_logged += 1
                    reason = exc.message if isinstance(exc, ScorewireError) else type(exc).__name__
                    log.warning("model %s shadow version %d cannot score what version %d answered: %s",
                                self.shadow.name, self.shadow.version, mv.version, reason)  # fmt: skip
                continue
            assert mv.model is not None
            served = {name: np.concatenate([r[name] for _, _, r in items]) for name in items[0][2]}
            self.monitor.compare(mv.version, mv.model.signature, len(items), served, shadow)


class RepositoryWatch:
    """``--poll-interval-s``: what changed in the repository on disk is loaded (or
    unloaded) through :meth:`ScoringService.load` — the way LoadModel loads, so
    health and listeners follow — keeping the versions whose files did not change.

    A model directory is acted on once it looks the same in two polls in a row and
    differs from what was last loaded (``ModelRepository.fingerprints``: names,
    sizes, times and inodes, no file read), so a directory still being written is
    not read; writing it elsewhere and renaming it into place is what makes a new
    version appear whole (README, "Polling the repository")."""

    def __init__(self, service: ScoringService, baseline: dict[str, tuple[Hashable, ...]] | None = None) -> None:
        self.service = service
        #: what each model directory looked like when it was last loaded (None: not yet scanned)
        self.loaded = dict(baseline) if baseline is not None else None
        self._previous = dict(baseline) if baseline is not None else {}
        #: polls done
        self.polls = 0

    def scan(self) -> dict[str, tuple[Hashable, ...]]:
        return self.service.repository.fingerprints()

    async def poll(self) -> list[str]:
        """Look once; load or unload what changed and is stable. The names acted on."""
        loop = asyncio.get_running_loop()
        try:
            now = await loop.run_in_executor(None, self.scan)
        except (OSError, ModelLoadError) as exc:
            log.error("polling the repository: %s", exc.message if isinstance(exc, ModelLoadError) else exc)
            self.polls += 1
            return []
        if self.loaded is None:
            self.loaded = self._previous = now
            self.polls += 1
            return []
        acted = []
        for name in sorted(set(now) | set(self.loaded)):
            current = now.get(name)
            if current == self.loaded.get(name) or current != self._previous.get(name):
                continue  # unchanged, or still changing
            acted.append(name)
            if current is None:
                self.loaded.pop(name, None)
                log.info("model %s was removed from the repository: unloading it", name)
                with contextlib.suppress(NotFound):
                    self.service.unload(name)
                continue
            self.loaded[name] = current
            log.info("model %s changed in the repository: loading it", name)
            try:
                await self.service.load(name, reuse=True)
            except ScorewireError as exc:
                log.error("model %s: %s", name, exc.message)
        self._previous = now
        self.polls += 1
        return acted

    async def run(self, interval_s: float) -> None:
        """Poll every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("polling the repository failed")


def _run_logged(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("monitoring work failed")


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("monitoring work failed", exc_info=future.exception())
