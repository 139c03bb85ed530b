"""Open Inference Protocol v2 (``inference.GRPCInferenceService``).

Triton-compatible field numbers, so ``tritonclient[grpc]`` and KServe clients work
unchanged. Outputs are always returned as ``raw_output_contents`` (what Triton
does and what tritonclient's ``as_numpy`` reads); inputs may be raw or typed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from .. import __version__
from ..errors import InvalidInput, ScorewireError
from ..repository import State
from ..service import ScoringService
from ..types import PredictRequest, PredictResponse
from . import _wire
from ._calls import Calls
from ._codec import array_to_oip_raw, oip_datatype, oip_datatype_of, oip_input_to_array
from ._gen.inference import grpc_service_pb2 as oip
from ._gen.inference import grpc_service_pb2_grpc as oip_grpc
from ._handlers import raw_request, unary
from ._scoring import Adapter, serve_stream, serve_unary
from ._telemetry import RpcTelemetry, version_of
from ._wire import Request

if TYPE_CHECKING:
    pass

SERVICE = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


PLATFORMS = {"native": "scorewire_native", "onnxruntime": "onnxruntime_onnx", "ensemble": "ensemble"}
EXTENSIONS = ["model_repository", "model_repository(unload_dependents)"]


def _version(text: str) -> int | None:
    if not text:
        return None
    version = version_of(text)
    if version is None or version < 1:
        raise InvalidInput("model_version must be a positive integer (ASCII digits, at most 18)")
    return version


def response_to_oip(request_id: str, result: PredictResponse) -> oip.ModelInferResponse:
    """The answer, every output as raw_output_contents (as Triton does)."""
    response = oip.ModelInferResponse(model_name=result.model, model_version=str(result.version), id=request_id)
    for out_name, value in result.outputs.items():
        response.outputs.add(name=out_name, datatype=oip_datatype_of(value), shape=value.shape)
        response.raw_output_contents.append(array_to_oip_raw(value))
    return response


class OIP(Adapter):
    """The Open Inference Protocol's ModelInfer and ModelStreamInfer (see
    ``_scoring``): outputs always as raw_output_contents."""

    def __init__(self, service: ScoringService) -> None:
        super().__init__(service, _wire.decode_infer, oip.ModelInferRequest)

    def from_message(self, message: oip.ModelInferRequest) -> Request:
        name, X, error = "", None, None
        try:
            name, X = oip_input_to_array(message)
        except InvalidInput as exc:  # raised when the request is answered, under its model
            error = exc
        outputs = tuple(o.name for o in message.outputs)
        return Request(message.model_name, message.model_version, message.id, outputs, name, X, False, error)

    def to_core(self, request: Request, deadline: float | None) -> PredictRequest:
        """The core's request, once the input's name is the model's."""
        if request.error is not None:
            raise request.error
        mv = self.service.resolve(request.model, _version(request.version))
        assert mv.model is not None
        expected = mv.model.signature.input.name
        if request.input_name != expected:
            raise InvalidInput(f"model {mv.name!r} has one input, named {expected!r}")
        return PredictRequest(request.model, request.X, mv.version, request.outputs, request.request_id, deadline)

    def encode(self, request: Request, result: PredictResponse) -> oip.ModelInferResponse:
        return response_to_oip(request.request_id, result)

    def encode_wire(self, request: Request, result: PredictResponse) -> bytes | None:
        return _wire.encode_infer_response(result.model, str(result.version), request.request_id, result.outputs)

    def labels(self, request: Request) -> tuple[str, int | None]:
        return request.model, version_of(request.version)

    def answered(self, response: oip.ModelInferResponse) -> tuple[str, str]:
        return response.model_name, response.model_version

    def stream_ok(self, request: Request, response: oip.ModelInferResponse | bytes) -> Any:
        """An answer around a response, serialized or not (ModelStreamInferResponse's
        layout, a string then the response as fields 1 and 2, is
        PredictStreamResponse's)."""
        if isinstance(response, bytes):
            return _wire.stream_response("", response)
        return oip.ModelStreamInferResponse(infer_response=response)

    def stream_error(self, request: Request, code: grpc.StatusCode, message: str) -> oip.ModelStreamInferResponse:
        return oip.ModelStreamInferResponse(
            error_message=message, infer_response=oip.ModelInferResponse(id=request.request_id)
        )


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
        self._is_ready = is_ready
        self._oip = OIP(service)
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
        entry = self.service.model(request.name)
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

    @unary
    @raw_request
    def ModelInfer(self, data: bytes, context: grpc.aio.ServicerContext) -> Awaitable[oip.ModelInferResponse | bytes]:
        return serve_unary(data, context, self._t_infer, self._oip)

    @raw_request
    async def ModelStreamInfer(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        await serve_stream(context, self._calls, self._t_stream, self._oip)

    @unary
    async def RepositoryIndex(self, request, context):
        out = oip.RepositoryIndexResponse()
        for entry in self.service.models():
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
