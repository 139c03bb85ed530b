"""scorewire.v1.PredictService and ModelService (with Feedback and GetModelStats:
see scorewire.monitoring)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING

import grpc
import numpy as np

from ..errors import DeadlineExceeded, InvalidInput
from ..monitoring.drift import PSI_ALERT, PSI_MODERATE
from ..monitoring.feedback import FeedbackItem, ItemResult, Outcome
from ..monitoring.monitor import VersionStats
from ..repository import ModelEntry, ModelVersion, State
from ..service import ScoringService
from ..types import PredictRequest, PredictResponse, Signature, TensorSpec
from . import _wire
from ._calls import Calls
from ._codec import (
    TRUTH_RANKS,
    check_shape,
    dtype_to_v1,
    fill_tensor,
    named_tensors_to_arrays,
    tensor_to_array,
)
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from ._handlers import deadline_of, raw_request, unary
from ._peers import ANSWERED_BY, REPLICA, Forwarder, Hop
from ._scoring import Adapter, serve_stream, serve_unary
from ._telemetry import RpcTelemetry
from ._wire import Request

if TYPE_CHECKING:
    pass

SERVICE = pb.DESCRIPTOR.services_by_name["PredictService"].full_name


_STATES = {
    State.LOADING: pb.LOADING,
    State.READY: pb.READY,
    State.FAILED: pb.FAILED,
    State.UNLOADED: pb.UNLOADED,
}


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


class V1(Adapter):
    """scorewire.v1's Predict and PredictStream (see ``_scoring``)."""

    def __init__(self, service: ScoringService) -> None:
        super().__init__(service, _wire.decode_predict, pb.PredictRequest)

    def from_message(self, message: pb.PredictRequest) -> Request:
        """A request with its ``input`` (a matrix for a tabular model, any rank for
        another), or its ``inputs`` by name (any rank: the core checks them)."""
        X: np.ndarray | dict[str, np.ndarray] | None = None
        error = None
        named = message.inputs
        raw = any(n.tensor.raw for n in named) if named else bool(message.input.raw)
        try:
            if not named:
                X = tensor_to_array(message.input, self.input_ranks(message.model, message.version or None))
            elif message.HasField("input"):
                raise InvalidInput("the request sets both input and inputs; set one")
            else:
                X = named_tensors_to_arrays(named)
        except InvalidInput as exc:  # raised when the request is answered, under its model
            error = exc
        return Request(message.model, message.version, message.request_id, tuple(message.outputs), "", X,
                       raw, error)  # fmt: skip

    def to_core(self, request: Request, deadline: float | None, key: str = "") -> PredictRequest:
        if request.error is not None:
            raise request.error
        return PredictRequest(request.model, request.X, request.version or None, request.outputs,
                              request.request_id, deadline, key)  # fmt: skip

    def encode(self, request: Request, result: PredictResponse) -> pb.PredictResponse:
        return response_to_pb(request.raw, result)

    def encode_wire(self, request: Request, result: PredictResponse) -> bytes | None:
        return _wire.encode_response(result.model, result.version, result.request_id, result.outputs, request.raw)

    def labels(self, request: Request) -> tuple[str, int]:
        return request.model, request.version

    def answered(self, response: pb.PredictResponse) -> tuple[str, int]:
        return response.model, response.version

    def stream_ok(self, request: Request, response: pb.PredictResponse | bytes) -> pb.PredictStreamResponse | bytes:
        if isinstance(response, bytes):
            return _wire.stream_response(request.request_id, response)
        return pb.PredictStreamResponse(request_id=request.request_id, response=response)

    def stream_error(self, request: Request, code: grpc.StatusCode, message: str) -> pb.PredictStreamResponse:
        return pb.PredictStreamResponse(request_id=request.request_id, error=pb.Error(code=code.value[0], message=message))


