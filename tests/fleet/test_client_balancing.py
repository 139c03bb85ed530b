"""A fleet without a mesh: three replicas on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all
loopback on Linux), the same port, and the Python gRPC client balancing over them
itself: `round_robin`, client-side health checks (grpc.health.v1 Watch of ""), and a
retry policy for UNAVAILABLE on the idempotent scoring methods, all from the
service config that the README's "Client-side balancing" recipe gives. The same
scenarios as behind Envoy, counted from the clients' side; nothing here compares
times.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator

import grpc
import pytest

from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from ..servers import ROOT
from .fleet import SC, Replica, StreamClient, UnaryClients, p99, replicas, wait_until

pytestmark = pytest.mark.slow

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def readme_recipe() -> tuple[dict, dict[str, int]]:
    """The service config and the channel options of the README's recipe (its
    Python example), as the tests use them: what is documented is what is tested."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Client-side balancing") :]
    config = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    options = dict(re.findall(r'\("(grpc\.[a-z0-9_.]+)", (\d+)\)', python))
    return config, {k: int(v) for k, v in options.items()}


SERVICE_CONFIG, CHANNEL_OPTIONS = readme_recipe()


def channel(fleet: list[Replica]) -> grpc.Channel:
    target = "ipv4:" + ",".join(r.addr for r in fleet)
    return grpc.insecure_channel(
        target, options=[("grpc.service_config", json.dumps(SERVICE_CONFIG)), *CHANNEL_OPTIONS.items()]
    )


def served(r: Replica) -> int:
    """Scoring requests this replica has answered since it started (asked directly:
    GetModelStats of the two models the clients use)."""
    with grpc.insecure_channel(r.addr) as ch:
        stub = pb_grpc.ModelServiceStub(ch)
        return sum(
            v.requests.count
            for name in ("wine", "diabetes")
            for v in stub.GetModelStats(pb.GetModelStatsRequest(name=name), timeout=30).versions
        )


def wait_routed(r: Replica, more: int = 10) -> None:
    start = served(r)
    wait_until(lambda: served(r) >= start + more, f"the clients' requests reach {r.addr}")


@pytest.fixture
def fleet() -> Iterator[list[Replica]]:
    with replicas(3, hosts=HOSTS) as fleet:
        yield fleet


def stream_replica(fleet: list[Replica]) -> Replica:
    """The replica the stream's messages went to (before any unary load)."""
    counts = {r.addr: served(r) for r in fleet}
    holding = [r for r in fleet if counts[r.addr] > 0]
    assert len(holding) == 1, counts
    return holding[0]


def report(name: str, unary: UnaryClients, stream: StreamClient, **extra: object) -> None:
    c = stream.counts
    print(f"\n[{name}, client-side] unary: sent {unary.sent}, failed {len(unary.failures())} {dict(unary.codes())}")
    print(f"[{name}, client-side] stream: sent {c.sent}, answered {c.answered}, lost {stream.lost}, "
          f"resent {c.resent}, streams {stream.streams_opened}, ended {dict(c.ends)} {c.end_details} {extra}")  # fmt: skip


def test_the_recipe_is_round_robin_with_health_checks_and_retries():
    assert SERVICE_CONFIG["loadBalancingConfig"] == [{"round_robin": {}}]
    assert SERVICE_CONFIG["healthCheckConfig"] == {"serviceName": ""}
    (method_config,) = SERVICE_CONFIG["methodConfig"]
    assert {(n["service"], n["method"]) for n in method_config["name"]} == {
        ("scorewire.v1.PredictService", "Predict"),
        ("inference.GRPCInferenceService", "ModelInfer"),
    }
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_rolling_restart_loses_nothing(fleet):
    """
    1. Three replicas (default flags) on three loopback addresses; steady load:
       four unary clients and a stream client on one balancing channel.
    2. Each replica in turn: SIGTERM; wait for its exit (0); start it again on the
       same address; wait until it is SERVING and the clients' requests reach it.
    Result: no unary request failed; no stream message was lost.
    """
    with channel(fleet) as ch, UnaryClients(ch) as unary, StreamClient(ch) as stream:
        unary.wait_answers(100)
        stream.wait_answers(20)
        for r in fleet:
            r.signal(signal.SIGTERM)
            assert r.wait_exit() == 0
            r.start()
            wait_routed(r)
        unary.wait_answers(100)
        stream.wait_answers(20)
    report("rolling restart", unary, stream)
    assert unary.failures() == []
    assert stream.lost == 0 and stream.counts.errors == 0
    assert set(stream.counts.ends) <= {SC.OK, SC.UNAVAILABLE}, stream.counts.ends


def test_a_killed_replica_costs_no_request(fleet):
    """
    1. The stream client opens its stream (on the victim), then four unary clients.
    2. SIGKILL the victim; wait for 300 more answers; start it again; wait until the
       clients' requests reach it.
    Result: no unary request failed (the retry policy sent them to the others); the
    stream on it ended UNAVAILABLE, the client opened a new one and sent its
    unanswered messages again: none lost.
    """
    with channel(fleet) as ch, channel(fleet) as sch, StreamClient(sch) as stream:
        stream.wait_answers(20)
        victim = stream_replica(fleet)
        with UnaryClients(ch) as unary:
            unary.wait_answers(100)
            victim.signal(signal.SIGKILL)
            assert victim.wait_exit() == -signal.SIGKILL
            unary.wait_answers(300)
            stream.wait_answers(50)
            victim.start()
            wait_routed(victim)
            unary.wait_answers(100)
    report("SIGKILL", unary, stream)
    assert unary.failures() == []
    assert stream.lost == 0 and stream.counts.errors == 0
    assert stream.counts.ends[SC.UNAVAILABLE] >= 1 and set(stream.counts.ends) <= {SC.OK, SC.UNAVAILABLE}


def test_a_hung_replica_is_routed_around(fleet):
    """
    1. The stream client opens its stream (on the victim), then four unary clients.
    2. SIGSTOP the victim; wait until the clients have been answered 300 times more
       (by the others); SIGCONT; wait until the clients' requests reach it again.
    Result: no unary request failed: keepalive pings find the hung connection dead
    and the calls on it are retried on the others (the retry policy), and
    the channel stops using it. The stream's client gave up on it and sent its
    messages again: none lost. The p99 latency of the requests sent while it was
    hung is printed.
    """
    with channel(fleet) as ch, channel(fleet) as sch, StreamClient(sch) as stream:
        stream.wait_answers(20)
        victim = stream_replica(fleet)
        with UnaryClients(ch) as unary:
            unary.wait_answers(100)
            stopped = time.monotonic()
            victim.signal(signal.SIGSTOP)
            unary.wait_answers(300)
            stream.wait_answers(50)
            resumed = time.monotonic()
            victim.signal(signal.SIGCONT)
            wait_routed(victim)
            unary.wait_answers(100)
    during = unary.latencies(stopped, resumed)
    report("SIGSTOP", unary, stream, requests_during=len(during), p99_during_s=round(p99(during), 3),
           max_during_s=round(max(during, default=0), 3))  # fmt: skip
    assert unary.failures() == []
    assert stream.lost == 0 and stream.counts.errors == 0
