"""Monitoring through a real server: drift seen in GetModelStats and on /metrics,
Feedback joined by request id (Predict and OIP ids alike) with per-item outcomes,
rolling metrics equal to scikit-learn's, and the request counts and latency."""

from __future__ import annotations

import math
import shutil

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

import scorewire
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..observability.helpers import free_port, scrape, value, wait_for
from ..servers import InProcessServer

DEMO = scorewire.demo_repository()
BC = load_breast_cancer()
SC = grpc.StatusCode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    for name in ("breast-cancer", "iris-forest"):
        shutil.copytree(DEMO / name, root / name)
    # NOTE: metrics are process globals; tests/observability checks that a server
    # without metrics records nothing for "diabetes", so this copy has another name
    shutil.copytree(DEMO / "diabetes", root / "diabetes-monitored")
    shutil.copytree(DEMO / "breast-cancer", root / "bc-shifted")  # the same model and reference
    port = free_port()
    settings = Settings(port=0, metrics_port=port, monitor_interval_s=0.2)
    srv = InProcessServer(settings, ModelRepository(root, n_threads=1))
    srv.metrics_port = port
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stubs(server):
    with grpc.insecure_channel(server.addr) as channel:
        yield pb_grpc.PredictServiceStub(channel), pb_grpc.ModelServiceStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)


def predict(stub, model: str, X: np.ndarray, request_id: str = "", raw: bool = True) -> pb.PredictResponse:
    return stub.Predict(pb.PredictRequest(model=model, input=array_to_tensor(X, raw=raw), request_id=request_id), timeout=30)


def truth(values, dtype=np.int64) -> pb.Tensor:
    return array_to_tensor(np.asarray(values, dtype=dtype), raw=False)


def stats_of(models, name: str, version: int = 0) -> pb.VersionStats:
    [v] = models.GetModelStats(pb.GetModelStatsRequest(name=name, version=version), timeout=30).versions
    return v


def test_drift_low_on_reference_like_traffic_high_on_shifted(server, stubs):
    predict_stub, models, _ = stubs
    rng = np.random.default_rng(7)
    # 1. the same bootstrapped traffic to both copies, scaled by 1.25 for the second
    for _ in range(15):
        X = BC.data[rng.integers(0, len(BC.data), 1000)]
        predict(predict_stub, "breast-cancer", X)
        predict(predict_stub, "bc-shifted", X * 1.25)
    for i in range(300):  # and one-row requests
        x = BC.data[rng.integers(0, len(BC.data), 1)]
        predict(predict_stub, "breast-cancer", x, raw=bool(i % 2))
        predict(predict_stub, "bc-shifted", x * 1.25)

    # 2. GetModelStats: PSI per feature and the data behind it
    def drift(name):
        d = stats_of(models, name).drift
        return d if d.sampled_rows >= 500 else None  # large requests are sampled after the answer

    ref = wait_for(lambda: drift("breast-cancer"), what="sampled rows")
    assert ref.available and len(ref.features) == 30 and ref.features[0].name == "mean radius"
    assert (ref.alert_threshold, ref.moderate_threshold) == (0.2, 0.1)
    assert ref.estimated_rows == pytest.approx(15_300, rel=0.15)
    assert max(f.psi for f in ref.features) < ref.moderate_threshold
    shifted = wait_for(lambda: drift("bc-shifted"), what="sampled rows")
    over = [f.name for f in shifted.features if f.psi >= shifted.alert_threshold]
    assert len(over) >= 15 and "mean radius" in over
    print(f"through the server: max PSI {max(f.psi for f in ref.features):.4f} reference-like, "
          f"{max(f.psi for f in shifted.features):.2f} scaled; {len(over)}/30 features over 0.2")  # fmt: skip

    # 3. the gauges on /metrics (recomputed every monitor_interval_s)
    def gauge(model):
        """The exported PSI of 'mean radius'; None until it is exported."""
        labels = tuple(sorted({"model": model, "version": "1", "feature": "mean radius"}.items()))
        return scrape(server.metrics_port).get(("scorewire_feature_psi", labels))

    assert wait_for(lambda: (gauge("bc-shifted") or 0) > 0.2, what="the PSI gauge")
    wait_for(lambda: gauge("breast-cancer") is not None, what="the reference-like PSI gauge")
    assert gauge("breast-cancer") < 0.1


