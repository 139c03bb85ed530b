"""A real server on a free loopback port, called through the generated stubs:
every RPC, every client mistake and the status it gets, and health afterwards."""

from __future__ import annotations

import gc
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import scorewire
from scorewire.grpc._codec import array_to_tensor, tensor_to_array
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.grpc.server import LIVENESS
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..servers import InProcessServer, wait_serving

SC = grpc.StatusCode
SECRET = 987654.321  # a value that must never come back in an error message


class GatedRepository(ModelRepository):
    """Holds the model named 'slow' in LOADING until the test opens the gate."""

    gate = threading.Event()

    def load_version(self, entry, version):
        if entry.name == "slow":
            self.gate.wait(30)
        return super().load_version(entry, version)


class GatedModel:
    """Answers once the test opens its gate: keeps RPCs in flight (on the server's
    scoring threads) for exactly as long as a test needs."""

    backend, native_reason = "native", ""

    def __init__(self, inner) -> None:
        self.inner, self.signature, self.output_names = inner, inner.signature, inner.output_names
        self.gate = threading.Event()
        self._entered = threading.Semaphore(0)  # one release per call that reached predict

    def predict(self, X, outputs=None):
        self._entered.release()
        if not self.gate.wait(60):
            raise RuntimeError("the test never opened the gate")
        return self.inner.predict(X, outputs)

    def wait_entered(self, calls: int) -> None:
        """Until ``calls`` more calls are inside predict, held at the gate."""
        for _ in range(calls):
            assert self._entered.acquire(timeout=30), "a call never reached the model"


class BrokenModel:
    backend, native_reason = "native", ""

    def __init__(self, inner) -> None:
        self.signature, self.output_names = inner.signature, inner.output_names

    def predict(self, X, outputs=None):
        raise RuntimeError(f"secret internal detail {SECRET}")


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    demo = scorewire.demo_repository()
    for name in ("breast-cancer", "diabetes", "iris-forest", "wine"):
        shutil.copytree(demo / name, root / name)
    shutil.copytree(demo / "diabetes", root / "nan-ok")
    (root / "nan-ok" / "model.toml").write_text('nan_policy = "allow"\nmax_batch_rows = 5\n')
    shutil.copytree(demo / "diabetes", root / "slow")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"\x08\x07\x12\x04trun")  # truncated
    (root / "badconf").mkdir()
    (root / "badconf" / "model.toml").write_text("bakend = 'native'\n")
    return root


@pytest.fixture(scope="module")
def server(repo_dir):
    GatedRepository.gate.clear()
    repo = GatedRepository(repo_dir, n_threads=1)
    # offload_min_values=1: every request scores on a worker thread, so a gated
    # model keeps an RPC in flight without blocking the event loop
    settings = Settings(port=0, max_message_mb=1, offload_min_values=1)
    srv = InProcessServer(settings, repo, wait_ready=False)
    for name in ("breast-cancer", "diabetes", "iris-forest", "wine", "nan-ok"):
        wait_serving(srv.addr, f"model/{name}")
    repo.add_model("broken-at-runtime", BrokenModel(repo.resolve("diabetes").model))
    yield srv
    GatedRepository.gate.set()
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


@pytest.fixture(scope="module")
def predict(channel):
    return pb_grpc.PredictServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return pb_grpc.ModelServiceStub(channel)


def local(name: str):
    return scorewire.load_model(scorewire.demo_repository() / name / "1")


def req(model="diabetes", X=None, raw=True, **kw):
    if X is None:
        X = np.full((2, 10), 0.01)
    return pb.PredictRequest(model=model, input=array_to_tensor(np.asarray(X), raw=raw), **kw)


def code_of(call, *args, **kw):
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    assert str(SECRET) not in (info.value.details() or "")
    assert "Traceback" not in (info.value.details() or "")
    return info.value.code(), info.value.details()


