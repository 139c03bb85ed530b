"""Triton's extensions of the Open Inference Protocol (``scorewire.grpc._triton``):
ModelConfig, ModelStatistics, classification, and the RPCs scorewire answers
UNIMPLEMENTED — through a real server and the generated stubs; the pure parts
(the statistics' counters, top-k formatting) directly."""

from __future__ import annotations

import json
import shutil

import grpc
import numpy as np
import pytest

import scorewire
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.inference import model_config_pb2 as mc
from scorewire.grpc._oip import EXTENSIONS
from scorewire.grpc._triton import classify
from scorewire.observability.infer_stats import MAX_BATCH_SIZES, InferStats
from scorewire.settings import Settings

from ..servers import InProcessServer

SC = grpc.StatusCode


# ------------------------------------------------------------------- the counters
def test_stats_of_requests_scored_alone_add_up():
    s = InferStats()
    s.answered_alone(3, started=100, checked=110, scored=150, done=160)
    s.answered_alone(3, started=200, checked=205, scored=225, done=230)
    s.answered_alone(1, started=300, checked=301, scored=302, done=303)
    s.failed(started=0)
    snap = s.snapshot()
    assert (snap.inference_count, snap.execution_count) == (7, 3)
    assert (snap.success.count, snap.success.ns) == (3, 60 + 30 + 3)
    assert (snap.compute_input.ns, snap.compute_infer.ns, snap.compute_output.ns) == (16, 61, 16)
    assert (snap.queue.count, snap.queue.ns) == (3, 0)
    assert snap.fail.count == 1
    assert [(b.batch_size, b.compute_infer.count, b.compute_infer.ns) for b in snap.batches] == [(1, 1, 1), (3, 2, 60)]
    assert snap.last_inference_ms > 0


def test_stats_of_a_batch_count_each_request_with_the_batchs_durations():
    s = InferStats()
    s.executed(5, input_ns=4, infer_ns=40, output_ns=6)
    s.batch_answered(2, queue_ns=30, input_ns=4, infer_ns=40, output_ns=6)
    s.answered_batched(2, started=0, checked=1, returned=100, done=102)
    s.answered_batched(3, started=0, checked=2, returned=90, done=91)
    snap = s.snapshot()
    assert (snap.inference_count, snap.execution_count, snap.success.count) == (5, 1, 2)
    assert (snap.queue.ns, snap.compute_input.ns, snap.compute_infer.ns, snap.compute_output.ns) == (30, 8 + 3, 80, 12 + 3)
    [b] = snap.batches
    assert (b.batch_size, b.compute_infer.count, b.compute_infer.ns) == (5, 1, 40)


def test_stats_keep_a_bounded_number_of_batch_sizes_and_every_total():
    s = InferStats()
    for rows in range(1, MAX_BATCH_SIZES + 11):
        s.answered_alone(rows, 0, 1, 2, 3)
        s.executed(rows, 1, 1, 1)
    snap = s.snapshot()
    assert len(snap.batches) == MAX_BATCH_SIZES
    n = MAX_BATCH_SIZES + 10
    assert snap.success.count == n
    assert snap.inference_count == n * (n + 1) // 2
    assert snap.execution_count == 2 * n


# ---------------------------------------------------------------- classification
def test_classify_is_tritons_top_k():
    values = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    out = classify(values, 2, ["setosa", "versicolor", "virginica"])
    assert out.shape == (2, 2)
    assert out.tolist() == [
        [b"0.700000:1:versicolor", b"0.200000:2:virginica"],
        [b"0.500000:0:setosa", b"0.250000:1:versicolor"],  # a tie: the lower index first
    ]


def test_classify_clamps_k_and_labels_only_columns_that_are_classes():
    assert classify(np.array([[1.5, 2.5]]), 5, None).tolist() == [[b"2.500000:1", b"1.500000:0"]]
    # one column per row (a regression value, a binary decision): no class per column
    assert classify(np.array([0.25, -1.0]), 3, ["a", "b"]).tolist() == [[b"0.250000:0"], [b"-1.000000:0"]]
    assert classify(np.array([[3, 9]], dtype=np.int64), 1, ["x", "y"]).tolist() == [[b"9:1:y"]]
    assert classify(np.zeros((0, 3)), 2, None).shape == (0, 2)


# ------------------------------------------------------------------ a real server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    demo = scorewire.demo_repository()
    for name in ("breast-cancer", "iris-forest", "wine", "diabetes"):
        shutil.copytree(demo / name, root / name)
    (root / "diabetes" / "model.toml").write_text(
        'max_batch_rows = 500\n[version_policy]\npolicy = "all"\n[batching]\nenabled = true\nmax_delay_us = 250\n'
    )
    srv = InProcessServer(Settings(port=0, repo=root))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.addr) as channel:
        yield oip_grpc.GRPCInferenceServiceStub(channel)


