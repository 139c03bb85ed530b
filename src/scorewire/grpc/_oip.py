"""Open Inference Protocol v2 (``inference.GRPCInferenceService``).

Triton-compatible field numbers, so ``tritonclient[grpc]`` and KServe clients work
unchanged. Outputs are always returned as ``raw_output_contents`` (what Triton
does and what tritonclient's ``as_numpy`` reads); inputs may be raw or typed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from .. import __version__, _wire
from ..errors import InvalidInput, ScorewireError
from ..observability import _tracing
from ..repository import State
from ..service import ScoringService
from ..types import PredictRequest, PredictResponse
from ._calls import Calls
from ._codec import array_to_oip_raw, oip_datatype, oip_datatype_of, oip_input_to_array
from ._gen.inference import grpc_service_pb2 as oip
from ._gen.inference import grpc_service_pb2_grpc as oip_grpc
from ._handlers import raw_request, reader, serve_stream, serve_unary, unary
from ._telemetry import RpcTelemetry, version_of

if TYPE_CHECKING:
    from opentelemetry.trace import Span

SERVICE = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


PLATFORMS = {"native": "scorewire_native", "onnxruntime": "onnxruntime_onnx"}
EXTENSIONS = ["model_repository", "model_repository(unload_dependents)"]


def _version(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput("model_version must be a positive integer")
    return int(text)


def response_to_oip(request_id: str, result: PredictResponse) -> oip.ModelInferResponse:
    """The answer, every output as raw_output_contents (as Triton does)."""
    response = oip.ModelInferResponse(model_name=result.model, model_version=str(result.version), id=request_id)
    for out_name, value in result.outputs.items():
        response.outputs.add(name=out_name, datatype=oip_datatype_of(value), shape=value.shape)
        response.raw_output_contents.append(array_to_oip_raw(value))
    return response


#: a ModelInfer or ModelStreamInfer request as read from its bytes: the fields
#: ``_wire.decode_infer`` reads from the common message (model_name, model_version,
#: id, outputs, input name, X), else the parsed message, else UNPARSEABLE
read_request = reader(_wire.decode_infer, oip.ModelInferRequest)


def labels_of(request: Any) -> tuple[str, int | None]:
    """The (model, version) a request as read asks for (a label lookup key)."""
    if request.__class__ is tuple:
        return request[0], version_of(request[1])
    return request.model_name, version_of(request.model_version)


def answered_by(response: oip.ModelInferResponse) -> tuple[str, str]:
    """The (model, version) that answered."""
    return response.model_name, response.model_version


def id_of(request: Any) -> str:
    return request[2] if request.__class__ is tuple else request.id


def stream_ok(request: Any, response: oip.ModelInferResponse | bytes) -> Any:
    """A ModelStreamInfer answer around a response, serialized or not (its layout,
    a string then the response as fields 1 and 2, is PredictStreamResponse's)."""
    if isinstance(response, bytes):
        return _wire.stream_response("", response)
    return oip.ModelStreamInferResponse(infer_response=response)


def stream_error(request: Any, code: grpc.StatusCode, message: str) -> oip.ModelStreamInferResponse:
    return oip.ModelStreamInferResponse(error_message=message, infer_response=oip.ModelInferResponse(id=id_of(request)))


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """OIP v2 over the same ScoringService as scorewire.v1."""

    def __init__(
        self,
        service: ScoringService,
        is_ready: Callable[[], bool],
        calls: Calls | None = None,
    ) -> None:
        self.service = service
        self._calls = calls or Calls()  # the server's: its streams end when it stops
        self.repository = service.repository
        self._is_ready = is_ready
        self._t_infer = RpcTelemetry(SERVICE, "ModelInfer", service)
        self._t_stream = RpcTelemetry(SERVICE, "ModelStreamInfer", service)

    @unary
    async def ServerLive(self, request, context):
        return oip.ServerLiveResponse(live=True)

    @unary
    async def ServerReady(self, request, context):
        return oip.ServerReadyResponse(ready=self._is_ready())

    @unary
    async def ModelReady(self, request, context):
        # as Triton: an unknown, loading or failed model is "not ready", not an error
        try:
            self.service.resolve(request.name, _version(request.version))
        except ScorewireError:
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=True)

    @unary
    async def ServerMetadata(self, request, context):
        return oip.ServerMetadataResponse(name="scorewire", version=__version__, extensions=EXTENSIONS)

    @unary
    async def ModelMetadata(self, request, context):
        mv = self.service.resolve(request.name, _version(request.version))
        entry = self.repository.entry(request.name)
        assert mv.model is not None
        sig = mv.model.signature
        T = oip.ModelMetadataResponse.TensorMetadata
        return oip.ModelMetadataResponse(
            name=mv.name,
            versions=[str(v) for v in entry.ready_versions()],
            platform=PLATFORMS.get(mv.model.backend, mv.model.backend),
            inputs=[T(name=sig.input.name, datatype=oip_datatype(sig.input.dtype), shape=sig.input.shape)],
            outputs=[T(name=o.name, datatype=oip_datatype(o.dtype), shape=o.shape) for o in sig.outputs],
        )

    async def _infer(self, request: Any, deadline: float | None) -> oip.ModelInferResponse:
        result = await self.service.predict(self._to_core(request, deadline))
        return response_to_oip(id_of(request), result)

    async def _infer_wire(self, request: Any, deadline: float | None) -> oip.ModelInferResponse | bytes:
        """``_infer`` with the response serialized by ``scorewire._wire`` when its
        outputs are numeric arrays (the untraced, unmetered path)."""
        core = self._to_core(request, deadline)
        result = await self.service.predict(core)
        body = _wire.encode_infer_response(result.model, str(result.version), core.request_id, result.outputs)
        return response_to_oip(core.request_id, result) if body is None else body

    async def _infer_traced(self, request: Any, deadline: float | None, span: Span) -> oip.ModelInferResponse:
        """``_infer`` with ``decode`` and ``encode`` spans under the request's ``span``."""
        with _tracing.child(span, "decode"):
            core = self._to_core(request, deadline)
        if core.request_id:
            span.set_attribute(_tracing.REQUEST_ID, core.request_id)
        result = await self.service.predict(core, span)
        with _tracing.child(span, "encode"):
            return response_to_oip(core.request_id, result)

    def _to_core(self, request: Any, deadline: float | None) -> PredictRequest:
        """A request as read (see ``read_request``) as the core's, once its input's
        name is the model's."""
        if request.__class__ is tuple:
            model, version, request_id, outputs, input_name, X = request
        else:
            input_name, X = oip_input_to_array(request)
            model, version, request_id = request.model_name, request.model_version, request.id
            outputs = tuple(o.name for o in request.outputs)
        mv = self.service.resolve(model, _version(version))
        assert mv.model is not None
        expected = mv.model.signature.input.name
        if input_name != expected:
            raise InvalidInput(f"model {mv.name!r} has one input, named {expected!r}")
        return PredictRequest(model, X, mv.version, outputs, request_id, deadline)

    @unary
    @raw_request
    def ModelInfer(self, data: bytes, context: grpc.aio.ServicerContext) -> Awaitable[oip.ModelInferResponse | bytes]:
        return serve_unary(
            data, context, self._t_infer, read_request,
            self._infer_wire, self._infer, self._infer_traced, labels_of, answered_by,
        )  # fmt: skip

    @raw_request
    async def ModelStreamInfer(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        await serve_stream(
            context,
            self._calls,
            self._t_stream,
            read_request,
            self._infer if self._t_stream.metrics else self._infer_wire,  # metrics read the message
            self._infer_traced,
            labels_of,
            answered_by,
            stream_ok,
            stream_error,
        )

    @unary
    async def RepositoryIndex(self, request, context):
        out = oip.RepositoryIndexResponse()
        for entry in sorted(self.repository.entries(), key=lambda e: e.name):
            for v in sorted(entry.versions):
                mv = entry.versions[v]
                if request.ready and mv.state is not State.READY:
                    continue
                out.models.add(name=entry.name, version=str(v), state=mv.state.value, reason=mv.error)
            if not entry.versions and not request.ready:
                out.models.add(name=entry.name, state=entry.state.value, reason=entry.error)
        return out

    @unary
    async def RepositoryModelLoad(self, request, context):
        await self.service.load(request.model_name)
        return oip.RepositoryModelLoadResponse()

    @unary
    async def RepositoryModelUnload(self, request, context):
        self.service.unload(request.model_name)
        return oip.RepositoryModelUnloadResponse()