def test_feedback_joins_by_request_id_with_outcomes_per_item(server, stubs):
    predict_stub, models, infer = stubs
    X, y = BC.data[:200], BC.target[:200]
    for i in range(200):
        predict(predict_stub, "breast-cancer", X[i : i + 1], request_id=f"fb-{i}")
    # an OIP request's id is a request id too
    request = oip.ModelInferRequest(model_name="breast-cancer", id="oip-0")
    request.inputs.add(name="input", datatype="FP64", shape=[2, 30])
    request.raw_input_contents.append(BC.data[200:202].tobytes())
    infer.ModelInfer(request, timeout=30)

    items = [pb.FeedbackItem(request_id=f"fb-{i}", truth=truth([y[i]])) for i in range(200)]
    items += [
        pb.FeedbackItem(request_id="oip-0", truth=truth(BC.target[200:202])),
        pb.FeedbackItem(request_id="never-sent", truth=truth([1])),
        pb.FeedbackItem(request_id="fb-0", truth=truth([1])),  # again
        pb.FeedbackItem(request_id="fb-late", truth=truth([1])),  # predicted below, with a bad label
        pb.FeedbackItem(request_id="fb-late", truth=pb.Tensor(dtype=pb.INT64, shape=[2], int64_values=[1])),
    ]
    predict(predict_stub, "breast-cancer", BC.data[:1], request_id="fb-late")
    items[-2] = pb.FeedbackItem(request_id="fb-late", truth=truth([3]))  # 3 is not a class
    response = predict_stub.Feedback(pb.FeedbackRequest(model="breast-cancer", items=items), timeout=30)
    outcomes = [pb.FeedbackOutcome.Name(r.outcome) for r in response.results]
    assert outcomes == ["MATCHED"] * 201 + ["UNKNOWN_ID", "DUPLICATE", "INVALID", "INVALID"]
    assert all(r.version == 1 for r in response.results[:201])
    assert response.results[-2].message == "label '3' is not one of the model's classes"
    assert response.results[-1].message == "tensor has 1 values, shape [2] needs 2"
    assert (response.matched, response.unknown, response.duplicate, response.invalid) == (201, 1, 1, 2)
    # a corrected item joins: INVALID left the prediction waiting
    fixed = pb.FeedbackItem(request_id="fb-late", truth=pb.Tensor(dtype=pb.STRING, shape=[1], string_values=["0"]))
    assert predict_stub.Feedback(pb.FeedbackRequest(model="breast-cancer", items=[fixed]), timeout=30).matched == 1

    # the rolling metrics: the same as scikit-learn's over the joined rows
    fb = stats_of(models, "breast-cancer").feedback
    rows = np.vstack([X, BC.data[200:202], BC.data[:1]])
    truths = np.concatenate([y, BC.target[200:202], [0]])
    out = scorewire.load_model(DEMO / "breast-cancer" / "1").predict(rows)
    proba = out["probabilities"]
    assert fb.task == "classification" and fb.window_rows == 203
    assert fb.accuracy == pytest.approx(accuracy_score(truths, out["label"]), rel=1e-12)  # the labels served
    assert fb.log_loss == pytest.approx(log_loss(truths, proba), rel=1e-9)
    assert fb.roc_auc == pytest.approx(roc_auc_score(truths, proba[:, 1]), rel=1e-12)
    assert (fb.matched, fb.matched_rows, fb.unknown, fb.duplicate, fb.invalid) == (202, 203, 1, 1, 1)
    assert math.isnan(fb.rmse)

    def exported():
        m = scrape(server.metrics_port)
        labels = {"model": "breast-cancer", "version": "1"}
        if value(m, "scorewire_feedback_items_total", **labels, outcome="matched") < 202:
            return None
        return m, labels

    m, labels = wait_for(exported, what="the feedback gauges")
    assert value(m, "scorewire_feedback_accuracy", **labels) == pytest.approx(fb.accuracy)
    assert value(m, "scorewire_feedback_items_total", **labels, outcome="unknown") == 1


