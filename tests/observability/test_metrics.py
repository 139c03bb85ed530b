"""Prometheus metrics of a real server, read over HTTP from its --metrics-port.

The metric objects are process globals (prometheus-client's default registry), so
each test compares a scrape after its requests with one before them.
"""

from __future__ import annotations

import shutil
import time

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

import scorewire
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.observability import FEATURE_PSI_METRIC, set_feature_psi, set_feedback
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..servers import InProcessServer
from .helpers import families, free_port, scrape, total, value


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for name in ("breast-cancer", "iris-forest", "wine"):
        shutil.copytree(scorewire.demo_repository() / name, root / name)
    return root


@pytest.fixture(scope="module")
def server(repo_dir):
    port = free_port()
    srv = InProcessServer(Settings(port=0, metrics_port=port), ModelRepository(repo_dir, n_threads=1))
    srv.metrics_port = port
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


def v1(model="breast-cancer", rows=1, features=30, **kw):
    return pb.PredictRequest(model=model, input=array_to_tensor(np.zeros((rows, features)), raw=False), **kw)


def oip_request(model="iris-forest", rows=1):
    request = oip.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.append(np.zeros((rows, 4), np.float32).tobytes())
    return request


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_requests_latency_and_status_codes(server, channel):
    stub = pb_grpc.PredictServiceStub(channel)
    before = scrape(server.metrics_port)
    # 1. five good requests, then client mistakes of each kind
    started = time.perf_counter()
    for _ in range(5):
        stub.Predict(v1(rows=3), timeout=10)
    waited = time.perf_counter() - started  # the client, for all five (one after another)
    for request, code in [
        (v1(model="no-such-model"), grpc.StatusCode.NOT_FOUND),
        (v1(model="no-such-model", version=3), grpc.StatusCode.NOT_FOUND),
        (v1(model="wine", features=12), grpc.StatusCode.INVALID_ARGUMENT),
        (v1(version=9), grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=10)
        assert info.value.code() == code
    after = scrape(server.metrics_port)
    # 2. counted by model version, RPC and status code
    ok = {"model": "breast-cancer", "version": "1", "rpc": "Predict"}
    assert delta(before, after, "scorewire_requests_total", **ok, code="OK") == 5
    # made-up names never become labels: an unknown model is counted with empty labels
    unknown = {"model": "", "version": "", "rpc": "Predict"}
    assert delta(before, after, "scorewire_requests_total", **unknown, code="NOT_FOUND") == 2
    wine = {"model": "wine", "version": "1", "rpc": "Predict"}
    assert delta(before, after, "scorewire_requests_total", **wine, code="INVALID_ARGUMENT") == 1
    no_version = {"model": "breast-cancer", "version": "", "rpc": "Predict"}
    assert delta(before, after, "scorewire_requests_total", **no_version, code="NOT_FOUND") == 1
    assert not any("no-such-model" in str(labels) for _, labels in after)
    # 3. latency of every request (errors too), in a histogram with buckets; in
    #    seconds: together no more than the client waited for them (the server is in
    #    this process, on the same clock)
    assert delta(before, after, "scorewire_request_duration_seconds_count", **ok) == 5
    assert delta(before, after, "scorewire_request_duration_seconds_count", **unknown) == 2
    assert delta(before, after, "scorewire_request_duration_seconds_bucket", **ok, le="+Inf") == 5
    assert 0 < delta(before, after, "scorewire_request_duration_seconds_sum", **ok) <= waited
    # 4. the model's own time and rows (not batched: each request is its own batch)
    bc = {"model": "breast-cancer", "version": "1"}
    assert delta(before, after, "scorewire_scoring_duration_seconds_count", **bc) == 5
    assert delta(before, after, "scorewire_batch_rows_sum", **bc) == 15
    assert delta(before, after, "scorewire_batch_rows_bucket", **bc, le="4.0") == 5
    assert delta(before, after, "scorewire_batch_rows_bucket", **bc, le="2.0") == 0
    # 5. nothing left in flight
    assert total(after, "scorewire_requests_in_flight") == 0


def test_streams_count_each_message(server, channel):
    stub = pb_grpc.PredictServiceStub(channel)
    infer = oip_grpc.GRPCInferenceServiceStub(channel)
    before = scrape(server.metrics_port)
    messages = [v1(), v1(features=3), v1(), v1()]
    out = list(stub.PredictStream(iter(messages), timeout=10))
    assert [r.WhichOneof("result") for r in out] == ["response", "error", "response", "response"]
    assert len(list(infer.ModelStreamInfer(iter([oip_request(), oip_request(rows=2)]), timeout=10))) == 2
    after = scrape(server.metrics_port)
    labels = {"model": "breast-cancer", "version": "1", "rpc": "PredictStream"}
    assert delta(before, after, "scorewire_requests_total", **labels, code="OK") == 3
    assert delta(before, after, "scorewire_requests_total", **labels, code="INVALID_ARGUMENT") == 1
    oip_labels = {"model": "iris-forest", "version": "1", "rpc": "ModelStreamInfer"}
    assert delta(before, after, "scorewire_requests_total", **oip_labels, code="OK") == 2
    assert delta(before, after, "scorewire_request_duration_seconds_count", **oip_labels) == 2


def test_batched_model_queue_wait_and_batch_rows(server, channel):
    infer = oip_grpc.GRPCInferenceServiceStub(channel)
    before = scrape(server.metrics_port)
    for rows in (1, 2, 3):
        assert infer.ModelInfer(oip_request(rows=rows), timeout=10).model_name == "iris-forest"
    with pytest.raises(grpc.RpcError):
        infer.ModelInfer(oip_request(model="wine"), timeout=10)  # wrong input dtype and shape
    after = scrape(server.metrics_port)
    iris = {"model": "iris-forest", "version": "1"}
    assert delta(before, after, "scorewire_queue_wait_seconds_count", **iris) == 3
    assert delta(before, after, "scorewire_batch_rows_sum", **iris) == 6  # one request per batch here
    assert delta(before, after, "scorewire_scoring_duration_seconds_count", **iris) == 3
    assert value(after, "scorewire_queue_rows", **iris) == 0
    labels = {"model": "iris-forest", "version": "1", "rpc": "ModelInfer"}
    assert delta(before, after, "scorewire_requests_total", **labels, code="OK") == 3
    wine = {"model": "wine", "version": "1", "rpc": "ModelInfer"}
    assert delta(before, after, "scorewire_requests_total", **wine, code="INVALID_ARGUMENT") == 1


def test_model_state_follows_load_and_unload(server, channel):
    models = pb_grpc.ModelServiceStub(channel)
    state = {"model": "wine", "version": "1"}
    m = scrape(server.metrics_port)
    assert value(m, "scorewire_model_state", **state, state="READY") == 1
    assert value(m, "scorewire_model_state", **state, state="LOADING") == 0
    models.UnloadModel(pb.UnloadModelRequest(name="wine"))
    m = scrape(server.metrics_port)
    assert value(m, "scorewire_model_state", **state, state="READY") == 0
    assert value(m, "scorewire_model_state", **state, state="UNLOADED") == 1
    models.LoadModel(pb.LoadModelRequest(name="wine"))
    m = scrape(server.metrics_port)
    assert value(m, "scorewire_model_state", **state, state="READY") == 1
    assert value(m, "scorewire_model_state", **state, state="UNLOADED") == 0


def test_an_unloaded_versions_drift_and_feedback_gauges_go(server, channel):
    """No alert may keep reading the last PSI or accuracy of a model that is gone,
    nor compute a fleet PSI from its drift bins."""
    set_feature_psi("wine", 1, "alcohol", 0.31)
    set_feedback("wine", 1, {"accuracy": 0.9}, {"matched": 3}, 2)
    labels = {"model": "wine", "version": "1"}
    m = scrape(server.metrics_port)
    assert value(m, FEATURE_PSI_METRIC, **labels, feature="alcohol") == pytest.approx(0.31)
    assert value(m, "scorewire_feedback_accuracy", **labels) == pytest.approx(0.9)
    # the drift bins exist from the load on, at 0 (13 features, 10 bins each)
    bins = [ls for (name, ls) in m if name == "scorewire_feature_bin_rows_total" and dict(ls)["model"] == "wine"]
    assert len(bins) == 130 and value(m, "scorewire_feature_bin_rows_total", **labels, feature="alcohol", bin="9") == 0
    assert value(m, "scorewire_feature_reference_share", **labels, feature="alcohol", bin="9") > 0
    models = pb_grpc.ModelServiceStub(channel)
    models.UnloadModel(pb.UnloadModelRequest(name="wine"))
    try:
        m = scrape(server.metrics_port)
        series = {name for (name, ls) in m if dict(ls).get("model") == "wine"}
        assert FEATURE_PSI_METRIC not in series
        assert "scorewire_feedback_accuracy" not in series and "scorewire_feedback_pending" not in series
        assert not series & {"scorewire_feature_bin_rows_total", "scorewire_feature_reference_share",
                             "scorewire_drift_sampled_rows_total"}  # fmt: skip
        assert value(m, "scorewire_model_state", **labels, state="UNLOADED") == 1
    finally:
        models.LoadModel(pb.LoadModelRequest(name="wine"))
    m = scrape(server.metrics_port)  # loaded again: its bins are back
    assert value(m, "scorewire_feature_reference_share", **labels, feature="alcohol", bin="9") > 0


def test_types_process_metrics_and_drift_gauge(server):
    set_feature_psi("wine", 1, "alcohol", 0.31)
    kinds = families(server.metrics_port)
    for name in ("scorewire_request_duration_seconds", "scorewire_queue_wait_seconds",
                 "scorewire_scoring_duration_seconds", "scorewire_batch_rows"):  # fmt: skip
        assert kinds[name] == "histogram"  # not summaries: they aggregate across processes
    assert kinds["scorewire_requests"] == "counter"
    for name in ("scorewire_requests_in_flight", "scorewire_queue_rows", "scorewire_model_state", FEATURE_PSI_METRIC,
                 "scorewire_feature_reference_share"):  # fmt: skip
        assert kinds[name] == "gauge"
    assert kinds["scorewire_feature_bin_rows"] == kinds["scorewire_drift_sampled_rows"] == "counter"
    assert kinds["process_cpu_seconds"] == "counter" and "process_resident_memory_bytes" in kinds
    m = scrape(server.metrics_port)
    assert value(m, FEATURE_PSI_METRIC, model="wine", version="1", feature="alcohol") == pytest.approx(0.31)


def test_metrics_off_records_nothing(repo_dir):
    """Without --metrics-port the request path makes no metric call."""
    sample = ("scorewire_requests_total", {"model": "diabetes", "version": "1", "rpc": "Predict", "code": "OK"})
    root = repo_dir.parent / "diabetes-repo"
    shutil.copytree(scorewire.demo_repository() / "diabetes", root / "diabetes")
    srv = InProcessServer(Settings(port=0), ModelRepository(root, n_threads=1))
    try:
        assert not srv.server.service.metrics
        with grpc.insecure_channel(srv.addr) as channel:
            pb_grpc.PredictServiceStub(channel).Predict(v1(model="diabetes", features=10), timeout=10)
        assert REGISTRY.get_sample_value(*sample) is None
    finally:
        srv.stop()