# ------------------------------------------------------------------ Predict
@pytest.mark.parametrize("raw", [True, False])
def test_predict_native_and_onnx(predict, raw, rng):
    X = rng.normal(size=(5, 30)) * 0.1 + 1
    r = predict.Predict(req("breast-cancer", X, raw=raw, request_id="abc"))
    assert (r.model, r.version, r.request_id) == ("breast-cancer", 1, "abc")
    want = local("breast-cancer").predict(X)
    np.testing.assert_allclose(tensor_to_array(r.outputs["probabilities"]), want["probabilities"], rtol=1e-15)
    np.testing.assert_array_equal(tensor_to_array(r.outputs["label"]), want["label"])
    Xf = rng.normal(size=(4, 4)).astype(np.float32) + 3
    r = predict.Predict(req("iris-forest", Xf, raw=raw, outputs=["probabilities"]))
    assert list(r.outputs) == ["probabilities"]
    np.testing.assert_allclose(
        tensor_to_array(r.outputs["probabilities"]), local("iris-forest").predict(Xf)["probabilities"], rtol=1e-6
    )


@pytest.mark.parametrize(
    "extra",
    [b"", b"\x78\x07", b"\x0a\x0dbreast-cancer"],
    ids=["common", "unknown-field", "model-twice"],
)
def test_predict_reads_any_encoding_protobuf_reads(channel, extra, rng):
    """Predict reads the common request from its bytes and leaves anything rarer
    (here an unknown field, a field written twice) to protobuf: same answer."""
    X = rng.normal(size=(3, 30)) * 0.1 + 1
    call = channel.unary_unary(
        "/scorewire.v1.PredictService/Predict", request_serializer=None, response_deserializer=pb.PredictResponse.FromString
    )
    r = call(req("breast-cancer", X, request_id="x").SerializeToString() + extra)
    assert (r.model, r.request_id) == ("breast-cancer", "x")
    np.testing.assert_array_equal(tensor_to_array(r.outputs["label"]), local("breast-cancer").predict(X)["label"])


def test_predict_explicit_version_and_zero_rows(predict):
    r = predict.Predict(req("wine", np.empty((0, 13)), version=1))
    assert r.version == 1
    assert tensor_to_array(r.outputs["probabilities"]).shape == (0, 3)
    assert tensor_to_array(r.outputs["label"]).shape == (0,)


@pytest.mark.parametrize(
    "request_, status, words",
    [
        (req(X=np.zeros((2, 10), dtype=np.float32)), SC.INVALID_ARGUMENT, "float64"),
        (req(X=np.zeros((2, 9))), SC.INVALID_ARGUMENT, "10 features"),
        (req(X=np.zeros((2, 10, 1))), SC.INVALID_ARGUMENT, "rank 2"),
        (req(X=np.zeros(10)), SC.INVALID_ARGUMENT, "rank 2"),
        (pb.PredictRequest(model="diabetes", input=pb.Tensor(dtype=pb.FLOAT64, shape=[1, 10], raw=b"\0" * 79)), SC.INVALID_ARGUMENT, "bytes"),
        (pb.PredictRequest(model="diabetes", input=pb.Tensor(dtype=pb.FLOAT64, shape=[1, 1], raw=b"\0" * 8, double_values=[SECRET])), SC.INVALID_ARGUMENT, "both"),
        (pb.PredictRequest(model="diabetes", input=pb.Tensor(dtype=pb.FLOAT64, shape=[-1, 10])), SC.INVALID_ARGUMENT, "negative"),
        (pb.PredictRequest(model="diabetes", input=pb.Tensor(dtype=pb.FLOAT64, shape=[1 << 62, 1 << 62])), SC.INVALID_ARGUMENT, "too large"),
        (pb.PredictRequest(model="diabetes", input=pb.Tensor(shape=[1, 10])), SC.INVALID_ARGUMENT, "dtype"),
        (pb.PredictRequest(model="diabetes"), SC.INVALID_ARGUMENT, "dtype"),
        (req(X=np.array([[np.nan] + [SECRET] * 9])), SC.INVALID_ARGUMENT, "NaN"),
        (req(X=np.array([[np.inf] + [SECRET] * 9])), SC.INVALID_ARGUMENT, "NaN"),
        (req(outputs=["nope"]), SC.INVALID_ARGUMENT, "unknown output"),
        (req(model="no-such-model"), SC.NOT_FOUND, "no model"),
        (req(model="../../etc/passwd"), SC.NOT_FOUND, "no model"),
        (req(version=7), SC.NOT_FOUND, "no version 7"),
        (req(model="slow"), SC.UNAVAILABLE, "loading"),
        (req(model="broken"), SC.UNAVAILABLE, "failed"),
        (req(model="nan-ok", X=np.zeros((6, 10))), SC.RESOURCE_EXHAUSTED, "limit of 5 rows"),
        (req(model="broken-at-runtime"), SC.INTERNAL, "internal error"),
    ],
)
def test_client_mistakes_get_the_right_status(predict, request_, status, words):
    code, details = code_of(predict.Predict, request_)
    assert code == status, details
    assert words in details


