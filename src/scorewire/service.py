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
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _kernel
from .batching import DynamicBatcher
from .errors import DeadlineExceeded, InvalidInput, NotFound, Overloaded, Unavailable
from .monitoring import monitor as _monitor
from .monitoring.feedback import FeedbackItem, ItemResult, route_feedback
from .observability import _tracing
from .observability._metrics import version_metrics
from .repository import ModelRepository, ModelVersion
from .types import PredictRequest, PredictResponse

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
        self.draining = False

    def check_input(self, mv: ModelVersion, X: np.ndarray) -> None:
        """Reject what the model cannot score, naming the problem, never the data."""
        assert mv.model is not None
        sig = mv.model.signature
        if X.ndim != 2:
            raise InvalidInput(f"input must have shape [rows, features] (rank 2), got rank {X.ndim}")
        if X.dtype != sig.input.np_dtype:
            raise InvalidInput(f"model {mv.name!r} takes {sig.input.dtype} input, got {X.dtype}")
        if X.shape[1] != sig.n_features:
            raise InvalidInput(f"model {mv.name!r} takes {sig.n_features} features per row, got {X.shape[1]}")
        config = mv.config
        limit = self.max_batch_rows
        if config.max_batch_rows is not None and config.max_batch_rows < limit:
            limit = config.max_batch_rows
        if X.shape[0] > limit:
            raise Overloaded(f"{X.shape[0]} rows is over the limit of {limit} rows per request")
        if config.nan_policy == "reject" and X.size and not _kernel.all_finite(X):
            raise InvalidInput("input contains NaN or infinite values (this model's nan_policy is 'reject')")

    def resolve(self, request: PredictRequest) -> ModelVersion:
        if self.draining:
            raise Unavailable("the server is shutting down")
        return self.repository.resolve(request.model, request.version)

    async def predict(self, request: PredictRequest, span: Span | None = None) -> PredictResponse:
        """Score one request (see the module docstring). ``span``: the request's
        span when it is sampled, else None."""
        mv = self.resolve(request)
        X = request.inputs
        self.check_input(mv, X)
        model = mv.model
        assert model is not None
        outputs = model.output_names(request.outputs)  # unknown names fail here, not in a batch
        if span is not None:
            _tracing.annotate(span, mv.name, mv.version, model.backend, X.shape[0])
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise DeadlineExceeded("the deadline passed before scoring started")
        batcher = mv.batcher if mv.batcher is not None else self._batcher_for(mv)
        # a request as large as a whole batch gains nothing from waiting for company
        if isinstance(batcher, DynamicBatcher) and X.shape[0] < batcher.config.max_batch_rows:
            result = await batcher.submit(X, outputs, request.deadline, span)
        elif span is not None or self.metrics:
            result = await self._score_observed(mv, X, outputs, span)
        elif X.size >= self.offload_min_values:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, model.predict, X, outputs)
        else:
            result = model.predict(X, outputs)
        monitor = mv.monitor
        if monitor is not None:
            if not monitor.wired:
                monitor.wire(self._background)
            if X.size < self.offload_min_values:
                monitor.after_predict(X, request.request_id, result)
            else:  # a large request's rows are sampled on a worker thread, after the answer
                monitor.after_predict(X, request.request_id, result, observe=False)
                if monitor.drift is not None:
                    self._background(monitor.drift.observe, X)
        return PredictResponse(model=mv.name, version=mv.version, outputs=result, request_id=request.request_id)

    async def _score_observed(
        self, mv: ModelVersion, X: np.ndarray, outputs: tuple[str, ...], span: Span | None
    ) -> dict[str, np.ndarray]:
        """Score without batching, timed for the metrics and traced as ``score``
        (the unobserved path stays in :meth:`predict`, free of both)."""
        model = mv.model
        assert model is not None
        score = None if span is None else _tracing.child(span, "score")
        started = time.perf_counter()
        try:
            if X.size >= self.offload_min_values:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._executor, model.predict, X, outputs)
            else:
                result = model.predict(X, outputs)
        except BaseException as exc:
            if score is not None:
                _tracing.set_error(score, exc)
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

    # ------------------------------------------------------------ monitoring
    async def feedback(self, model: str, items: Sequence[FeedbackItem]) -> list[tuple[int | None, ItemResult]]:
        """Join ground truth to the recorded predictions of ``model`` (any loaded
        version; see :func:`~scorewire.monitoring.feedback.route_feedback`): one
        (version, result) per item, in order. NotFound for an unknown model."""
        entry = self.repository.entry(model)
        stores = {v: mv.monitor.feedback for v, mv in list(entry.versions.items()) if mv.monitor is not None}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, route_feedback, stores, items)

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
        """Set the drift and feedback gauges of every loaded version (blocking: a
        few ms per version; call it from a worker thread, now and then)."""
        for entry in self.repository.entries():
            for v, mv in list(entry.versions.items()):
                if mv.monitor is not None:
                    _monitor.export_gauges(entry.name, v, mv.monitor.stats(v, mv.state.value))

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

    def _batcher_for(self, mv: ModelVersion) -> DynamicBatcher | bool:
        """The version's batcher, created on first use; False when batching is off
        (stored too, so the decision is made once per version)."""
        assert mv.model is not None
        config = mv.config.batching
        if not config.enabled_for(mv.model.backend):
            mv.batcher = False
        else:
            mv.batcher = DynamicBatcher(
                mv.model.predict,
                mv.model.output_names(None),
                config,
                executor=self._executor,
                offload_min_values=self.offload_min_values,
                metrics=version_metrics(mv.name, mv.version) if self.metrics else None,
            )
        return mv.batcher

    async def aclose(self) -> None:
        """Answer what the batchers hold, then stop them; drop pending monitoring work."""
        for entry in self.repository.entries():
            for mv in entry.versions.values():
                if isinstance(mv.batcher, DynamicBatcher):
                    await mv.batcher.close()
        self._monitor_executor.shutdown(wait=False, cancel_futures=True)

    def predict_sync(self, request: PredictRequest) -> PredictResponse:
        """The same, for callers without an event loop (scores on this thread)."""
        mv = self.resolve(request)
        self.check_input(mv, request.inputs)
        assert mv.model is not None
        result = mv.model.predict(request.inputs, request.outputs or None)
        if mv.monitor is not None:
            mv.monitor.after_predict(request.inputs, request.request_id, result)
        return PredictResponse(model=mv.name, version=mv.version, outputs=result, request_id=request.request_id)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._monitor_executor.shutdown(wait=True)


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("monitoring work failed", exc_info=future.exception())
