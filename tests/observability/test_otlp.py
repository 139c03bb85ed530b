"""End to end over the real OTLP/gRPC exporter: ``scorewire serve --trace`` in a
subprocess exports to a small OTLP trace receiver started by the test, and the
client's trace id and span go on into scorewire's spans."""

from __future__ import annotations

import random
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from ..servers import server_process
from .helpers import wait_for

SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER


class Receiver(otlp_grpc.TraceServiceServicer):
    """An OTLP TraceService that keeps every span it is sent, with its resource."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[dict[str, str], trace_pb2.Span]] = []

    def Export(self, request: otlp.ExportTraceServiceRequest, context) -> otlp.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, s) for s in scope_spans.spans)
        return otlp.ExportTraceServiceResponse()

    def trace(self, trace_id: bytes) -> list[tuple[dict[str, str], trace_pb2.Span]]:
        with self.lock:
            return [(r, s) for r, s in self.spans if s.trace_id == trace_id]


@pytest.fixture
def receiver():
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    otlp_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.port = port
    yield servicer
    server.stop(0)


def attrs(span: trace_pb2.Span) -> dict:
    out = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind)
    return out


def test_client_trace_continues_into_scorewire_over_otlp(receiver):
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "scorewire-under-test",
    }
    trace_id, client_span = random.getrandbits(128) | 1, random.getrandbits(64) | 1
    traceparent = f"00-{trace_id:032x}-{client_span:016x}-01"
    with server_process("--trace", env=env) as server, grpc.insecure_channel(server.addr) as channel:
        # 1. a client in a sampled trace calls Predict (native) and ModelInfer (batched ONNX)
        X = np.zeros((2, 30))
        request = pb.PredictRequest(model="breast-cancer", input=array_to_tensor(X, raw=True), request_id="e2e")
        response = pb_grpc.PredictServiceStub(channel).Predict(
            request, metadata=(("traceparent", traceparent),), timeout=10
        )
        assert response.model == "breast-cancer"
        infer = oip.ModelInferRequest(model_name="iris-forest", id="e2e-oip")
        infer.inputs.add(name="input", datatype="FP32", shape=[1, 4])
        infer.raw_input_contents.append(np.asarray([[5.1, 3.5, 1.4, 0.2]], np.float32).tobytes())
        oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            infer, metadata=(("traceparent", traceparent),), timeout=10
        )

        # 2. the spans reach the receiver over OTLP/gRPC
        tid = trace_id.to_bytes(16, "big")
        wanted = {"decode", "score", "encode", "queue", "batch"}

        def arrived():
            got = receiver.trace(tid)
            names = {s.name for _, s in got}
            servers = [s for _, s in got if s.kind == SERVER]
            return got if wanted <= names and len(servers) == 2 else None

        spans = wait_for(arrived, 30, "the spans of the client's trace at the OTLP receiver")

    # 3. both server spans are children of the client's span, in the client's trace
    resource = spans[0][0]
    assert resource["service.name"] == "scorewire-under-test"
    servers = {s.name: s for _, s in spans if s.kind == SERVER}
    assert set(servers) == {"scorewire.v1.PredictService/Predict", "inference.GRPCInferenceService/ModelInfer"}
    for s in servers.values():
        assert s.trace_id == tid
        assert s.parent_span_id == client_span.to_bytes(8, "big")
        assert attrs(s)["rpc.grpc.status_code"] == 0
    predict = servers["scorewire.v1.PredictService/Predict"]
    assert attrs(predict)["scorewire.model"] == "breast-cancer" and attrs(predict)["scorewire.rows"] == 2
    # 4. decode, score and encode are children of the server span that did them
    by_parent: dict[bytes, list[str]] = {}
    for _, s in spans:
        by_parent.setdefault(s.parent_span_id, []).append(s.name)
    assert sorted(by_parent[predict.span_id]) == ["decode", "encode", "score"]
    model_infer = servers["inference.GRPCInferenceService/ModelInfer"]
    assert sorted(by_parent[model_infer.span_id]) == ["batch", "decode", "encode", "queue", "score"]
    batch = next(s for _, s in spans if s.name == "batch")
    assert [link.span_id for link in batch.links] == [model_infer.span_id]
