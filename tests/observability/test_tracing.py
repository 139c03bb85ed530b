"""Spans of every scoring RPC and error path, captured in memory from a real server.

The server runs in this process with scorewire's own tracer provider (as --trace
builds it, sampling every trace) and a synchronous in-memory exporter; each test
sends its own W3C traceparent and reads back the spans of that trace.
"""

from __future__ import annotations

import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import scorewire
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.observability import tracing as _tracing
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..servers import InProcessServer
from .helpers import wait_for

PREDICT = "scorewire.v1.PredictService/Predict"
STREAM = "scorewire.v1.PredictService/PredictStream"
INFER = "inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "inference.GRPCInferenceService/ModelStreamInfer"


class GatedModel:
    """Answers once the test opens its gate (holds a call as long as a test needs)."""

    backend, native_reason = "native", ""

    def __init__(self, inner) -> None:
        self.inner, self.signature, self.output_names = inner, inner.signature, inner.output_names
        self.gate = threading.Event()

    def predict(self, X, outputs=None):
        if not self.gate.wait(60):
            raise RuntimeError("the test never opened the gate")
        return self.inner.predict(X, outputs)


class BrokenModel:
    backend, native_reason = "native", ""

    def __init__(self, inner) -> None:
        self.signature, self.output_names = inner.signature, inner.output_names

    def predict(self, X, outputs=None):
        raise RuntimeError("a bug in the model")


