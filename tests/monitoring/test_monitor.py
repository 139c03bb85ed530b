"""Monitoring in the core: the repository gives each loaded version its monitors,
ScoringService feeds them from the predict path, joins feedback, reports stats
and exports the gauges. No server here (see tests/grpc/test_monitoring.py)."""

from __future__ import annotations

import asyncio
import json
import math
import shutil

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import accuracy_score, log_loss, root_mean_squared_error

import scorewire
from scorewire import ModelRepository, State
from scorewire.monitoring.drift import PSI_ALERT, PSI_MODERATE
from scorewire.monitoring.feedback import FeedbackItem, Outcome
from scorewire.monitoring.monitor import histogram_quantile, request_summary
from scorewire.observability.metrics import REQUEST_DURATION, REQUESTS
from scorewire.service import ScoringService
from scorewire.types import PredictRequest

DEMO = scorewire.demo_repository()
BC = load_breast_cancer()


@pytest.fixture
def repo(tmp_path):
    for name in ("breast-cancer", "diabetes"):
        shutil.copytree(DEMO / name, tmp_path / name)
    shutil.copytree(DEMO / "breast-cancer", tmp_path / "shifted")
    r = ModelRepository(tmp_path, n_threads=1)
    r.load_all()
    return r


def test_each_loaded_version_gets_its_monitors(repo, tmp_path):
    for name in ("breast-cancer", "diabetes"):
        mon = repo.resolve(name).monitor
        assert mon is not None and mon.drift is not None
        assert mon.feedback.task == repo.resolve(name).model.signature.task
    # an in-memory model: feedback, no reference statistics
    mv = repo.add_model("in-memory", repo.resolve("diabetes").model)
    assert mv.monitor is not None and mv.monitor.drift is None
    # no reference.json: no drift monitoring, the model serves
    (tmp_path / "diabetes" / "1" / "reference.json").unlink()
    assert repo.load("diabetes").versions[1].monitor.drift is None


def test_a_malformed_reference_fails_the_version_naming_the_file(repo, tmp_path):
    path = tmp_path / "diabetes" / "1" / "reference.json"
    doc = json.loads(path.read_text())
    doc["features"][0]["bin_fractions"] = [1.0]
    path.write_text(json.dumps(doc))
    mv = repo.load("diabetes").versions[1]
    assert mv.state is State.FAILED
    assert "reference.json: feature 0: 1 bin_fractions" in mv.error


def _serve(service: ScoringService, requests: list[PredictRequest]) -> list:
    async def go():
        return [await service.predict(r) for r in requests]

    return asyncio.run(go())


def test_predict_feeds_drift_and_feedback(repo):
    service = ScoringService(repo, executor=None)
    rng = np.random.default_rng(1)
    X = BC.data[rng.integers(0, len(BC.data), 20_000)]
    # 1. small requests (sampled on the loop), large ones (on a worker thread, after the answer)
    reqs = [PredictRequest("breast-cancer", X[i : i + 1], request_id=f"r{i}") for i in range(2000)]
    reqs += [PredictRequest("breast-cancer", X[i : i + 1000]) for i in range(2000, 20_000, 1000)]
    reqs += [PredictRequest("shifted", X[i : i + 1000] * 1.25) for i in range(0, 20_000, 1000)]
    _serve(service, reqs)
    service.close()  # waits for the background work
    stats = asyncio.run(service.model_stats("breast-cancer"))
    [st] = stats
    assert (st.version, st.state, st.requests, st.rows) == (1, "READY", 2018, 20_000)
    assert st.latency is None  # metrics are off
    assert st.drift is not None and st.drift.sampled_rows >= 500 and st.drift.max_psi < PSI_MODERATE
    assert st.drift.estimated_rows == pytest.approx(20_000, rel=0.15)
    shifted = asyncio.run(service.model_stats("shifted", 1))[0].drift
    assert shifted is not None and shifted.max_psi > PSI_ALERT and len(shifted.drifted()) >= 15
    # 2. the 2000 requests with an id wait for feedback
    assert st.feedback is not None and st.feedback.recorded == 2000 and st.feedback.pending == 2000


