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

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.observability import FEATURE_PSI_METRIC
from scorewire.observability import metrics as _metrics

from ..servers import server_process
from .helpers import free_port, wait_for

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
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", "rules.yml")
    out = promtool("check", "config", "prometheus.yml")
    assert "is valid prometheus config file syntax" in out


def test_the_alert_rules_use_only_metrics_scorewire_exports():
    exported = set()
    for metric in (_metrics.REQUEST_DURATION, _metrics.REQUESTS, _metrics.IN_FLIGHT, _metrics.QUEUE_WAIT,
                   _metrics.SCORING, _metrics.BATCH_ROWS, _metrics.QUEUE_ROWS, _metrics.MODEL_STATE,
                   _metrics.FEATURE_PSI):  # fmt: skip
        for family in metric.describe():
            exported |= {family.name, f"{family.name}_total", f"{family.name}_bucket",
                         f"{family.name}_count", f"{family.name}_sum"}  # fmt: skip
    rules = (DEPLOY / "rules.yml").read_text()
    used = set(re.findall(r"\bscorewire_[a-z_]+", rules))
    assert {"scorewire_requests_total", "scorewire_request_duration_seconds_bucket", FEATURE_PSI_METRIC} <= used
    assert used <= exported


def test_the_alert_rules_fire_when_they_should():
    """rules.test.yml: error rate, p99 latency, drift, failed model, target down."""
    assert "SUCCESS" in promtool("test", "rules", "rules.test.yml")


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
            "ScorewireModelFailed", "ScorewireDown",
        }  # fmt: skip
        assert all(r["health"] == "ok" for r in rules), rules