def test_nan_allowed_by_model_policy(predict):
    r = predict.Predict(req(model="nan-ok", X=np.full((1, 10), np.nan)))
    assert np.isnan(tensor_to_array(r.outputs["value"])).all()


def test_message_over_the_size_limit(predict):
    big = np.zeros((20_000, 10))  # 1.6 MB > --max-message-mb 1
    code, _ = code_of(predict.Predict, req(X=big))
    assert code == SC.RESOURCE_EXHAUSTED


def test_deadline_exceeded(server, predict):
    """The model holds the call until after the client's deadline has passed."""
    stuck = GatedModel(local("diabetes"))
    server.server.repository.add_model("stuck", stuck)
    try:
        code, _ = code_of(predict.Predict, req(model="stuck"), timeout=0.2)
    finally:
        stuck.gate.set()
    assert code == SC.DEADLINE_EXCEEDED


def _server_with(tmp_path, settings: Settings, **models) -> InProcessServer:
    """A server of its own (no other test's calls in flight) serving these models."""
    repo = ModelRepository(tmp_path, n_threads=1)
    for name, model in models.items():
        repo.add_model(name, model)
    return InProcessServer(settings, repo)


def test_overload_is_answered_at_once(tmp_path):
    """max_concurrent_rpcs=2: with two calls held in the model, a third is refused
    while they are still held (not queued behind them)."""
    held = GatedModel(local("diabetes"))
    srv = _server_with(tmp_path, Settings(port=0, max_concurrent_rpcs=2, offload_min_values=1, n_threads=2), held=held)
    try:
        with grpc.insecure_channel(srv.addr) as ch:
            stub = pb_grpc.PredictServiceStub(ch)
            futures = [stub.Predict.future(req(model="held"), timeout=60) for _ in range(2)]
            held.wait_entered(2)  # both calls are in their handlers
            code, _ = code_of(stub.Predict, req(model="held"), timeout=10)
            assert code == SC.RESOURCE_EXHAUSTED
            held.gate.set()
            assert [f.result(timeout=30).model for f in futures] == ["held", "held"]
    finally:
        held.gate.set()
        srv.stop()


def test_health_checks_are_never_refused_for_load(tmp_path):
    """max_concurrent_rpcs=2, two calls held in the model: a third scoring call is
    refused RESOURCE_EXHAUSTED, but health checks of both protocols (grpc.health.v1
    Check and Watch, OIP ServerLive, ServerReady, ModelReady) are answered, and say
    the server is up. A balancer or Kubernetes probe must see a busy server as
    healthy: one that saw it refused would take it out and move its load onto the
    others."""
    held = GatedModel(local("diabetes"))
    srv = _server_with(tmp_path, Settings(port=0, max_concurrent_rpcs=2, offload_min_values=1, n_threads=2), held=held)
    try:
        with grpc.insecure_channel(srv.addr) as ch:
            stub = pb_grpc.PredictServiceStub(ch)
            futures = [stub.Predict.future(req(model="held"), timeout=60) for _ in range(2)]
            held.wait_entered(2)
            code, details = code_of(stub.Predict, req(model="held"), timeout=10)
            assert code == SC.RESOURCE_EXHAUSTED and "max-concurrent-rpcs" in details
            health = health_pb2_grpc.HealthStub(ch)
            watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(3)]
            assert [next(w).status for w in watches] == [health_pb2.HealthCheckResponse.SERVING] * 3
            for _ in range(3):  # more health checks than the limit, with it full
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
            infer = oip_grpc.GRPCInferenceServiceStub(ch)
            assert infer.ServerLive(oip.ServerLiveRequest(), timeout=10).live
            assert infer.ServerReady(oip.ServerReadyRequest(), timeout=10).ready
            assert infer.ModelReady(oip.ModelReadyRequest(name="held"), timeout=10).ready
            # the open Watch streams do not count towards the limit either
            held.gate.set()
            assert [f.result(timeout=30).model for f in futures] == ["held", "held"]
            assert [stub.Predict(req(model="held"), timeout=10).model for _ in range(2)] == ["held", "held"]
            for w in watches:
                w.cancel()
    finally:
        held.gate.set()
        srv.stop()


