"""deploy/envoy/: the template's fields, the render script, and what Envoy makes of
the rendered configuration (its admin /config_dump): the settings the README and
the scenarios in test_envoy.py rely on."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from .fleet import DEPLOY, Envoy

RENDER = [sys.executable, str(DEPLOY / "render.py")]
SCORING = ["/scorewire.v1.PredictService/Predict", "/inference.GRPCInferenceService/ModelInfer"]


def test_the_template_has_only_the_documented_fields():
    fields = set(re.findall(r"\$\{(\w+)\}", (DEPLOY / "envoy.yaml.in").read_text()))
    assert fields == {"LISTEN_ADDRESS", "LISTEN_PORT", "ADMIN_PORT", "ENDPOINTS", "MAX_REQUESTS", "MAX_PENDING_REQUESTS",
                      "UPSTREAM_TLS"}


@pytest.mark.parametrize("replica", ["localhost:50051", "127.0.0.1:0", "127.0.0.1", "127.0.0.1:70000"])
def test_render_refuses_what_a_static_cluster_cannot_take(replica):
    r = subprocess.run([*RENDER, "--replica", replica], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--replica" in r.stderr


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    """What Envoy runs once the shipped template is rendered for three replicas
    (nothing listens there: only the configuration is read)."""
    envoy = Envoy(tmp_path_factory.mktemp("envoy"), ["127.0.0.1:9", "127.0.0.2:9", "[::1]:9"])
    try:
        dump = json.loads(envoy.get("/config_dump"))
    finally:
        envoy.close()
    found = {}
    for c in dump["configs"]:
        if c["@type"].endswith("ClustersConfigDump"):
            found["cluster"] = c["static_clusters"][0]["cluster"]
        if c["@type"].endswith("ListenersConfigDump"):
            listener = c["static_listeners"][0]["listener"]
            found["listener"] = listener
            found["hcm"] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return found


def test_only_the_idempotent_scoring_rpcs_are_retried(config):
    routes = config["hcm"]["route_config"]["virtual_hosts"][0]["routes"]
    retried = {r["match"]["path"]: r["route"]["retry_policy"] for r in routes if "retry_policy" in r["route"]}
    assert sorted(retried) == sorted(SCORING)
    for policy in retried.values():
        # RESOURCE_EXHAUSTED (an overloaded replica) is not among them
        assert policy["retry_on"] == "unavailable,reset,connect-failure,refused-stream"
        assert policy["num_retries"] == 2 and policy["per_try_timeout"] == "1s"
        assert policy["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    (rest,) = [r for r in routes if "prefix" in r["match"]]  # streams, control plane, health: not retried
    assert rest["match"]["prefix"] == "/" and "retry_policy" not in rest["route"]
    for r in routes:  # no fixed route timeout: the client's deadline bounds a call
        assert r["route"]["timeout"] == "0s" and r["route"]["max_stream_duration"]["grpc_timeout_header_max"] == "0s"


def test_health_checks_outlier_detection_and_breakers(config):
    cluster = config["cluster"]
    (hc,) = cluster["health_checks"]
    assert "grpc_health_check" in hc and hc["grpc_health_check"].get("service_name", "") == ""
    assert hc["interval"] == "0.250s" and hc["no_traffic_interval"] == "1s"  # well inside the 1 s drain delay
    assert cluster["common_lb_config"]["update_merge_window"] == "0s"  # health changes take effect at once
    assert cluster["outlier_detection"]["consecutive_gateway_failure"] == 3
    (breakers,) = cluster["circuit_breakers"]["thresholds"]
    assert breakers["max_requests"] == 3 * 256  # three replicas at scorewire's default --max-concurrent-rpcs
    assert breakers["retry_budget"]["budget_percent"]["value"] == 20
    endpoints = [e["endpoint"]["address"]["socket_address"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert [(e["address"], e["port_value"]) for e in endpoints] == [("127.0.0.1", 9), ("127.0.0.2", 9), ("::1", 9)]


def test_a_tripped_breaker_answers_resource_exhausted(config):
    (mapper,) = config["hcm"]["local_reply_config"]["mappers"]
    assert mapper["filter"]["response_flag_filter"]["flags"] == ["UO"]
    assert mapper["headers_to_add"][0]["header"] == {"key": "grpc-status", "value": "8"}


def test_the_admin_api_is_on_loopback_only(config):
    text = subprocess.run([*RENDER, "--replica", "127.0.0.1:50051", "--listen", "0.0.0.0:8080"],
                          capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    admin = text[text.index("admin:") : text.index("static_resources:")]
    assert "address: 127.0.0.1," in admin
    assert config["listener"]["address"]["socket_address"]["address"] == "127.0.0.1"
