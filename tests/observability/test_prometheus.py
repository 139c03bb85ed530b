"""A real Prometheus server scrapes scorewire; deploy/prometheus/ passes promtool.

These tests need Debian's ``prometheus`` package (``make test`` installs it): they
fail, never skip, when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

import scorewire
from scorewire.formats.reference import Reference
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.monitoring.drift import PSI_ALERT, psi
from scorewire.observability import metrics as _metrics

from ..servers import server_process
from ..test_workers import children, connections, serving_ends
from .helpers import free_port, scrape, value, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
MISSING = "not installed: `make test` installs Debian's prometheus package (apt-get install prometheus)"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} {MISSING}"
    return path


def promtool(*args: str) -> str:
    r = subprocess.run([tool("promtool"), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_promtool_accepts_the_rules_and_the_scrape_config():
    assert "SUCCESS: 10 rules found" in promtool("check", "rules", "rules.yml")
    out = promtool("check", "config", "prometheus.yml")
    assert "is valid prometheus config file syntax" in out


def test_the_alert_rules_use_only_metrics_scorewire_exports():
    exported = set()
    for metric in (_metrics.REQUEST_DURATION, _metrics.REQUESTS, _metrics.IN_FLIGHT, _metrics.QUEUE_WAIT,
                   _metrics.SCORING, _metrics.BATCH_ROWS, _metrics.QUEUE_ROWS, _metrics.MODEL_STATE,
                   _metrics.FEATURE_PSI, _metrics.FEATURE_BIN_ROWS, _metrics.FEATURE_REFERENCE_SHARE,
                   _metrics.DRIFT_SAMPLED_ROWS):  # fmt: skip
        for family in metric.describe():
            exported |= {family.name, f"{family.name}_total", f"{family.name}_bucket",
                         f"{family.name}_count", f"{family.name}_sum"}  # fmt: skip
    rules = (DEPLOY / "rules.yml").read_text()
    used = set(re.findall(r"\bscorewire_[a-z_]+", rules))
    assert {"scorewire_requests_total", "scorewire_request_duration_seconds_bucket", "scorewire_feature_bin_rows_total",
            "scorewire_feature_reference_share", "scorewire_drift_sampled_rows_total"} <= used  # fmt: skip
    assert used <= exported


def test_the_alert_rules_fire_when_they_should():
    """rules.test.yml: error rate, p99 latency, the fleet's drift, failed model, target down."""
    assert "SUCCESS" in promtool("test", "rules", "rules.test.yml")


def promtool_series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], tuple[float, float]]:
    """The input series of a rules.test.yml written as 'START+STEPxN' or 'VALUExN':
    {(name, labels): (start, step a minute)}."""
    found = {}
    for name, labels, values in re.findall(r"series: '([a-z_:]+)\{([^}]*)\}'\s*\n\s*values: '([^']*)'", text):
        m = re.fullmatch(r"([0-9.e-]+)(?:\+([0-9.e-]+))?x[0-9]+", values)
        if m is None:
            continue
        key = (name, frozenset(re.findall(r'(\w+)="([^"]*)"', labels)))
        found[key] = (float(m.group(1)), float(m.group(2) or 0.0))
    return found