def test_keepalive_pings_every_second_are_accepted(server):
    """A client that sends keepalive pings every second (as the README's client-side
    balancing recipe does, to notice a replica that hangs) on a connection where the
    server sends nothing — it holds only a health Watch, as a balancing client's
    health check does — is not sent GOAWAY "too_many_pings" (gRPC's default server
    policy after three pings less than 5 minutes apart). The Watch stays open until
    its own deadline, through five pings or more."""
    options = [("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_timeout_ms", 1000),
               ("grpc.http2.ping_timeout_ms", 1000), ("grpc.http2.max_pings_without_data", 0)]  # fmt: skip
    with grpc.insecure_channel(server.addr, options=options) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="model/diabetes"), timeout=6)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as ended:
            next(watch)
    assert ended.value.code() == SC.DEADLINE_EXCEEDED, ended.value.details()


def test_big_request_does_not_stall_small_ones(tmp_path):
    """A request of offload_min_values values or more is scored on a worker thread:
    while one is held in the model, small requests are answered (scored on the
    event loop, which the big one does not block)."""
    settings = Settings(port=0)  # the default offload_min_values, as `scorewire serve` has it
    held = GatedModel(local("diabetes"))
    srv = _server_with(tmp_path, settings, held=held, diabetes=local("diabetes"))
    X = np.full((settings.offload_min_values // 10 + 1, 10), 0.01)
    try:
        with grpc.insecure_channel(srv.addr) as ch:
            stub = pb_grpc.PredictServiceStub(ch)
            big = stub.Predict.future(req("held", X), timeout=60)
            held.wait_entered(1)
            for _ in range(3):
                assert stub.Predict(req(), timeout=10).model == "diabetes"
            assert not big.done()  # the small ones were answered while it was held
            held.gate.set()
            got = tensor_to_array(big.result(timeout=30).outputs["value"])
            np.testing.assert_allclose(got, local("diabetes").predict(X)["value"], rtol=1e-15)
    finally:
        held.gate.set()
        srv.stop()


# ------------------------------------------------------------ PredictStream
def test_stream_in_order_and_survives_a_bad_message(predict, rng):
    X = rng.normal(size=(40, 10)) * 0.05
    msgs = [req(X=X[i : i + 1], request_id=f"r{i}") for i in range(40)]
    msgs.insert(20, req(X=np.zeros((1, 3)), request_id="bad"))
    out = list(predict.PredictStream(iter(msgs)))
    assert [r.request_id for r in out] == [m.request_id for m in msgs]
    bad = out[20]
    assert bad.WhichOneof("result") == "error" and bad.error.code == SC.INVALID_ARGUMENT.value[0]
    want = local("diabetes").predict(X)["value"]
    got = [tensor_to_array(r.response.outputs["value"])[0] for r in out if r.request_id != "bad"]
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_stream_reads_any_encoding_protobuf_reads(channel, rng):
    """Stream messages are read as unary requests are: the common ones from their
    bytes, rarer encodings (an unknown field, a model written twice, integer
    values) by protobuf, in one stream, answered in order."""
    X = rng.normal(size=(4, 10)) * 0.05
    msgs = [req(X=X[i : i + 1], request_id=f"r{i}").SerializeToString() for i in range(4)]
    msgs[1] += b"\x78\x07"  # field 15: unknown
    msgs[2] += b"\x0a\x08diabetes"  # model again
    msgs.append(req(X=np.zeros((1, 10), dtype=np.int64), request_id="ints").SerializeToString())
    call = channel.stream_stream(
        "/scorewire.v1.PredictService/PredictStream",
        request_serializer=None,
        response_deserializer=pb.PredictStreamResponse.FromString,
    )
    out = list(call(iter(msgs), timeout=10))
    assert [r.request_id for r in out] == ["r0", "r1", "r2", "r3", "ints"]
    got = [tensor_to_array(r.response.outputs["value"])[0] for r in out[:4]]
    np.testing.assert_allclose(got, local("diabetes").predict(X)["value"], rtol=1e-15)
    assert out[4].error.code == SC.INVALID_ARGUMENT.value[0] and "float64" in out[4].error.message


# ------------------------------------------------------------- ModelService
def test_list_and_get_models(models):
    listed = {m.name: m for m in models.ListModels(pb.ListModelsRequest()).models}
    assert {"breast-cancer", "diabetes", "iris-forest", "wine", "broken", "badconf", "slow"} <= set(listed)
    bc = models.GetModel(pb.GetModelRequest(name="breast-cancer"))
    assert bc.state == pb.READY and bc.description.startswith("Breast cancer")
    v = bc.versions[0]
    assert (v.version, v.backend, v.state) == (1, "native", pb.READY)
    assert v.signature.input.dtype == pb.FLOAT64 and list(v.signature.input.shape) == [-1, 30]
    assert list(v.signature.classes) == ["0", "1"] and v.signature.feature_names[0] == "mean radius"
    assert models.GetModel(pb.GetModelRequest(name="iris-forest")).versions[0].backend == "onnxruntime"
    broken = models.GetModel(pb.GetModelRequest(name="broken"))
    assert broken.state == pb.FAILED and "model.onnx" in broken.versions[0].error
    assert "unknown key" in models.GetModel(pb.GetModelRequest(name="badconf")).error
    assert models.GetModel(pb.GetModelRequest(name="slow")).state == pb.LOADING
    code, _ = code_of(models.GetModel, pb.GetModelRequest(name="nope"))
    assert code == SC.NOT_FOUND


def test_load_and_unload(server, models, predict, channel, repo_dir):
    health = health_pb2_grpc.HealthStub(channel)
    shutil.copytree(repo_dir / "wine", repo_dir / "wine-copy")
    code, _ = code_of(predict.Predict, req("wine-copy", np.zeros((1, 13))))
    assert code == SC.NOT_FOUND
    info = models.LoadModel(pb.LoadModelRequest(name="wine-copy"))
    assert info.state == pb.READY
    assert predict.Predict(req("wine-copy", np.zeros((1, 13)))).model == "wine-copy"
    _wait_health(health, "model/wine-copy", health_pb2.HealthCheckResponse.SERVING)
    models.UnloadModel(pb.UnloadModelRequest(name="wine-copy"))
    code, _ = code_of(predict.Predict, req("wine-copy", np.zeros((1, 13))))
    assert code == SC.NOT_FOUND
    _wait_health(health, "model/wine-copy", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, _ = code_of(models.LoadModel, pb.LoadModelRequest(name="../outside"))
    assert code == SC.NOT_FOUND


def _wait_health(stub, service, status, timeout=30.0):
    deadline = time.monotonic() + timeout
    while stub.Check(health_pb2.HealthCheckRequest(service=service)).status != status:
        assert time.monotonic() < deadline, f"{service} never became {status}"
        time.sleep(0.02)


# ------------------------------------------------------------------- OIP v2
def test_oip_metadata_and_infer(channel, rng):
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(oip.ServerLiveRequest()).live
    # strict readiness: not ready until the initial load is done ('slow' still loads)
    assert not stub.ServerReady(oip.ServerReadyRequest()).ready
    assert stub.ModelReady(oip.ModelReadyRequest(name="wine")).ready
    assert not stub.ModelReady(oip.ModelReadyRequest(name="slow")).ready
    assert stub.ServerMetadata(oip.ServerMetadataRequest()).name == "scorewire"
    md = stub.ModelMetadata(oip.ModelMetadataRequest(name="iris-forest"))
    assert md.platform == "onnxruntime_onnx" and md.inputs[0].datatype == "FP32"
    assert list(md.inputs[0].shape) == [-1, 4]
    X = rng.normal(size=(3, 13))
    r = oip.ModelInferRequest(model_name="wine", id="q1")
    r.inputs.add(name="input", datatype="FP64", shape=[3, 13]).contents.fp64_contents.extend(X.ravel())
    r.outputs.add(name="probabilities")
    resp = stub.ModelInfer(r)
    assert (resp.id, resp.model_version, [o.name for o in resp.outputs]) == ("q1", "1", ["probabilities"])
    got = np.frombuffer(resp.raw_output_contents[0], dtype="<f8").reshape(3, 3)
    np.testing.assert_allclose(got, local("wine").predict(X)["probabilities"], rtol=1e-15)
    index = stub.RepositoryIndex(oip.RepositoryIndexRequest())
    states = {(m.name, m.state) for m in index.models}
    assert ("wine", "READY") in states and ("broken", "FAILED") in states
    bad = oip.ModelInferRequest(model_name="wine")
    bad.inputs.add(name="wrong-name", datatype="FP64", shape=[1, 13]).contents.fp64_contents.extend([0.0] * 13)
    code, details = code_of(stub.ModelInfer, bad)
    assert code == SC.INVALID_ARGUMENT and "named 'input'" in details
    code, _ = code_of(stub.ModelMetadata, oip.ModelMetadataRequest(name="nope"))
    assert code == SC.NOT_FOUND


@pytest.mark.parametrize("version", ["\u00b2", "\u0661", "9" * 19, "9" * 4301, "0", "-1"])
def test_a_model_version_that_is_not_a_version_is_invalid_argument(channel, version):
    """Found by tests/fuzz/fuzz_infer.py: "²" and "١" are digits to str.isdigit but
    not to int, and int refuses 4 301 digits: both were INTERNAL errors."""
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    r = oip.ModelInferRequest(model_name="wine", model_version=version)
    r.inputs.add(name="input", datatype="FP64", shape=[1, 13]).contents.fp64_contents.extend([0.0] * 13)
    for call, request in ((stub.ModelInfer, r), (stub.ModelMetadata, oip.ModelMetadataRequest(name="wine", version=version))):
        code, details = code_of(call, request)
        assert code == SC.INVALID_ARGUMENT and details.startswith("model_version must be a positive integer"), details
    assert not stub.ModelReady(oip.ModelReadyRequest(name="wine", version=version)).ready


@pytest.mark.parametrize(
    "extra",
    [b"", b"\x42\x00", b"\x22\x0e\x0a\x08priority\x12\x02\x10\x01"],
    ids=["common", "unknown-field", "parameters"],
)
def test_model_infer_reads_any_encoding_protobuf_reads(channel, extra, rng):
    """As Predict: the common request read from its bytes, the rest by protobuf."""
    X = rng.normal(size=(2, 13))
    r = oip.ModelInferRequest(model_name="wine", id="q2")
    r.inputs.add(name="input", datatype="FP64", shape=[2, 13])
    r.raw_input_contents.append(X.tobytes())
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=None,
        response_deserializer=oip.ModelInferResponse.FromString,
    )
    resp = call(r.SerializeToString() + extra)
    names = [o.name for o in resp.outputs]
    assert resp.id == "q2" and "probabilities" in names
    got = np.frombuffer(resp.raw_output_contents[names.index("probabilities")], dtype="<f8").reshape(2, 3)
    np.testing.assert_allclose(got, local("wine").predict(X)["probabilities"], rtol=1e-15)


# ---------------------------------------------------- health and reflection
def test_health_per_service_and_model(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    S, N = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert stub.Check(health_pb2.HealthCheckRequest(service="model/wine")).status == S
    # while 'slow' is still loading, the server as a whole is not yet SERVING
    for service in ("", "scorewire.v1.PredictService", "inference.GRPCInferenceService"):
        assert stub.Check(health_pb2.HealthCheckRequest(service=service)).status == N, service
    assert stub.Check(health_pb2.HealthCheckRequest(service="model/broken")).status == N
    assert stub.Check(health_pb2.HealthCheckRequest(service="model/slow")).status == N
    # the liveness entry does not wait for models: a liveness probe must not restart a loading server
    assert stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS)).status == S
    assert next(stub.Watch(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=30)).status == S
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="model/wine"))
    assert next(watch).status == S
    watch.cancel()
    code, _ = code_of(stub.Check, health_pb2.HealthCheckRequest(service="model/nope"))
    assert code == SC.NOT_FOUND


