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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends.native import all_finite
from .batching import DynamicBatcher
from .errors import DeadlineExceeded, InvalidInput, ModelLoadError, NotFound, Overloaded
from .monitoring import monitor as _monitor
from .monitoring.feedback import FeedbackItem, ItemResult, route_feedback
from .observability import tracing
from .observability.metrics import version_metrics
from .repository import ModelEntry, ModelRepository, ModelVersion, State
from .types import BASE_VALUE, PredictRequest, PredictResponse

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
        repository.on_retire(self._retired)
        self._on_change: list[Callable[[str], None]] = []

    def check_input(self, mv: ModelVersion, X: np.ndarray) -> None:
        """Reject what the model cannot score, naming the problem, never the data."""
        self._lane(mv).check(X)

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

    def resolve(self, model: str, version: int | None = None) -> ModelVersion:
        """The ready version a request for ``model`` (and ``version``) gets."""
        return self.repository.resolve(model, version)

    async def predict(self, request: PredictRequest, span: Span | None = None) -> PredictResponse:
        """Score one request (see the module docstring). ``span``: the request's
        span when it is sampled, else None."""
        mv = self.resolve(request.model, request.version)
        lane = self._lane(mv)
        X = request.inputs
        lane.check(X)
        model = lane.model
        outputs = model.output_names(request.outputs)  # unknown names fail here, not in a batch
        if span is not None:
            tracing.annotate(span, mv.name, mv.version, model.backend, X.shape[0])
        deadline = request.deadline
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the deadline passed before scoring started")
        batcher = lane.batcher
        if batcher is not None and X.shape[0] < batcher.config.max_batch_rows:  # one as large as a batch would only wait
            result = await batcher.submit(X, outputs, deadline, span)
        elif span is not None or self.metrics:
            result = await self._score_observed(mv, X, outputs, span)
        elif X.size >= self.offload_min_values:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, model.predict, X, outputs)
        else:
            result = model.predict(X, outputs)
        monitor = lane.monitor
        if monitor is not None:
            if X.size < self.offload_min_values:
                monitor.after_predict(X, request.request_id, result)
            else:  # a large request's rows are sampled on a worker thread, after the answer
                monitor.after_predict(X, request.request_id, result, observe=False)
                if monitor.drift is not None:
                    self._background(monitor.drift.observe, X)
        return PredictResponse(mv.name, mv.version, result, request.request_id)

    async def _score_observed(
        self, mv: ModelVersion, X: np.ndarray, outputs: tuple[str, ...], span: Span | None
    ) -> dict[str, np.ndarray]:
        """Score without batching, timed for the metrics and traced as ``score``
        (the unobserved path stays in :meth:`predict`, free of both)."""
        model = mv.model
        assert model is not None
        score = None if span is None else tracing.child(span, "score")
        started = time.perf_counter()
        try:
            if X.size >= self.offload_min_values:
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
            version_metrics(mv.name, mv.version).scored(time.perf_counter() - started, X.shape[0])
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

    # --------------------------------------------------------- control plane
    def models(self) -> list[ModelEntry]:
        """Every model the repository knows, by name."""
        return sorted(self.repository.entries(), key=lambda e: e.name)

    def model(self, name: str) -> ModelEntry:
        """One model and its versions (NotFound when the repository has none by that name)."""
        return self.repository.entry(name)

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(model)`` on the event loop after :meth:`load` or
        :meth:`unload` changed ``model`` (the server updates its health then)."""
        self._on_change.append(listener)

    def _changed(self, model: str) -> None:
        for listener in self._on_change:
            listener(model)

    async def load(self, model: str) -> ModelEntry:
        """(Re)load ``model`` from the repository, on a worker thread; its served
        versions keep answering until their replacements are ready. NotFound for a
        model the repository does not have, ModelLoadError when none of its versions
        is ready afterwards."""
        loop = asyncio.get_running_loop()
        entry = await loop.run_in_executor(None, self.repository.load, model)
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
        """The same, for callers without an event loop (scores on this thread)."""
        mv = self.resolve(request.model, request.version)
        lane = self._lane(mv)
        lane.check(request.inputs)
        result = lane.model.predict(request.inputs, request.outputs or None)
        if lane.monitor is not None:
            lane.monitor.after_predict(request.inputs, request.request_id, result)
        return PredictResponse(mv.name, mv.version, result, request.request_id)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._monitor_executor.shutdown(wait=True)


class _Lane:
    """What the request path reads of one ready model version, gathered when the
    service first scores it: one attribute each instead of chains of lookups and
    properties per request; and the version's batcher. Valid for the version's life
    (a reload makes a new ModelVersion, config and all)."""

    __slots__ = ("batcher", "check_finite", "dtype", "model", "monitor", "n_features", "name", "row_limit")

    def __init__(self, service: ScoringService, mv: ModelVersion) -> None:
        model = mv.model
        assert model is not None
        sig = model.signature
        self.name = mv.name
        self.model = model
        self.dtype = sig.input.np_dtype
        self.n_features = sig.n_features
        config = mv.config
        limit = service.max_batch_rows
        if config.max_batch_rows is not None and config.max_batch_rows < limit:
            limit = config.max_batch_rows
        self.row_limit = limit
        self.check_finite = config.nan_policy == "reject"
        self.batcher: DynamicBatcher | None = None
        if config.batching.enabled_for(model.backend):
            self.batcher = DynamicBatcher(
                model.predict,
                model.output_names(None),
                config.batching,
                executor=service._executor,
                offload_min_values=service.offload_min_values,
                metrics=version_metrics(mv.name, mv.version) if service.metrics else None,
                whole_outputs=frozenset(o.name for o in sig.outputs if o.role == BASE_VALUE),
            )
        monitor = mv.monitor
        if monitor is not None and not monitor.wired:
            monitor.wire(service._soon)
        self.monitor = monitor

    def check(self, X: np.ndarray) -> None:
        """Reject what the model cannot score, naming the problem, never the data."""
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


def _run_logged(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("monitoring work failed")


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("monitoring work failed", exc_info=future.exception())
