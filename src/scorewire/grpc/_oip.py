"""Open Inference Protocol v2 (``inference.GRPCInferenceService``).

Triton-compatible field numbers, so ``tritonclient[grpc]`` and KServe clients work
unchanged. Outputs are always returned as ``raw_output_contents`` (what Triton
does and what tritonclient's ``as_numpy`` reads); inputs may be raw or typed.

Triton's own extensions (see ``_triton``) are served too: ModelConfig,
ModelStatistics and the ``classification`` parameter of a requested output — what
Triton's perf_analyzer and clients that read class names need. The RPCs of the
extensions scorewire has not (shared memory, trace and log settings) answer
UNIMPLEMENTED, saying what to do instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np

from .. import __version__
from ..errors import InvalidInput, ScorewireError
from ..repository import State
from ..service import ScoringService
from ..types import PredictRequest, PredictResponse
from . import _wire
from ._calls import Calls
from ._codec import (
    array_to_oip_raw,
    oip_datatype,
    oip_datatype_of,
    oip_input_to_array,
    oip_inputs_to_arrays,
)
from ._gen.inference import grpc_service_pb2 as oip
from ._gen.inference import grpc_service_pb2_grpc as oip_grpc
from ._handlers import raw_request, unary
from ._scoring import Adapter, serve_stream, serve_unary
from ._telemetry import RpcTelemetry, version_of
from ._triton import (
    NO_SHARED_MEMORY,
    PLATFORMS,
    ClassifiedRequest,
    class_labels,
    classify,
    model_config,
    model_statistics,
    requested_classification,
)
from ._wire import Request

SERVICE = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

#: the extensions ServerMetadata lists: exactly those served
EXTENSIONS = [
    "classification",
    "model_configuration",
    "model_repository",
    "model_repository(unload_dependents)",
    "statistics",
]

#: what the RPCs of the extensions scorewire has not answer (UNIMPLEMENTED)
NO_CUDA = "CUDA shared memory is not implemented: scorewire scores on the CPU; send tensors in the request"
NO_TRACE_SETTINGS = (
    "trace settings are not implemented: scorewire traces with OpenTelemetry, configured when it starts "
    "(--trace and the OTEL_* environment variables)"
)
NO_LOG_SETTINGS = "log settings are not implemented: set the log level when the server starts (--log-level)"


def _version(text: str) -> int | None:
    if not text:
        return None
    version = version_of(text)
    if version is None or version < 1:
        raise InvalidInput("model_version must be a positive integer (ASCII digits, at most 18)")
    return version


#: an OIP input without a name: never the model's input's (a name is required)
_UNNAMED = "\0"


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
        """A request with its one input (a matrix for a tabular model, any rank for
        another), or its several inputs by name (any rank: the core checks them)."""
        name, error = "", None
        X: np.ndarray | dict[str, np.ndarray] | None = None
        try:
            if len(message.inputs) > 1:
                X = oip_inputs_to_arrays(message)
            else:
                ranks = self.input_ranks(message.model_name, version_of(message.model_version))
                name, X = oip_input_to_array(message, ranks)
        except InvalidInput as exc:  # raised when the request is answered, under its model
            error = exc
        outputs = tuple(o.name for o in message.outputs)
        try:
            classification = requested_classification(message)
        except InvalidInput as exc:  # before the input's: shared memory is why an input is empty
            classification, error = {}, exc
        if not classification:
            return Request(message.model_name, message.model_version, message.id, outputs, name, X, False, error)
        request = ClassifiedRequest(message.model_name, message.model_version, message.id, outputs, name, X, False, error)
        request.classification = classification
        return request

    def to_core(self, request: Request, deadline: float | None, key: str = "") -> PredictRequest:
        """The core's request: one input (the core checks its name against the model's
        version that answers it, and gives it by name to a model that is not
        tabular), or several by name."""
        if request.error is not None:
            raise request.error
        return PredictRequest(request.model, request.X, _version(request.version), request.outputs, request.request_id,
                              deadline, key, request.input_name or _UNNAMED)  # fmt: skip

    def encode(self, request: Request, result: PredictResponse) -> oip.ModelInferResponse:
        if isinstance(request, ClassifiedRequest):
            outputs = dict(result.outputs)
            classes = self._classes_of(result.model, result.version)
            for name, k in request.classification.items():
                outputs[name] = classify(outputs[name], k, classes)
            result = PredictResponse(result.model, result.version, outputs, result.request_id)
        return response_to_oip(request.request_id, result)

    def _classes_of(self, model: str, version: int) -> tuple[str, ...] | None:
        """The class labels of the version that answered, for classification (None,
        and indices alone, if it was unloaded since it answered)."""
        try:
            mv = self.service.model(model).versions.get(version)
        except ScorewireError:
            return None
        return None if mv is None or mv.model is None else class_labels(mv.model.signature)

    def encode_wire(self, request: Request, result: PredictResponse) -> bytes | None:
        if isinstance(request, ClassifiedRequest):  # BYTES outputs: encode() writes them
            return None
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


def _unimplemented(message: str) -> Callable[..., Awaitable[Any]]:
    """A servicer method that answers UNIMPLEMENTED with ``message``."""

    @unary
    async def method(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return method


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
            inputs=[T(name=i.name, datatype=oip_datatype(i.dtype), shape=i.shape) for i in sig.inputs],
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
    async def ModelConfig(self, request, context):
        mv = self.service.resolve(request.name, _version(request.version))
        return oip.ModelConfigResponse(config=model_config(mv, self.service.row_limit(mv)))

    @unary
    async def ModelStatistics(self, request, context):
        if request.version and not request.name:
            raise InvalidInput("ModelStatistics: a version needs a model name")
        stats = self.service.statistics(request.name, _version(request.version))
        return oip.ModelStatisticsResponse(model_stats=[model_statistics(mv, s) for mv, s in stats])

    # Triton's RPCs for what scorewire does not do: UNIMPLEMENTED, saying what to do instead
    SystemSharedMemoryStatus = _unimplemented(NO_SHARED_MEMORY)
    SystemSharedMemoryRegister = _unimplemented(NO_SHARED_MEMORY)
    SystemSharedMemoryUnregister = _unimplemented(NO_SHARED_MEMORY)
    CudaSharedMemoryStatus = _unimplemented(NO_CUDA)
    CudaSharedMemoryRegister = _unimplemented(NO_CUDA)
    CudaSharedMemoryUnregister = _unimplemented(NO_CUDA)
    TraceSetting = _unimplemented(NO_TRACE_SETTINGS)
    LogSettings = _unimplemented(NO_LOG_SETTINGS)

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
