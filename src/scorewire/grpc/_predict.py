"""scorewire.v1.PredictService and ModelService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc

from ..errors import InvalidInput, ModelLoadError
from ..observability import _tracing
from ..repository import ModelEntry, ModelVersion, State
from ..service import ScoringService
from ..types import PredictRequest, PredictResponse, Signature
from ._codec import dtype_to_v1, fill_tensor, tensor_to_array
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from ._handlers import UNPARSEABLE, UNPARSEABLE_MESSAGE, deadline_of, status_of, unary
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


def request_to_core(request: pb.PredictRequest, deadline: float | None) -> PredictRequest:
    return PredictRequest(
        model=request.model,
        inputs=tensor_to_array(request.input),
        version=request.version or None,
        outputs=tuple(request.outputs),
        request_id=request.request_id,
        deadline=deadline,
    )


class PredictServicer(pb_grpc.PredictServiceServicer):
    """Converts, calls ScoringService, converts back (and observes, when metrics or
    tracing are on: see ``_telemetry``)."""

    def __init__(self, service: ScoringService) -> None:
        self.service = service
        self._t_predict = RpcTelemetry(SERVICE, "Predict", service)
        self._t_stream = RpcTelemetry(SERVICE, "PredictStream", service)

    async def _predict(
        self, request: pb.PredictRequest, deadline: float | None, span: Span | None = None
    ) -> pb.PredictResponse:
        if span is None:
            result = await self.service.predict(request_to_core(request, deadline))
            return self._response(request, result)
        with _tracing.child(span, "decode"):
            core = request_to_core(request, deadline)
        if core.request_id:
            span.set_attribute(_tracing.REQUEST_ID, core.request_id)
        result = await self.service.predict(core, span)
        with _tracing.child(span, "encode"):
            return self._response(request, result)

    @staticmethod
    def _response(request: pb.PredictRequest, result: PredictResponse) -> pb.PredictResponse:
        raw = bool(request.input.raw)
        response = pb.PredictResponse(model=result.model, version=result.version, request_id=result.request_id)
        outputs = response.outputs
        for name, value in result.outputs.items():
            fill_tensor(outputs[name], value, raw)
        return response

    @unary
    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        t = self._t_predict
        if not t.active:
            return await self._predict(request, deadline_of(context))
        span = t.server_span(context)
        started = t.begin()
        try:
            response = await self._predict(request, deadline_of(context), span)
        except BaseException as exc:
            t.failed(exc, request.model, request.version, started, span)
            raise
        t.ok(response.model, response.version, started, span)
        return response

    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        deadline = deadline_of(context)
        t = self._t_stream
        stream = t.server_span(context)
        try:
            async for request in request_iterator:
                if request is UNPARSEABLE:
                    if t.active:
                        t.failed(InvalidInput(UNPARSEABLE_MESSAGE), "", None, t.begin(), None)
                    t.end_stream(stream, InvalidInput(UNPARSEABLE_MESSAGE))
                    stream = None
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNPARSEABLE_MESSAGE)
                observed = t.active
                started = t.begin() if observed else 0.0
                span = None if stream is None else t.message_span(stream)
                try:
                    response = await self._predict(request, deadline, span)
                except Exception as exc:  # one bad message: an error response, the stream goes on
                    code, message = status_of(exc)
                    if observed:
                        t.failed(exc, request.model, request.version, started, span)
                    yield pb.PredictStreamResponse(
                        request_id=request.request_id, error=pb.Error(code=code.value[0], message=message)
                    )
                except BaseException as exc:  # cancelled
                    if observed:
                        t.failed(exc, request.model, request.version, started, span)
                    raise
                else:
                    if observed:
                        t.ok(response.model, response.version, started, span)
                    yield pb.PredictStreamResponse(request_id=request.request_id, response=response)
        except BaseException as exc:
            t.end_stream(stream, exc)
            raise
        t.end_stream(stream)


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
    )


class ModelServicer(pb_grpc.ModelServiceServicer):
    """The control plane: list, describe, load and unload models."""

    def __init__(self, service: ScoringService, on_change: Callable[[str], None]) -> None:
        self.service = service
        self.repository = service.repository
        self._on_change = on_change

    @unary
    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        entries = sorted(self.repository.entries(), key=lambda e: e.name)
        return pb.ListModelsResponse(models=[entry_to_pb(e) for e in entries])

    @unary
    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return entry_to_pb(self.repository.entry(request.name))

    @unary
    async def LoadModel(self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        loop = asyncio.get_running_loop()
        entry = await loop.run_in_executor(None, self.repository.load, request.name)
        self._on_change(request.name)
        if entry.state is not State.READY:
            raise ModelLoadError(f"model {request.name!r} failed to load: {entry.load_error()}")
        return entry_to_pb(entry)

    @unary
    async def UnloadModel(self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext) -> pb.UnloadModelResponse:
        self.repository.unload(request.name)
        self._on_change(request.name)
        return pb.UnloadModelResponse()
