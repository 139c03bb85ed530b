"""scorewire.v1.PredictService and ModelService (with Feedback and GetModelStats:
see scorewire.monitoring)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from .. import _wire
from ..errors import InvalidInput
from ..monitoring.drift import PSI_ALERT, PSI_MODERATE
from ..monitoring.feedback import FeedbackItem, ItemResult, Outcome
from ..monitoring.monitor import VersionStats
from ..observability import _tracing
from ..repository import ModelEntry, ModelVersion, State
from ..service import ScoringService
from ..types import PredictRequest, PredictResponse, Signature
from ._calls import Calls
from ._codec import INPUT_RANKS, TRUTH_RANKS, check_shape, dtype_to_v1, fill_tensor, tensor_to_array
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from ._handlers import raw_request, reader, serve_stream, serve_unary, unary
from ._telemetry import RpcTelemetry

if TYPE_CHECKING:
    from opentelemetry.trace import Span

SERVICE = pb.DESCRIPTOR.services_by_name["PredictService"].full_name


_STATES = {
    State.LOADING: pb.LOADING,
    State.READY: pb.READY,
    State.FAILED: pb.FAILED,
    State.UNLOADED: pb.UNLOADED,
}


#: a Predict or PredictStream request as read from its bytes: the fields
#: ``_wire.decode_predict`` reads from the common message (model, version,
#: request_id, outputs, X, raw), else the parsed message, else UNPARSEABLE
read_request = reader(_wire.decode_predict, pb.PredictRequest)


def request_to_core(request: Any, deadline: float | None) -> tuple[PredictRequest, bool]:
    """A request as read (see ``read_request``) as the core's, and whether its
    input came as raw bytes."""
    if request.__class__ is tuple:
        model, version, request_id, outputs, X, raw = request
        return PredictRequest(model, X, version or None, outputs, request_id, deadline), raw
    core = PredictRequest(
        model=request.model,
        inputs=tensor_to_array(request.input, INPUT_RANKS),
        version=request.version or None,
        outputs=tuple(request.outputs),
        request_id=request.request_id,
        deadline=deadline,
    )
    return core, bool(request.input.raw)


def labels_of(request: Any) -> tuple[str, int]:
    """The (model, version) a request as read asks for."""
    return (request[0], request[1]) if request.__class__ is tuple else (request.model, request.version)


def answered_by(response: pb.PredictResponse) -> tuple[str, int]:
    """The (model, version) that answered."""
    return response.model, response.version


def request_id_of(request: Any) -> str:
    return request[2] if request.__class__ is tuple else request.request_id


def response_to_pb(raw: bool, result: PredictResponse) -> pb.PredictResponse:
    """The answer, its outputs raw when the request's input was ``raw``, else typed."""
    response = pb.PredictResponse(model=result.model, version=result.version, request_id=result.request_id)
    outputs = response.outputs
    for name, value in result.outputs.items():
        fill_tensor(outputs[name], value, raw)
    return response


_OUTCOMES = {
    Outcome.MATCHED: pb.MATCHED,
    Outcome.UNKNOWN: pb.UNKNOWN_ID,
    Outcome.EXPIRED: pb.EXPIRED,
    Outcome.DUPLICATE: pb.DUPLICATE,
    Outcome.INVALID: pb.INVALID,
}


def truth_to_array(t: pb.Tensor) -> np.ndarray:
    """A FeedbackItem's truth, [rows] or [rows, targets]: a numeric tensor, or
    STRING labels."""
    if t.dtype != pb.STRING:
        return tensor_to_array(t, TRUTH_RANKS)
    shape = tuple(t.shape)
    if not shape:
        raise InvalidInput("tensor shape is missing")
    count = check_shape(shape, TRUTH_RANKS)
    values = list(t.string_values)
    if len(values) != count:
        raise InvalidInput(f"tensor has {len(values)} values, shape {list(shape)} needs {count}")
    return np.asarray(values, dtype=object).reshape(shape)