def test_the_fleet_psi_rules_test_expects_is_the_servers_formula():
    """Every fleet PSI rules.test.yml expects is what scorewire.monitoring.drift.psi
    gives for the shares its two replicas' counters make (each minute's rows
    summed over replicas), against the reference shares it feeds."""
    text = (DEPLOY / "rules.test.yml").read_text()
    series = promtool_series(text)
    rows: dict[tuple[str, str, str], dict[int, float]] = {}
    reference: dict[tuple[str, str, str], dict[int, float]] = {}
    for (name, labels), (start, step) in series.items():
        ls = dict(labels)
        if name == "scorewire_feature_bin_rows_total":
            bins = rows.setdefault((ls["model"], ls["version"], ls["feature"]), {})
            bins[int(ls["bin"])] = bins.get(int(ls["bin"]), 0.0) + step  # summed over replicas
        elif name == "scorewire_feature_reference_share":
            reference.setdefault((ls["model"], ls["version"], ls["feature"]), {})[int(ls["bin"])] = start
    expected = {
        (ls["model"], ls["version"], ls["feature"]): float(v)
        for ls, v in ((dict(re.findall(r'(\w+)="([^"]*)"', labels)), v)
                      for labels, v in re.findall(r"- labels: '(\{[^}]*feature[^}]*\})'\s*\n\s*value: ([0-9.]+)", text))
    }  # fmt: skip
    assert set(expected) == set(rows) == set(reference) and len(expected) == 4
    for key, stated in expected.items():
        n = len(reference[key])
        served = np.array([rows[key][i] for i in range(n)])
        psi_value = psi(served / served.sum(), [reference[key][i] for i in range(n)])
        assert round(psi_value, 6) == stated, (key, psi_value)
    # and the margins the test's alerts rest on: clear of the threshold either way
    assert sorted(v for v in expected.values()) == pytest.approx([0.040547, 0.362459, 0.87566, 4.604318])
    assert all(abs(v - PSI_ALERT) > 0.15 for v in expected.values())


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on a free port with a config made by the test; yields a
    function that starts it for a scrape target and returns its query function."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_port: int):
        api = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {DEPLOY / 'rules.yml'}\n"
            "scrape_configs:\n  - job_name: scorewire\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(
            [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{api}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        log.close()

        def get(path: str, **params: str):
            url = f"http://127.0.0.1:{api}{path}?{urllib.parse.urlencode(params)}"
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = json.load(r)
            except OSError:
                assert procs[-1].poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
                return None  # not listening yet
            assert body["status"] == "success", body
            return body["data"]

        return get

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


def scalar(get, query: str) -> float | None:
    data = get("/api/v1/query", query=query)
    if not data or not data["result"]:
        return None
    return float(data["result"][0]["value"][1])


def test_prometheus_counts_the_requests_the_test_sent(prometheus):
    port = free_port()
    with server_process("--metrics-port", str(port)) as server, grpc.insecure_channel(server.addr) as channel:
        # 1. requests of both protocols, good and bad
        predict = pb_grpc.PredictServiceStub(channel)
        infer = oip_grpc.GRPCInferenceServiceStub(channel)
        request = pb.PredictRequest(model="breast-cancer", input=array_to_tensor(np.zeros((2, 30)), raw=True))
        for _ in range(30):
            predict.Predict(request, timeout=10)
        infer_request = oip.ModelInferRequest(model_name="iris-forest")
        infer_request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
        infer_request.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
        for _ in range(7):
            infer.ModelInfer(infer_request, timeout=10)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                predict.Predict(pb.PredictRequest(model="no-such-model", input=request.input), timeout=10)
        sent = 40

        # 2. Prometheus scrapes scorewire (first scrape a few seconds after it starts)
        get = prometheus(port)
        wait_for(lambda: scalar(get, 'up{job="scorewire"}') == 1, 60, "Prometheus to scrape scorewire")
        counted = wait_for(lambda: scalar(get, "sum(scorewire_requests_total)"), 30, "the request counter")

        # 3. what it stored is what was sent, by status code too
        assert counted == sent
        assert scalar(get, 'sum(scorewire_requests_total{code="OK"})') == 37
        assert scalar(get, 'sum(scorewire_requests_total{code="NOT_FOUND"})') == 3
        assert scalar(get, 'sum(scorewire_request_duration_seconds_count{rpc="ModelInfer"})') == 7
        assert scalar(get, 'scorewire_model_state{model="wine",state="READY"}') == 1

        # 4. the alert rules of deploy/prometheus/ load and evaluate
        def rules_evaluated():
            groups = get("/api/v1/rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

        rules = wait_for(rules_evaluated, 30, "the alert rules to be evaluated")
        assert {r["name"] for r in rules} == {
            "ScorewireHighErrorRate", "ScorewireHighLatencyP99", "ScorewireFeatureDrift",
            "ScorewireModelFailed", "ScorewireDown", "scorewire:feature_bin_rows:rate1h",
            "scorewire:feature_bin_share:rate1h", "scorewire:feature_reference_share:clamped",
            "scorewire:feature_psi:rate1h", "scorewire:drift_sampled_rows:increase1h",
        }  # fmt: skip
        assert all(r["health"] == "ok" for r in rules), rules


def test_prometheus_computes_the_fleet_psi_of_two_workers(prometheus):
    """--workers 2: the supervisor's /metrics sums both workers' drift bin counters
    (exactly: 1024-row requests of one repeated row are estimated exactly, every
    sampled row in one bin), and Prometheus' recording rule turns them into the
    PSI the server's formula gives for the rows sent."""
    bc = load_breast_cancer().data
    reference = Reference.load(scorewire.demo_repository() / "breast-cancer" / "1", n_features=30)
    assert reference is not None
    rows = {0: bc[0], 1: bc[300]}  # two rows, each in its own bin of most features
    port = free_port()
    with server_process("--workers", "2", "--metrics-port", str(port), "--monitor-interval-s", "0.2") as server:
        # 1. both workers ready: every bin's counter exists, at 0, before Prometheus starts
        ready = {"model": "breast-cancer", "version": "1", "state": "READY"}
        wait_for(lambda: value(scrape(port), "scorewire_model_state", **ready) == 2, what="both workers ready")
        get = prometheus(port)
        wait_for(lambda: scalar(get, 'count(scorewire_feature_bin_rows_total{model="breast-cancer"})') == 300, 60,
                 "Prometheus to scrape the bins at 0")  # fmt: skip
        # 2. 8 connections over both workers; connection i sends 1 + i % 3 requests
        #    of 1024 copies of row i % 2 (15 requests: k stays at its floor of 16)
        sent = {0: 0, 1: 0}
        with connections(server.addr, 8) as channels:
            for i, channel in enumerate(channels):
                stub = pb_grpc.PredictServiceStub(channel)
                X = np.tile(rows[i % 2], (1024, 1))
                for _ in range(1 + i % 3):
                    stub.Predict(pb.PredictRequest(model="breast-cancer", input=array_to_tensor(X, raw=True)), timeout=30)
                    sent[i % 2] += 1024
            workers = children(server.proc.pid)
            assert set(serving_ends(server.port, workers).values()) == set(workers)  # both served some
        # 3. the supervisor's sum, bin by bin: the rows sent
        expected = np.zeros((30, 10))
        for which, n in sent.items():
            for j, f in enumerate(reference.features):
                expected[j, np.searchsorted(f.edges, rows[which][j], side="right")] += n
        labels = {"model": "breast-cancer", "version": "1"}
        requests = sum(sent.values()) // 1024
        assert requests == 15
        wait_for(lambda: value(scrape(port), "scorewire_drift_sampled_rows_total", **labels) == requests * 64, 30,
                 "the workers to export what they binned")  # fmt: skip
        m = scrape(port)
        got = np.array([[value(m, "scorewire_feature_bin_rows_total", **labels, feature=f.name, bin=str(b))
                         for b in range(10)] for f in reference.features])  # fmt: skip
        assert np.array_equal(got, expected)
        # 4. Prometheus' fleet PSI, feature by feature: the formula on those shares
        want = {f.name: psi(expected[j] / expected[j].sum(), f.fractions) for j, f in enumerate(reference.features)}

        def fleet_psi():
            data = get("/api/v1/query", query='scorewire:feature_psi:rate1h{model="breast-cancer"}')
            got = {r["metric"]["feature"]: float(r["value"][1]) for r in (data or {}).get("result", [])}
            close = len(got) == 30 and all(abs(got[n] - v) <= 1e-9 * max(1.0, v) for n, v in want.items())
            return got if close else None

        wait_for(fleet_psi, 60, "the fleet PSI of the rows sent")
        assert sum(v >= PSI_ALERT for v in want.values()) >= 20  # one-bin traffic is far from the reference