def test_periodic_monitoring_work_runs_on_the_event_loop(repo):
    """A feedback drain due during a request on the event loop runs there, after the
    request, not on the monitoring thread: under the GIL, moving pure-Python work to
    another thread saves nothing and adds a hand-off each time."""
    import threading

    service = ScoringService(repo)
    store = repo.resolve("breast-cancer").monitor.feedback
    flushed_on = []
    flush = store.flush

    def recording_flush():
        flushed_on.append(threading.get_ident())
        flush()

    store.flush = recording_flush

    async def go():
        for i in range(600):
            await service.predict(PredictRequest("breast-cancer", BC.data[i % 500 : i % 500 + 1], request_id=f"r{i}"))
            await asyncio.sleep(0)
        return threading.get_ident()

    loop_thread = asyncio.run(go())
    service.close()
    assert len(flushed_on) >= 4 and set(flushed_on) == {loop_thread}
    assert store.metrics().recorded == 600


def test_feedback_through_the_service(repo):
    service = ScoringService(repo)
    X, y = BC.data[:300], BC.target[:300]
    _serve(service, [PredictRequest("breast-cancer", X[i : i + 1], request_id=f"bc-{i}") for i in range(300)])
    items = [FeedbackItem(f"bc-{i}", np.array([y[i]])) for i in range(300)]
    items += [FeedbackItem("nobody", np.array([1])), FeedbackItem("bc-0", np.array([1])),
              FeedbackItem("", np.array([1]))]  # fmt: skip
    results = asyncio.run(service.feedback("breast-cancer", items))
    assert [r.outcome for _, r in results[:300]] == [Outcome.MATCHED] * 300
    assert [(v, r.outcome) for v, r in results[300:]] == [(1, Outcome.UNKNOWN), (1, Outcome.DUPLICATE), (1, Outcome.UNKNOWN)]
    fb = asyncio.run(service.model_stats("breast-cancer"))[0].feedback
    out = repo.resolve("breast-cancer").model.predict(X)
    proba = out["probabilities"]
    assert fb.accuracy == pytest.approx(accuracy_score(y, out["label"]), rel=1e-12)  # the labels served
    assert fb.log_loss == pytest.approx(log_loss(y, proba), rel=1e-9)
    assert (fb.matched, fb.unknown, fb.duplicate, fb.pending) == (300, 2, 1, 0)
    # regression
    Xd, yd = load_diabetes(return_X_y=True)
    _serve(service, [PredictRequest("diabetes", Xd[i : i + 2], request_id=f"d{i}") for i in range(0, 100, 2)])
    asyncio.run(service.feedback("diabetes", [FeedbackItem(f"d{i}", yd[i : i + 2]) for i in range(0, 100, 2)]))
    fb = asyncio.run(service.model_stats("diabetes"))[0].feedback
    pred = repo.resolve("diabetes").model.predict(Xd[:100])["value"]
    assert fb.rmse == pytest.approx(root_mean_squared_error(yd[:100], pred), rel=1e-12)
    service.close()
    with pytest.raises(scorewire.NotFound):
        asyncio.run(service.feedback("no-such-model", items))
    with pytest.raises(scorewire.NotFound):
        asyncio.run(service.model_stats("breast-cancer", 7))