class PredictServicer(pb_grpc.PredictServiceServicer):
    """Predict and PredictStream through the V1 adapter; Feedback."""

    def __init__(self, service: ScoringService, calls: Calls | None = None, peers: Forwarder | None = None) -> None:
        self.service = service
        self._calls = calls or Calls()  # the server's: its streams end when it stops
        #: asks other workers and replicas about feedback this process cannot join (None: nobody)
        self._peers = peers
        self._v1 = V1(service)
        self._t_predict = RpcTelemetry(SERVICE, "Predict", service)
        self._t_stream = RpcTelemetry(SERVICE, "PredictStream", service)

    @unary
    @raw_request
    def Predict(self, data: bytes, context: grpc.aio.ServicerContext) -> Awaitable[pb.PredictResponse | bytes]:
        return serve_unary(data, context, self._t_predict, self._v1)

    @unary
    async def Feedback(self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext) -> pb.FeedbackResponse:
        """Join what this process can; with a forwarder, ask the other workers and
        replicas for the rest (see ``_peers``) and count as unknown what nobody knew."""
        peers = self._peers
        hop = Hop.of(context.invocation_metadata())
        if hop.scope is not None:  # forwarded by another process: it counts what nobody knows
            if peers is not None:
                await context.send_initial_metadata(((ANSWERED_BY, peers.replica_id),))
                if hop.scope == REPLICA and hop.origin == peers.replica_id:
                    return pb.FeedbackResponse()  # back where it came from: it has looked here already
            if hop.deadline is not None and time.time() >= hop.deadline:
                raise DeadlineExceeded("the forwarding process no longer waits for this answer")
        positions: list[int] = []  # of the decodable items, in request.items
        items: list[FeedbackItem] = []
        undecodable: dict[int, str] = {}  # a malformed truth tensor: INVALID for that item only
        for i, item in enumerate(request.items):
            try:
                items.append(FeedbackItem(item.request_id, truth_to_array(item.truth)))
                positions.append(i)
            except InvalidInput as exc:
                undecodable[i] = exc.message
        forwards = peers is not None and peers.forwards(hop)
        origin = hop.scope is None
        routed = await self.service.feedback(request.model, items, count_unknown=origin and not forwards)
        if forwards:
            assert peers is not None
            unknown = [k for k, (_, r) in enumerate(routed) if r.outcome is Outcome.UNKNOWN and r.request_id]
            if unknown:
                asked = [request.items[positions[k]] for k in unknown]
                for j, answer in (await peers.ask(request.model, asked, hop, deadline_of(context))).items():
                    routed[unknown[j]] = answer
            if origin:  # what nobody knew is counted here, once (and joined, if it has arrived meanwhile)
                still = [k for k, (_, r) in enumerate(routed) if r.outcome is Outcome.UNKNOWN]
                if still:
                    again = await self.service.feedback(request.model, [items[k] for k in still])
                    for k, answer in zip(still, again, strict=True):
                        routed[k] = answer
        answers = iter(routed)
        results = [
            (None, ItemResult(item.request_id, Outcome.INVALID, undecodable[i])) if i in undecodable else next(answers)
            for i, item in enumerate(request.items)
        ]
        return feedback_to_pb(results)

    @raw_request
    async def PredictStream(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        await serve_stream(context, self._calls, self._t_stream, self._v1)


def tensor_info(spec: TensorSpec) -> pb.TensorInfo:
    return pb.TensorInfo(name=spec.name, dtype=dtype_to_v1(spec.dtype), shape=spec.shape, role=spec.role,
                         dim_names=spec.dim_names)  # fmt: skip


def signature_to_pb(sig: Signature) -> pb.Signature:
    return pb.Signature(
        input=tensor_info(sig.input),
        outputs=[tensor_info(o) for o in sig.outputs],
        feature_names=list(sig.feature_names or ()),
        task=sig.task,
        classes=[str(c) for c in (sig.classes or ())],
        explanation_baseline=sig.explanation_baseline,
        inputs=[tensor_info(i) for i in sig.inputs],
        tabular=sig.tabular,
        batched=sig.batched,
    )


def version_to_pb(mv: ModelVersion, share: float = 0.0, shadow: bool = False) -> pb.VersionInfo:
    info = pb.VersionInfo(version=mv.version, state=_STATES[mv.state], error=mv.error, traffic_share=share,
                          shadow=shadow)  # fmt: skip
    if mv.model is not None:
        info.backend = mv.model.backend
        info.backend_reason = mv.model.native_reason
        info.signature.CopyFrom(signature_to_pb(mv.model.signature))
    return info


def entry_to_pb(entry: ModelEntry) -> pb.ModelInfo:
    traffic = entry.config.traffic
    shares = entry.shares()
    info = pb.ModelInfo(
        name=entry.name,
        state=_STATES[entry.state],
        versions=[version_to_pb(entry.versions[v], shares.get(v, 0.0), v == traffic.shadow) for v in sorted(entry.versions)],
        description=entry.config.description,
        error=entry.error,
        warnings=entry.warnings,
    )
    if traffic.configured:
        info.traffic.CopyFrom(pb.TrafficSplit(
            weights=[pb.VersionWeight(version=v, weight=w) for v, w in traffic.split],
            key_header=traffic.key_header, shadow_version=traffic.shadow or 0,
            shadow_fraction=traffic.shadow_fraction if traffic.shadow is not None else 0.0,
        ))  # fmt: skip
    return info


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
        else:
            v.drift.reason = st.drift_reason
        v.drift.alert_threshold, v.drift.moderate_threshold = PSI_ALERT, PSI_MODERATE
        fb = st.feedback
        if fb is not None:
            v.feedback.CopyFrom(pb.FeedbackStats(
                task=fb.task, window_rows=fb.window_rows, accuracy=fb.accuracy, log_loss=fb.log_loss,
                roc_auc=fb.roc_auc, rmse=fb.rmse, mae=fb.mae, recorded=fb.recorded, pending=fb.pending,
                matched=fb.matched, matched_rows=fb.matched_rows, unknown=fb.unknown, expired=fb.expired,
                duplicate=fb.duplicate, invalid=fb.invalid,
            ))  # fmt: skip
        for sh in st.shadow:
            v.shadow.add(
                serving_version=sh.serving_version, mirrored=sh.mirrored, dropped=sh.dropped, compared=sh.compared,
                compared_rows=sh.compared_rows, failed=sh.failed,
                outputs=[pb.OutputDisagreement(
                    name=o.name, kind=o.kind, rows=o.rows, differing_rows=o.differing_rows,
                    differing_share=o.differing_share, values=o.values, mean_abs_diff=o.mean_abs_diff,
                    max_abs_diff=o.abs_diff_max,
                ) for o in sh.outputs],
            )  # fmt: skip
    return out


class ModelServicer(pb_grpc.ModelServiceServicer):
    """The control plane: list, describe, load and unload models."""

    def __init__(self, service: ScoringService) -> None:
        self.service = service

    @unary
    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        entries = self.service.models()
        return pb.ListModelsResponse(models=[entry_to_pb(e) for e in entries])

    @unary
    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return entry_to_pb(self.service.model(request.name))

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
