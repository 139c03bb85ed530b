"""A do-nothing reference server: the floor of what gRPC in Python costs per request.

It implements the same wire API as scorewire — ``scorewire.v1.PredictService``
(``Predict``, ``PredictStream``) and OIP v2 ``inference.GRPCInferenceService/ModelInfer``
— on a grpc.aio server built with the same options as ``scorewire serve`` (message
limits, ``grpc.so_reuseport`` 0, ``grpc.max_pending_requests``,
``maximum_concurrent_rpcs``; see ``scorewire/grpc/server.py``), one process, the
default asyncio event loop. It does no work: the request is parsed by grpc (as in
scorewire), and the answer is a precomputed response.

The response has the shape of scorewire's answer for the same request, so both
servers put the same bytes on the wire: outputs ``probabilities`` (rows x 2),
``label`` (rows) and ``decision`` (rows x 1) — a binary classifier such as the demo's
``breast-cancer`` — or, for ``iris-forest``, ``probabilities`` (rows x 3, float32)
and ``label``; raw bytes when the request was raw, typed values when it was typed.
Each distinct (model, rows, encoding) gets its response built once, on first sight,
and reused from then on.

    .venv/bin/python bench/noop_server.py --port 0
    noop serving on 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

#: model → (number of classes, probability dtype, has a decision output)
OUTPUT_SHAPES: dict[str, tuple[int, str, bool]] = {"iris-forest": (3, "float32", False)}
DEFAULT_OUTPUT = (2, "float64", True)  # a binary logistic model, like breast-cancer

_V1_DTYPE = {"float32": pb.FLOAT32, "float64": pb.FLOAT64, "int64": pb.INT64}
_V1_FIELD = {"float32": "float_values", "float64": "double_values", "int64": "int64_values"}
_OIP_DTYPE = {"float32": "FP32", "float64": "FP64", "int64": "INT64"}


def fake_outputs(model: str, rows: int) -> dict[str, np.ndarray]:
    """Zero-valued outputs shaped like scorewire's answer for ``rows`` rows."""
    classes, dtype, decision = OUTPUT_SHAPES.get(model, DEFAULT_OUTPUT)
    out = {
        "probabilities": np.zeros((rows, classes), dtype=dtype),
        "label": np.zeros(rows, dtype="int64"),
    }
    if decision:
        out["decision"] = np.zeros((rows, 1), dtype="float64")
    return out


def v1_response(model: str, rows: int, raw: bool) -> pb.PredictResponse:
    response = pb.PredictResponse(model=model, version=1)
    for name, value in fake_outputs(model, rows).items():
        tensor = response.outputs[name]
        tensor.dtype = _V1_DTYPE[value.dtype.name]
        tensor.shape.extend(value.shape)
        if raw:
            tensor.raw = value.astype(value.dtype.newbyteorder("<")).tobytes()
        else:
            getattr(tensor, _V1_FIELD[value.dtype.name]).extend(value.ravel().tolist())
    return response


def oip_response(model: str, rows: int) -> oip.ModelInferResponse:
    response = oip.ModelInferResponse(model_name=model, model_version="1")
    for name, value in fake_outputs(model, rows).items():
        response.outputs.add(name=name, datatype=_OIP_DTYPE[value.dtype.name], shape=value.shape)
        response.raw_output_contents.append(value.astype(value.dtype.newbyteorder("<")).tobytes())
    return response


def _rows(shape: Any) -> int:
    return int(shape[0]) if len(shape) else 0


class NoopPredict(pb_grpc.PredictServiceServicer):
    """Predict: a cached response; PredictStream: a cached response per message,
    wrapped with the message's request id."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, bool], pb.PredictResponse] = {}

    def _response(self, request: pb.PredictRequest) -> pb.PredictResponse:
        key = (request.model, _rows(request.input.shape), bool(request.input.raw))
        response = self._cache.get(key)
        if response is None:
            response = self._cache[key] = v1_response(*key)
        return response

    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        return self._response(request)

    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        async for request in request_iterator:
            yield pb.PredictStreamResponse(request_id=request.request_id, response=self._response(request))


class NoopInference(oip_grpc.GRPCInferenceServiceServicer):
    """ModelInfer: a cached response per (model, rows)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], oip.ModelInferResponse] = {}

    async def ModelInfer(self, request: oip.ModelInferRequest, context: grpc.aio.ServicerContext) -> oip.ModelInferResponse:
        key = (request.model_name, _rows(request.inputs[0].shape) if request.inputs else 0)
        response = self._cache.get(key)
        if response is None:
            response = self._cache[key] = oip_response(*key)
        return response


async def serve(host: str, port: int, max_message_mb: int, max_concurrent_rpcs: int) -> None:
    mb = max_message_mb * 1024 * 1024
    # NOTE: the same options as scorewire.grpc.server.Server.start
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", mb),
            ("grpc.max_send_message_length", mb),
            ("grpc.so_reuseport", 0),
            ("grpc.max_pending_requests", 4 * max_concurrent_rpcs + 1024),
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    pb_grpc.add_PredictServiceServicer_to_server(NoopPredict(), server)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(NoopInference(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"noop serving on {host}:{bound}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50052, help="0 picks a free port")
    parser.add_argument("--max-message-mb", type=int, default=64, help="as scorewire's default")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=256, help="as scorewire's default")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.max_message_mb, args.max_concurrent_rpcs))


if __name__ == "__main__":
    main()