def test_export_sets_the_gauges(repo):
    service = ScoringService(repo)
    X, y = BC.data, BC.target
    _serve(service, [PredictRequest("shifted", X * 1.3)] * 20)
    _serve(service, [PredictRequest("shifted", X[i : i + 1], request_id=f"s{i}") for i in range(100)])
    asyncio.run(service.feedback("shifted", [FeedbackItem(f"s{i}", [y[i]]) for i in range(100)]
                                 + [FeedbackItem("unknown-id", [0])]))  # fmt: skip
    service.close()
    service.export_monitoring()
    psi = REGISTRY.get_sample_value("scorewire_feature_psi", {"model": "shifted", "version": "1", "feature": "mean radius"})
    assert psi is not None and psi > PSI_ALERT
    labels = {"model": "shifted", "version": "1"}
    assert REGISTRY.get_sample_value("scorewire_feedback_accuracy", labels) == pytest.approx(
        accuracy_score(y[:100], repo.resolve("shifted").model.predict(X[:100])["label"]))
    assert REGISTRY.get_sample_value("scorewire_feedback_items_total", {**labels, "outcome": "unknown"}) == 1
    assert REGISTRY.get_sample_value("scorewire_feedback_items_total", {**labels, "outcome": "matched"}) == 100
    service.export_monitoring()  # counters grow by what is new only
    assert REGISTRY.get_sample_value("scorewire_feedback_items_total", {**labels, "outcome": "matched"}) == 100
    assert REGISTRY.get_sample_value("scorewire_feedback_pending", labels) == 0


def test_export_adds_the_drift_bins_to_counters(repo):
    """The fleet rule's inputs: per feature and bin, the estimated rows served (what
    was binned since the last export, added) and the reference share beside them."""
    service = ScoringService(repo)
    service.export_drift_series("diabetes")  # as when the version turns ready: every bin at 0
    labels = {"model": "diabetes", "version": "1", "feature": "age"}
    ref = repo.resolve("diabetes").monitor.drift.reference.features[0]
    assert ref.name == "age"
    for b, share in enumerate(ref.fractions):
        assert REGISTRY.get_sample_value("scorewire_feature_bin_rows_total", {**labels, "bin": str(b)}) == 0
        assert REGISTRY.get_sample_value("scorewire_feature_reference_share", {**labels, "bin": str(b)}) == share
    X = load_diabetes().data
    _serve(service, [PredictRequest("diabetes", X[:400])] * 10)  # 400 rows ≥ k: a stride, weight k
    service.close()

    def bins() -> np.ndarray:
        return np.array([REGISTRY.get_sample_value("scorewire_feature_bin_rows_total", {**labels, "bin": str(b)})
                         for b in range(ref.fractions.size)])  # fmt: skip

    service.export_monitoring()
    first = bins()
    drift = asyncio.run(service.model_stats("diabetes"))[0].drift
    assert first.sum() == pytest.approx(drift.estimated_rows) and first.sum() == pytest.approx(4000, rel=0.1)
    sampled = REGISTRY.get_sample_value("scorewire_drift_sampled_rows_total", {"model": "diabetes", "version": "1"})
    assert sampled == drift.sampled_rows
    service.export_monitoring()  # nothing new: the counters stay
    assert np.array_equal(bins(), first)


def test_histogram_quantile_as_promql():
    bounds, cumulative = [1.0, 2.0, 4.0], [10.0, 30.0, 40.0, 40.0]
    assert histogram_quantile(0.5, bounds, cumulative) == pytest.approx(1.5)
    assert histogram_quantile(0.99, bounds, cumulative) == pytest.approx(2 + 2 * (39.6 - 30) / 10)
    assert histogram_quantile(0.05, bounds, cumulative) == pytest.approx(0.2)
    assert histogram_quantile(0.99, bounds, [0.0, 0.0, 10.0, 20.0]) == 4.0  # in +Inf: the largest bound
    assert math.isnan(histogram_quantile(0.5, bounds, [0.0, 0.0, 0.0, 0.0]))


def test_request_summary_reads_the_request_metrics():
    assert request_summary("summary-model", 3) is None
    for seconds in (0.0004, 0.0004, 0.0008, 0.003):
        REQUEST_DURATION.labels("summary-model", "3", "Predict").observe(seconds)
    REQUESTS.labels("summary-model", "3", "Predict", "OK").inc(3)
    REQUESTS.labels("summary-model", "3", "Predict", "INVALID_ARGUMENT").inc(1)
    s = request_summary("summary-model", 3)
    assert s is not None and (s.answered, s.errors) == (4, 1)
    assert s.latency_mean_s == pytest.approx(0.0046 / 4)
    assert 0.00025 < s.latency_p50_s <= 0.0005 and 0.0025 < s.latency_p99_s <= 0.005