def infer(stub, model, X, outputs=(), classification=None, request_id="r"):
    r = oip.ModelInferRequest(model_name=model, id=request_id)
    r.inputs.add(name="input", datatype={"float64": "FP64", "float32": "FP32"}[X.dtype.name], shape=X.shape)
    r.raw_input_contents.append(X.tobytes())
    for name in outputs:
        o = r.outputs.add(name=name)
        if classification is not None:
            o.parameters["classification"].CopyFrom(classification)
    return stub.ModelInfer(r)


def bytes_output(response, index):
    raw, out = response.raw_output_contents[index], []
    pos = 0
    while pos < len(raw):
        n = int.from_bytes(raw[pos : pos + 4], "little")
        out.append(raw[pos + 4 : pos + 4 + n].decode())
        pos += 4 + n
    return np.array(out, dtype=object).reshape(tuple(response.outputs[index].shape))


def code_of(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    assert "Traceback" not in (info.value.details() or "")
    return info.value.code(), info.value.details()


def test_server_metadata_lists_exactly_the_extensions_served(stub):
    meta = stub.ServerMetadata(oip.ServerMetadataRequest())
    assert sorted(meta.extensions) == sorted(EXTENSIONS)
    assert {"classification", "model_configuration", "statistics"} <= set(meta.extensions)
    assert not {"system_shared_memory", "cuda_shared_memory", "trace", "logging"} & set(meta.extensions)


def test_model_config_of_the_native_kernel(stub):
    cfg = stub.ModelConfig(oip.ModelConfigRequest(name="breast-cancer")).config
    assert (cfg.name, cfg.platform, cfg.backend) == ("breast-cancer", "scorewire_native", "scorewire_native")
    assert cfg.max_batch_size == Settings().max_batch_rows
    [inp] = cfg.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", mc.TYPE_FP64, [30])  # no batch dimension
    outputs = {o.name: o for o in cfg.output}
    assert list(outputs["probabilities"].dims) == [2]
    # an output of the batch dimension alone, as Triton writes it
    assert list(outputs["label"].dims) == [1] and outputs["label"].HasField("reshape")
    assert list(outputs["label"].reshape.shape) == []
    assert outputs["label"].data_type == mc.TYPE_INT64
    assert not cfg.HasField("dynamic_batching")  # the native kernel does not batch by default
    assert cfg.version_policy.latest.num_versions == 1
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    sig = scorewire.load_model(scorewire.demo_repository() / "breast-cancer" / "1").signature
    assert json.loads(cfg.parameters["classes"].string_value) == [int(c) for c in sig.classes]
    assert cfg.parameters["task"].string_value == "classification"
    assert json.loads(cfg.parameters["feature_names"].string_value) == list(sig.feature_names)


def test_model_config_of_onnxruntime_and_of_a_configured_model(stub):
    cfg = stub.ModelConfig(oip.ModelConfigRequest(name="iris-forest", version="1")).config
    assert (cfg.platform, cfg.backend) == ("onnxruntime_onnx", "onnxruntime")
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.parameters["native_reason"].string_value
    cfg = stub.ModelConfig(oip.ModelConfigRequest(name="diabetes")).config
    assert cfg.max_batch_size == 500
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert cfg.version_policy.HasField("all")
    assert cfg.parameters["task"].string_value == "regression" and "classes" not in cfg.parameters


def test_model_config_errors(stub):
    assert code_of(stub.ModelConfig, oip.ModelConfigRequest(name="nope"))[0] == SC.NOT_FOUND
    assert code_of(stub.ModelConfig, oip.ModelConfigRequest(name="wine", version="7"))[0] == SC.NOT_FOUND
    code, details = code_of(stub.ModelConfig, oip.ModelConfigRequest(name="wine", version="x"))
    assert code == SC.INVALID_ARGUMENT and details.startswith("model_version must be")


def test_model_statistics_count_what_was_answered(stub, rng):
    def wine_stats():
        [s] = stub.ModelStatistics(oip.ModelStatisticsRequest(name="wine", version="1")).model_stats
        return s

    before = wine_stats()
    infer(stub, "wine", rng.normal(size=(4, 13)))
    infer(stub, "wine", rng.normal(size=(1, 13)))
    code_of(stub.ModelInfer, _bad_request("wine", 12))  # 12 features: fails, counted
    after = wine_stats()
    assert (after.name, after.version) == ("wine", "1")
    d = after.inference_stats
    assert d.success.count - before.inference_stats.success.count == 2
    assert d.fail.count - before.inference_stats.fail.count == 1
    assert after.inference_count - before.inference_count == 5
    assert after.execution_count - before.execution_count == 2
    assert d.success.ns >= d.compute_infer.ns > 0
    assert d.queue.count == d.compute_infer.count == d.success.count
    sizes = {b.batch_size: b.compute_infer.count for b in after.batch_stats}
    assert sizes.get(4, 0) >= 1 and sizes.get(1, 0) >= 1
    assert after.last_inference > 0


def test_model_statistics_of_a_batched_model_count_its_queue(stub, rng):
    [before] = stub.ModelStatistics(oip.ModelStatisticsRequest(name="diabetes")).model_stats
    infer(stub, "diabetes", rng.normal(size=(3, 10)))
    [after] = stub.ModelStatistics(oip.ModelStatisticsRequest(name="diabetes")).model_stats
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
    assert after.inference_count - before.inference_count == 3
    assert after.execution_count - before.execution_count == 1
    assert after.inference_stats.queue.ns > before.inference_stats.queue.ns


def test_model_statistics_of_every_model_and_errors(stub):
    names = {s.name for s in stub.ModelStatistics(oip.ModelStatisticsRequest()).model_stats}
    assert names == {"breast-cancer", "iris-forest", "wine", "diabetes"}
    assert code_of(stub.ModelStatistics, oip.ModelStatisticsRequest(name="nope"))[0] == SC.NOT_FOUND
    assert code_of(stub.ModelStatistics, oip.ModelStatisticsRequest(name="wine", version="3"))[0] == SC.NOT_FOUND
    assert code_of(stub.ModelStatistics, oip.ModelStatisticsRequest(version="1"))[0] == SC.INVALID_ARGUMENT


def _bad_request(model, features):
    r = oip.ModelInferRequest(model_name=model)
    r.inputs.add(name="input", datatype="FP64", shape=[1, features]).contents.fp64_contents.extend([0.0] * features)
    return r


def test_classification_returns_top_k_with_the_class_labels(stub, rng):
    X = rng.normal(size=(5, 13))
    k = oip.InferParameter(int64_param=2)
    response = infer(stub, "wine", X, ["probabilities"], k)
    [out] = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("probabilities", "BYTES", [5, 2])
    model = scorewire.load_model(scorewire.demo_repository() / "wine" / "1")
    proba = model.predict(X)["probabilities"]
    classes = [str(c) for c in model.signature.classes]
    got = bytes_output(response, 0)
    for row, p in zip(got, proba, strict=True):
        best = np.argsort(-p, kind="stable")[:2]
        assert [s.split(":", 1)[1] for s in row] == [f"{i}:{classes[i]}" for i in best]
        np.testing.assert_allclose([float(s.split(":")[0]) for s in row], p[best], atol=1e-6)


def test_classification_beside_plain_outputs_and_on_a_stream(stub, rng):
    X = rng.normal(size=(2, 4)).astype(np.float32)
    r = oip.ModelInferRequest(model_name="iris-forest", id="mixed")
    r.inputs.add(name="input", datatype="FP32", shape=X.shape)
    r.raw_input_contents.append(X.tobytes())
    r.outputs.add(name="label")
    r.outputs.add(name="probabilities").parameters["classification"].int64_param = 1
    [answer] = list(stub.ModelStreamInfer(iter([r])))
    assert answer.error_message == ""
    response = answer.infer_response
    assert [(o.name, o.datatype) for o in response.outputs] == [("label", "INT64"), ("probabilities", "BYTES")]
    labels = np.frombuffer(response.raw_output_contents[0], dtype="<i8")
    top = bytes_output(response, 1)
    assert top.shape == (2, 1)
    # the top class is the label, and carries the label's name
    assert [int(s[0].split(":")[1]) for s in top] == labels.tolist()
    assert [s[0].split(":")[2] for s in top] == [str(v) for v in labels]


@pytest.mark.parametrize(
    "param",
    [oip.InferParameter(int64_param=0), oip.InferParameter(string_param="2"), oip.InferParameter(double_param=2.0)],
    ids=["zero", "string", "double"],
)
def test_a_bad_classification_parameter_is_invalid_argument(stub, param):
    with pytest.raises(grpc.RpcError) as info:
        infer(stub, "wine", np.zeros((1, 13)), ["probabilities"], param)
    assert info.value.code() == SC.INVALID_ARGUMENT
    assert "'classification' must be an int64_param" in info.value.details()


def test_shared_memory_tensors_are_invalid_argument(stub):
    r = oip.ModelInferRequest(model_name="wine")
    r.inputs.add(name="input", datatype="FP64", shape=[1, 13]).parameters["shared_memory_region"].string_param = "r0"
    code, details = code_of(stub.ModelInfer, r)
    assert code == SC.INVALID_ARGUMENT and "shared memory is not implemented" in details


@pytest.mark.parametrize(
    ("method", "words"),
    [
        ("SystemSharedMemoryStatus", "shared memory"),
        ("SystemSharedMemoryRegister", "shared memory"),
        ("SystemSharedMemoryUnregister", "shared memory"),
        ("CudaSharedMemoryStatus", "CUDA"),
        ("CudaSharedMemoryRegister", "CUDA"),
        ("CudaSharedMemoryUnregister", "CUDA"),
        ("TraceSetting", "OpenTelemetry"),
        ("LogSettings", "--log-level"),
    ],
)
def test_unimplemented_extensions_say_so(stub, method, words):
    code, details = code_of(getattr(stub, method), getattr(oip, f"{method}Request")())
    assert code == SC.UNIMPLEMENTED
    assert "not implemented" in details and words in details