def feedback_to_pb(results: list[tuple[int | None, ItemResult]]) -> pb.FeedbackResponse:
    response = pb.FeedbackResponse()
    counts = dict.fromkeys(Outcome, 0)
    for version, r in results:
        response.results.add(request_id=r.request_id, outcome=_OUTCOMES[r.outcome], version=version or 0,
                             message=r.message)  # fmt: skip
        counts[r.outcome] += 1
    response.matched, response.unknown, response.expired = (
        counts[Outcome.MATCHED], counts[Outcome.UNKNOWN], counts[Outcome.EXPIRED]
    )  # fmt: skip
    response.duplicate, response.invalid = counts[Outcome.DUPLICATE], counts[Outcome.INVALID]
    return response


def stream_ok(request: Any, response: pb.PredictResponse | bytes) -> pb.PredictStreamResponse | bytes:
    """A PredictStream answer around a response, serialized or not."""
    if isinstance(response, bytes):
        return _wire.stream_response(request_id_of(request), response)
    return pb.PredictStreamResponse(request_id=request_id_of(request), response=response)


def stream_error(request: Any, code: grpc.StatusCode, message: str) -> pb.PredictStreamResponse:
    return pb.PredictStreamResponse(request_id=request_id_of(request), error=pb.Error(code=code.value[0], message=message))


class PredictServicer(pb_grpc.PredictServiceServicer):
    """Converts, calls ScoringService, converts back (and observes, when metrics or
    tracing are on: see ``_telemetry``)."""

    def __init__(self, service: ScoringService, calls: Calls | None = None) -> None:
        self.service = service
        self._calls = calls or Calls()  # the server's: its streams end when it stops
        self._t_predict = RpcTelemetry(SERVICE, "Predict", service)
        self._t_stream = RpcTelemetry(SERVICE, "PredictStream", service)

    async def _predict(self, request: Any, deadline: float | None) -> pb.PredictResponse:
        core, raw = request_to_core(request, deadline)
        return response_to_pb(raw, await self.service.predict(core))

    async def _predict_wire(self, request: Any, deadline: float | None) -> pb.PredictResponse | bytes:
        """``_predict`` for the untraced, unmetered path: the response serialized by
        ``scorewire._wire`` straight from numeric outputs, a fraction of the cost of
        building the message."""
        core, raw = request_to_core(request, deadline)
        result = await self.service.predict(core)
        body = _wire.encode_response(result.model, result.version, result.request_id, result.outputs, raw)
        return response_to_pb(raw, result) if body is None else body

    async def _predict_traced(self, request: Any, deadline: float | None, span: Span) -> pb.PredictResponse:
        """``_predict`` with ``decode`` and ``encode`` spans under the request's ``span``."""
        with _tracing.child(span, "decode"):
            core, raw = request_to_core(request, deadline)
        if core.request_id:
            span.set_attribute(_tracing.REQUEST_ID, core.request_id)
        result = await self.service.predict(core, span)
        with _tracing.child(span, "encode"):
            return response_to_pb(raw, result)

    @unary
    @raw_request
    def Predict(self, data: bytes, context: grpc.aio.ServicerContext) -> Awaitable[pb.PredictResponse | bytes]:
        return serve_unary(
            data, context, self._t_predict, read_request,
            self._predict_wire, self._predict, self._predict_traced, labels_of, answered_by,
        )  # fmt: skip

    @unary
    async def Feedback(self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext) -> pb.FeedbackResponse:
        items: list[FeedbackItem] = []
        undecodable: dict[int, str] = {}  # a malformed truth tensor: INVALID for that item only
        for i, item in enumerate(request.items):
            try:
                items.append(FeedbackItem(item.request_id, truth_to_array(item.truth)))
            except InvalidInput as exc:
                undecodable[i] = exc.message
        routed = iter(await self.service.feedback(request.model, items))
        results = [
            (None, ItemResult(item.request_id, Outcome.INVALID, undecodable[i])) if i in undecodable else next(routed)
            for i, item in enumerate(request.items)
        ]
        return feedback_to_pb(results)

    @raw_request
    async def PredictStream(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        await serve_stream(
            context,
            self._calls,
            self._t_stream,
            read_request,
            self._predict if self._t_stream.metrics else self._predict_wire,  # metrics read the message
            self._predict_traced,
            labels_of,
            answered_by,
            stream_ok,
            stream_error,
        )


def signature_to_pb(sig: Signature) -> pb.Signature:
    return pb.Signature(
        input=pb.TensorInfo(name=sig.input.name, dtype=dtype_to_v1(sig.input.dtype), shape=sig.input.shape),
        outputs=[pb.TensorInfo(name=o.name, dtype=dtype_to_v1(o.dtype), shape=o.shape) for o in sig.outputs],
        feature_names=list(sig.feature_names or ()),
        task=sig.task,
        classes=[str(c) for c in (sig.classes or ())],
    )


def version_to_pb(mv: ModelVersion) -> pb.VersionInfo:
    info = pb.VersionInfo(version=mv.version, state=_STATES[mv.state], error=mv.error)
    if mv.model is not None:
        info.backend = mv.model.backend
        info.backend_reason = getattr(mv.model, "native_reason", "")
        info.signature.CopyFrom(signature_to_pb(mv.model.signature))
    return info


def entry_to_pb(entry: ModelEntry) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=entry.name,
        state=_STATES[entry.state],
        versions=[version_to_pb(entry.versions[v]) for v in sorted(entry.versions)],
        description=entry.config.description,
        error=entry.error,
        warnings=entry.warnings,
    )