@pytest.fixture(scope="module")
def exporter(monkeypatch_module):
    """scorewire's provider for --trace at ratio 1 (every trace), spans kept in memory."""
    monkeypatch_module.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch_module.setenv("OTEL_TRACES_SAMPLER_ARG", "1")
    monkeypatch_module.delenv("OTEL_TRACES_SAMPLER", raising=False)
    provider, fast_bound = _tracing.provider_from_environ()
    assert fast_bound is not None  # the fast sampling path is the one under test
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _tracing.use(provider, fast_bound)
    yield memory
    _tracing.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def server(exporter, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    demo = scorewire.demo_repository()
    for name in ("breast-cancer", "iris-forest", "wine"):
        shutil.copytree(demo / name, root / name)
    # batches of exactly two requests: the first waits for the second (for up to a
    # day: only the second request, or the server's stop, ends the wait)
    shutil.copytree(demo / "iris-forest", root / "iris-pair")
    (root / "iris-pair" / "model.toml").write_text(
        "[batching]\nenabled = true\nmax_batch_rows = 2\nmax_delay_us = 86400000000\n"
    )
    repo = ModelRepository(root, n_threads=1)
    srv = InProcessServer(Settings(port=0, offload_min_values=1), repo)
    repo.add_model("broken", BrokenModel(repo.resolve("wine").model))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


@pytest.fixture(scope="module")
def predict(channel):
    return pb_grpc.PredictServiceStub(channel)


@pytest.fixture(scope="module")
def infer(channel):
    return oip_grpc.GRPCInferenceServiceStub(channel)


def client_context(sampled: bool = True) -> tuple[int, int, tuple[tuple[str, str], ...]]:
    """A client's trace id, span id, and the metadata that carries them."""
    trace_id, span_id = random.getrandbits(128) | 1, random.getrandbits(64) | 1
    header = f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
    return trace_id, span_id, (("traceparent", header),)


def spans_of(exporter, trace_id: int, server_spans: int = 1, timeout: float = 10.0) -> list:
    """The finished spans of one trace, once its server spans have ended."""

    def done():
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        return spans if sum(s.kind is SpanKind.SERVER for s in spans) >= server_spans else None

    return wait_for(done, timeout, f"{server_spans} server span(s) of trace {trace_id:032x}")


def one(spans, name: str):
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def children(spans, parent) -> list[str]:
    """Names of parent's children, in start order."""
    kids = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return [s.name for s in sorted(kids, key=lambda s: s.start_time)]


def v1_request(model: str = "breast-cancer", rows: int = 3, features: int = 30, **kw) -> pb.PredictRequest:
    X = np.random.default_rng(rows).normal(size=(rows, features))
    return pb.PredictRequest(model=model, input=array_to_tensor(X, raw=True), **kw)


def oip_request(model: str = "iris-forest", rows: int = 2, **kw) -> oip.ModelInferRequest:
    X = np.random.default_rng(rows).normal(size=(rows, 4)).astype(np.float32)
    request = oip.ModelInferRequest(model_name=model, **kw)
    request.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    request.raw_input_contents.append(X.tobytes())
    return request


# ------------------------------------------------------------------ unary
def test_predict_continues_the_client_trace(exporter, predict):
    trace_id, span_id, metadata = client_context()
    predict.Predict(v1_request(request_id="req-7"), metadata=metadata, timeout=10)
    spans = spans_of(exporter, trace_id)
    server = one(spans, PREDICT)
    # 1. the client's trace goes on: same trace id, the client's span is the parent
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.span_id == span_id and server.parent.is_remote
    # 2. what answered, and how
    attrs = dict(server.attributes)
    assert attrs["scorewire.model"] == "breast-cancer" and attrs["scorewire.model.version"] == 1
    assert attrs["scorewire.backend"] == "native" and attrs["scorewire.rows"] == 3
    assert attrs["rpc.grpc.status_code"] == 0 and attrs["rpc.method"] == "Predict"
    assert attrs["rpc.service"] == "scorewire.v1.PredictService" and attrs["rpc.system"] == "grpc"
    assert attrs["scorewire.request_id"] == "req-7"
    assert server.status.status_code is StatusCode.UNSET
    # 3. its stages, in order, inside it (not batched: no queue)
    assert children(spans, server) == ["decode", "score", "encode"]
    decode, score, encode = (one(spans, n) for n in ("decode", "score", "encode"))
    assert server.start_time <= decode.start_time <= decode.end_time <= score.start_time
    assert score.end_time <= encode.start_time <= encode.end_time <= server.end_time
    assert {s.context.trace_id for s in spans} == {trace_id}


def test_model_infer_batched_has_queue_and_batch_spans(exporter, infer):
    trace_id, _, metadata = client_context()
    response = infer.ModelInfer(oip_request(id="oip-1"), metadata=metadata, timeout=10)
    assert response.model_name == "iris-forest"
    spans = spans_of(exporter, trace_id)
    server = one(spans, INFER)
    attrs = dict(server.attributes)
    assert attrs["scorewire.backend"] == "onnxruntime" and attrs["scorewire.rows"] == 2
    assert attrs["scorewire.batch.rows"] == 2 and attrs["rpc.grpc.status_code"] == 0
    # the batch (of this one request) is a child of the request it served, and linked to it
    assert sorted(children(spans, server)) == ["batch", "decode", "encode", "queue", "score"]
    batch = one(spans, "batch")
    assert [link.context.span_id for link in batch.links] == [server.context.span_id]
    assert dict(batch.attributes) == {"scorewire.batch.rows": 2, "scorewire.batch.requests": 1}
    score = one(spans, "score")
    assert [link.context.span_id for link in score.links] == [batch.context.span_id]
    queue = one(spans, "queue")
    assert queue.end_time == batch.start_time == score.start_time


def test_batch_span_is_linked_to_every_request_it_served(exporter, predict):
    """Two requests of two client traces share one batch of iris-pair."""
    ctx = [client_context(), client_context()]
    X = np.asarray([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    request = pb.PredictRequest(model="iris-pair", input=array_to_tensor(X, raw=True))
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(predict.Predict, request, metadata=md, timeout=20) for _, _, md in ctx]
        assert all(f.result().model == "iris-pair" for f in futures)
    servers = [one(spans_of(exporter, trace_id), PREDICT) for trace_id, _, _ in ctx]
    batches = [s for s in exporter.get_finished_spans() if s.name == "batch"
               and {link.context.span_id for link in s.links} & {srv.context.span_id for srv in servers}]  # fmt: skip
    assert len(batches) == 1
    batch = batches[0]
    assert {link.context.span_id for link in batch.links} == {s.context.span_id for s in servers}
    assert dict(batch.attributes) == {"scorewire.batch.rows": 2, "scorewire.batch.requests": 2}
    # the batch lives in the trace of one of them; each request's score span links to it
    assert batch.parent.span_id in {s.context.span_id for s in servers}
    for (trace_id, _, _), server in zip(ctx, servers, strict=True):
        spans = spans_of(exporter, trace_id)
        score = one(spans, "score")
        assert [link.context.span_id for link in score.links] == [batch.context.span_id]
        assert dict(score.attributes)["scorewire.batch.rows"] == 2
        assert dict(server.attributes)["scorewire.batch.rows"] == 2


# ---------------------------------------------------------------- streams
def test_predict_stream_one_server_span_a_message_span_each(exporter, predict):
    trace_id, span_id, metadata = client_context()
    messages = [v1_request(rows=1, request_id=f"m{i}") for i in range(3)]
    messages.insert(1, v1_request(rows=1, features=7, request_id="bad"))
    out = list(predict.PredictStream(iter(messages), metadata=metadata, timeout=10))
    assert [r.WhichOneof("result") for r in out] == ["response", "error", "response", "response"]
    spans = spans_of(exporter, trace_id)
    stream = one(spans, STREAM)
    assert stream.parent.span_id == span_id
    assert dict(stream.attributes)["rpc.grpc.status_code"] == 0
    assert children(spans, stream) == ["message"] * 4
    msgs = sorted((s for s in spans if s.name == "message"), key=lambda s: s.start_time)
    assert [dict(m.attributes)["scorewire.request_id"] for m in msgs] == ["m0", "bad", "m1", "m2"]
    for m in msgs:
        if dict(m.attributes)["scorewire.request_id"] == "bad":
            assert m.status.status_code is StatusCode.ERROR
            assert dict(m.attributes)["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert children(spans, m) == ["decode"]
        else:
            assert dict(m.attributes)["rpc.grpc.status_code"] == 0
            assert children(spans, m) == ["decode", "score", "encode"]


def test_model_stream_infer_spans(exporter, infer):
    trace_id, span_id, metadata = client_context()
    messages = [oip_request(id="a"), oip_request(model="no-such-model", id="b")]
    out = list(infer.ModelStreamInfer(iter(messages), metadata=metadata, timeout=10))
    assert [bool(r.error_message) for r in out] == [False, True]
    spans = spans_of(exporter, trace_id)
    stream = one(spans, STREAM_INFER)
    assert stream.parent.span_id == span_id
    msgs = sorted((s for s in spans if s.name == "message"), key=lambda s: s.start_time)
    assert [dict(m.attributes)["rpc.grpc.status_code"] for m in msgs] == [0, grpc.StatusCode.NOT_FOUND.value[0]]
    assert "queue" in children(spans, msgs[0]) and "score" in children(spans, msgs[0])
    assert msgs[1].status.status_code is StatusCode.ERROR


def test_unparseable_predict_ends_its_span(exporter, channel):
    trace_id, _, metadata = client_context()
    call = channel.unary_unary("/" + PREDICT, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff\xff garbage", metadata=metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    span = one(spans_of(exporter, trace_id), PREDICT)
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes)["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_unparseable_stream_message_ends_the_stream_span(exporter, channel):
    trace_id, _, metadata = client_context()
    call = channel.stream_stream("/" + STREAM, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([b"\xff\xff\xff\xff garbage"]), metadata=metadata, timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stream = one(spans_of(exporter, trace_id), STREAM)
    assert stream.status.status_code is StatusCode.ERROR
    assert dict(stream.attributes)["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


# ------------------------------------------------------------- error paths
@pytest.mark.parametrize(
    "make, status, stages",
    [
        (lambda: v1_request(model="no-such-model"), grpc.StatusCode.NOT_FOUND, ["decode"]),
        (lambda: v1_request(features=29), grpc.StatusCode.INVALID_ARGUMENT, ["decode"]),
        (lambda: v1_request(outputs=["nope"]), grpc.StatusCode.INVALID_ARGUMENT, ["decode"]),
        (lambda: v1_request(model="broken", features=13), grpc.StatusCode.INTERNAL, ["decode", "score"]),
    ],
    ids=["not-found", "wrong-features", "unknown-output", "internal"],
)
def test_predict_errors(exporter, predict, make, status, stages):
    trace_id, _, metadata = client_context()
    with pytest.raises(grpc.RpcError) as info:
        predict.Predict(make(), metadata=metadata, timeout=10)
    assert info.value.code() == status
    spans = spans_of(exporter, trace_id)
    server = one(spans, PREDICT)
    assert server.status.status_code is StatusCode.ERROR
    assert dict(server.attributes)["rpc.grpc.status_code"] == status.value[0]
    assert children(spans, server) == stages
    if status is grpc.StatusCode.INTERNAL:
        assert one(spans, "score").status.status_code is StatusCode.ERROR
        assert [e.name for e in server.events] == ["exception"]  # the traceback, for operators
    else:
        assert server.status.description and "Traceback" not in server.status.description
        assert not server.events


def test_model_infer_an_unknown_model_fails_after_decode(exporter, infer):
    """As in scorewire.v1: the request decodes, the core finds no such model (OIP
    no longer looks the model up while decoding: which version answers, and so
    which input name is right, is the traffic split's choice, made in the core)."""
    trace_id, _, metadata = client_context()
    with pytest.raises(grpc.RpcError) as info:
        infer.ModelInfer(oip_request(model="no-such-model"), metadata=metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    spans = spans_of(exporter, trace_id)
    server = one(spans, INFER)
    assert server.status.status_code is StatusCode.ERROR
    assert dict(server.attributes)["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert one(spans, "decode").status.status_code is StatusCode.UNSET
    assert children(spans, server) == ["decode"]


def test_deadline_ends_the_span_with_an_error(exporter, server, predict):
    """The model holds the call past the client's deadline, and until the server
    has ended the call's span: the deadline, not an answer, ends it."""
    stuck = GatedModel(server.server.repository.resolve("wine").model)
    server.server.repository.add_model("stuck", stuck)
    trace_id, _, metadata = client_context()
    try:
        with pytest.raises(grpc.RpcError) as info:
            predict.Predict(v1_request(model="stuck", features=13), metadata=metadata, timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        span = one(spans_of(exporter, trace_id), PREDICT)
    finally:
        stuck.gate.set()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes)["rpc.grpc.status_code"] in (
        grpc.StatusCode.CANCELLED.value[0],
        grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
    )


# ------------------------------------------------------------------ sampling
def test_a_client_trace_that_is_not_sampled_is_not_recorded(exporter, predict):
    trace_id, _, metadata = client_context(sampled=False)
    predict.Predict(v1_request(), metadata=metadata, timeout=10)
    predict.Predict(v1_request(), timeout=10)  # a later request, to be sure the first one ended
    assert not [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]


def test_without_a_client_trace_a_new_one_starts(exporter, predict):
    before = {s.context.span_id for s in exporter.get_finished_spans()}
    predict.Predict(v1_request(request_id="rootless"), timeout=10)
    new = [s for s in exporter.get_finished_spans() if s.context.span_id not in before]
    server = one(new, PREDICT)
    assert server.parent is None
    assert children(new, server) == ["decode", "score", "encode"]


def test_tracing_off_creates_no_spans(exporter, predict, infer, monkeypatch):
    """With tracing off the request path never reaches the tracing module."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a span was created with tracing off")

    provider, fast_bound = _tracing._provider, _tracing._fast_bound
    _tracing.use(None)
    try:
        for name in ("server_span", "child", "annotate", "trace_batch"):
            monkeypatch.setattr(_tracing, name, forbidden)
        trace_id, _, metadata = client_context()
        assert predict.Predict(v1_request(), metadata=metadata, timeout=10).model == "breast-cancer"
        assert infer.ModelInfer(oip_request(), metadata=metadata, timeout=10).model_name == "iris-forest"
        out = list(predict.PredictStream(iter([v1_request(rows=1)] * 2), metadata=metadata, timeout=10))
        assert len(out) == 2
    finally:
        _tracing.use(provider, fast_bound)
    assert not [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
