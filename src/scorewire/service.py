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
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from . import _kernel
from .batching import DynamicBatcher
from .errors import DeadlineExceeded, InvalidInput, Overloaded, Unavailable
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
        else:
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
        return PredictResponse(model=mv.name, version=mv.version, outputs=result, request_id=request.request_id)

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
        """Answer what the batchers hold, then stop them."""
        for entry in self.repository.entries():
            for mv in entry.versions.values():
                if isinstance(mv.batcher, DynamicBatcher):
                    await mv.batcher.close()

    def predict_sync(self, request: PredictRequest) -> PredictResponse:
        """The same, for callers without an event loop (scores on this thread)."""
        mv = self.resolve(request)
        self.check_input(mv, request.inputs)
        assert mv.model is not None
        result = mv.model.predict(request.inputs, request.outputs or None)
        return PredictResponse(model=mv.name, version=mv.version, outputs=result, request_id=request.request_id)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