def stats_to_pb(name: str, stats: list[VersionStats]) -> pb.ModelStats:
    out = pb.ModelStats(name=name)
    for st in stats:
        v = out.versions.add(version=st.version, state=pb.ModelState.Value(st.state))
        v.requests.count, v.requests.rows = st.requests, st.rows
        if st.latency is not None:
            lat = st.latency
            v.requests.latency_available = True
            v.requests.answered, v.requests.errors = lat.answered, lat.errors
            v.requests.latency_mean_s = lat.latency_mean_s
            v.requests.latency_p50_s, v.requests.latency_p99_s = lat.latency_p50_s, lat.latency_p99_s
        d = st.drift
        if d is not None:
            v.drift.available = True
            v.drift.features.extend(pb.FeaturePsi(name=n, psi=x) for n, x in zip(d.feature_names, d.psi, strict=True))
            v.drift.sampled_rows, v.drift.estimated_rows = d.sampled_rows, d.estimated_rows
            v.drift.window_s, v.drift.sample_every = d.window_s, d.sample_every
        v.drift.alert_threshold, v.drift.moderate_threshold = PSI_ALERT, PSI_MODERATE
        fb = st.feedback
        if fb is not None:
            v.feedback.CopyFrom(pb.FeedbackStats(
                task=fb.task, window_rows=fb.window_rows, accuracy=fb.accuracy, log_loss=fb.log_loss,
                roc_auc=fb.roc_auc, rmse=fb.rmse, mae=fb.mae, recorded=fb.recorded, pending=fb.pending,
                matched=fb.matched, matched_rows=fb.matched_rows, unknown=fb.unknown, expired=fb.expired,
                duplicate=fb.duplicate, invalid=fb.invalid,
            ))  # fmt: skip
    return out


class ModelServicer(pb_grpc.ModelServiceServicer):
    """The control plane: list, describe, load and unload models."""

    def __init__(self, service: ScoringService) -> None:
        self.service = service
        self.repository = service.repository

    @unary
    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        entries = sorted(self.repository.entries(), key=lambda e: e.name)
        return pb.ListModelsResponse(models=[entry_to_pb(e) for e in entries])

    @unary
    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return entry_to_pb(self.repository.entry(request.name))

    @unary
    async def LoadModel(self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return entry_to_pb(await self.service.load(request.name))

    @unary
    async def GetModelStats(self, request: pb.GetModelStatsRequest, context: grpc.aio.ServicerContext) -> pb.ModelStats:
        stats = await self.service.model_stats(request.name, request.version or None)
        return stats_to_pb(request.name, stats)

    @unary
    async def UnloadModel(self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext) -> pb.UnloadModelResponse:
        self.service.unload(request.name)
        return pb.UnloadModelResponse()