def test_regression_feedback(stubs):
    predict_stub, models, _ = stubs
    X, y = load_diabetes(return_X_y=True)
    for i in range(0, 100, 4):
        predict(predict_stub, "diabetes-monitored", X[i : i + 4], request_id=f"d-{i}")
    items = [pb.FeedbackItem(request_id=f"d-{i}", truth=truth(y[i : i + 4], np.float64)) for i in range(0, 100, 4)]
    assert predict_stub.Feedback(pb.FeedbackRequest(model="diabetes-monitored", items=items), timeout=30).matched == 25
    fb = stats_of(models, "diabetes-monitored").feedback
    pred = scorewire.load_model(DEMO / "diabetes" / "1").predict(X[:100])["value"]
    assert fb.task == "regression"
    assert fb.rmse == pytest.approx(root_mean_squared_error(y[:100], pred), rel=1e-12)
    assert fb.mae == pytest.approx(mean_absolute_error(y[:100], pred), rel=1e-12)


def test_onnx_classifier_feedback(stubs):
    """iris-forest's graph names its classes (TreeEnsembleClassifier's classlabels):
    accuracy and log-loss, through the server."""
    predict_stub, models, _ = stubs
    X, y = load_iris(return_X_y=True)
    predict(predict_stub, "iris-forest", X.astype(np.float32), request_id="iris-all")
    r = predict_stub.Feedback(pb.FeedbackRequest(model="iris-forest", items=[
        pb.FeedbackItem(request_id="iris-all", truth=truth(y))]), timeout=30)  # fmt: skip
    assert r.matched == 1
    fb = stats_of(models, "iris-forest").feedback
    out = scorewire.load_model(DEMO / "iris-forest" / "1").predict(X.astype(np.float32))
    assert fb.accuracy == pytest.approx(accuracy_score(y, out["label"]))
    assert fb.log_loss == pytest.approx(log_loss(y, out["probabilities"], labels=[0, 1, 2]), rel=1e-6)


def test_request_counts_and_latency(stubs):
    predict_stub, models, _ = stubs
    before = stats_of(models, "diabetes-monitored").requests
    X = load_diabetes().data[:7]
    for _ in range(5):
        predict(predict_stub, "diabetes-monitored", X)
    with pytest.raises(grpc.RpcError):  # a failed request is answered, counted as an error
        predict(predict_stub, "diabetes-monitored", X[:, :3])
    after = stats_of(models, "diabetes-monitored").requests
    assert (after.count - before.count, after.rows - before.rows) == (5, 35)
    assert after.latency_available
    assert after.answered >= after.count and after.errors >= 1
    assert 0 < after.latency_p50_s <= after.latency_p99_s and after.latency_mean_s > 0


def test_mistakes(stubs):
    predict_stub, models, _ = stubs
    with pytest.raises(grpc.RpcError) as err:
        predict_stub.Feedback(pb.FeedbackRequest(model="no-such-model"), timeout=30)
    assert err.value.code() == SC.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        models.GetModelStats(pb.GetModelStatsRequest(name="diabetes-monitored", version=9), timeout=30)
    assert err.value.code() == SC.NOT_FOUND
    # an empty call is fine
    assert len(predict_stub.Feedback(pb.FeedbackRequest(model="diabetes-monitored"), timeout=30).results) == 0