def test_reflection_lists_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in next(responses).list_services_response.service}
    assert {"scorewire.v1.PredictService", "scorewire.v1.ModelService", "inference.GRPCInferenceService",
            "grpc.health.v1.Health"} <= names  # fmt: skip


def test_slow_model_becomes_ready_when_loaded(server, predict, channel):
    """Last: open the gate; the LOADING model turns READY and SERVING."""
    GatedRepository.gate.set()
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert predict.Predict(req(model="slow")).model == "slow"
            break
        except grpc.RpcError as err:
            assert err.code() == SC.UNAVAILABLE and time.monotonic() < deadline
            time.sleep(0.05)
    _wait_health(health, "model/slow", health_pb2.HealthCheckResponse.SERVING)


def test_server_still_healthy_after_all_errors(channel, predict):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "scorewire.v1.PredictService", "scorewire.v1.ModelService", "inference.GRPCInferenceService"):
        _wait_health(stub, service, health_pb2.HealthCheckResponse.SERVING)
    assert oip_grpc.GRPCInferenceServiceStub(channel).ServerReady(oip.ServerReadyRequest()).ready
    assert predict.Predict(req()).model == "diabetes"


def test_reflection_can_be_turned_off(repo_dir):
    srv = InProcessServer(Settings(port=0, reflection=False), ModelRepository(repo_dir / "wine", n_threads=1))
    try:
        with grpc.insecure_channel(srv.addr) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            assert info.value.code() == SC.UNIMPLEMENTED
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "method, stream",
    [
        ("/scorewire.v1.PredictService/Predict", False),
        ("/scorewire.v1.ModelService/GetModel", False),
        ("/inference.GRPCInferenceService/ModelInfer", False),
        ("/grpc.health.v1.Health/Check", False),
        ("/scorewire.v1.PredictService/PredictStream", True),
        ("/inference.GRPCInferenceService/ModelStreamInfer", True),
    ],
)
def test_unparseable_messages_are_invalid_argument(channel, method, stream, caplog):
    garbage = b"\xff\xff\xff\xff garbage"
    if stream:
        call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            list(call(iter([garbage, garbage])))
    else:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(garbage)
    assert info.value.code() == SC.INVALID_ARGUMENT
    assert info.value.details() == "the request message cannot be parsed"
    gc.collect()  # a task left holding an exception logs it when it is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_serve_freezes_the_heap_once_models_are_loaded():
    """``scorewire serve`` moves what loading left out of the collector's full passes
    (gc.freeze), then serves and stops as usual."""
    import asyncio
    import os
    import signal

    from scorewire.grpc.server import serve

    before = gc.get_freeze_count()

    async def main():
        task = asyncio.ensure_future(serve(Settings(port=0, reflection=False)))
        deadline = time.monotonic() + 60
        while gc.get_freeze_count() == before and not task.done():
            assert time.monotonic() < deadline, "the heap was not frozen"
            await asyncio.sleep(0.05)
        frozen = gc.get_freeze_count()
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a graceful stop
        return frozen, await task

    try:
        frozen, code = asyncio.run(main())
    finally:
        gc.unfreeze()
    assert frozen > before and code == 0
