"""A fleet behind Envoy, on loopback: three `scorewire serve` replicas with their
default flags, Envoy running the shipped deploy/envoy/ configuration (rendered by
its own script), and a steady 1-row load through Envoy — a few threads each keeping
a unary request in flight, and a PredictStream client — counted from the clients'
side. Each scenario orders its steps by events (a replica's exit, Envoy's admin API
reporting a host healthy or not, a number of answers) and asserts counts, never
times. The counts are printed (``pytest -s``) and written up in the README's
"Running a fleet".
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import scorewire
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from .fleet import (
    PATIENCE_S,
    SC,
    Envoy,
    Replica,
    StreamClient,
    UnaryClients,
    infer_request,
    p99,
    predict_request,
    replicas,
)

pytestmark = pytest.mark.slow


class Fleet:
    def __init__(self, replicas: list[Replica], envoy: Envoy) -> None:
        self.replicas, self.envoy = replicas, envoy

    @property
    def addrs(self) -> list[str]:
        return [r.addr for r in self.replicas]

    def stream_host(self) -> Replica:
        """The replica the (only) open stream is on: before the unary load starts,
        the one request Envoy has in flight."""
        active = {a: h.rq_active for a, h in self.envoy.hosts().items() if a in self.addrs}
        holding = [r for r in self.replicas if active[r.addr] == 1]
        assert len(holding) == 1 and sum(active.values()) == 1, active
        return holding[0]

    def retries(self) -> dict[str, int]:
        stats = self.envoy.stats("cluster.scorewire.upstream_rq_")
        return {k.rsplit(".", 1)[1]: v for k, v in stats.items()
                if k.rsplit(".", 1)[1] in ("upstream_rq_retry", "upstream_rq_retry_success",
                                           "upstream_rq_retry_overflow", "upstream_rq_per_try_timeout")}  # fmt: skip


@pytest.fixture
def make_fleet(tmp_path) -> Iterator:
    """Start three replicas (extra flags: ``args``) and Envoy in front of them; wait
    until Envoy sees all three healthy. Everything is stopped at the end."""
    started: list = []

    def make(args: tuple[str, ...] = (), max_concurrent_rpcs: int = 256) -> Fleet:
        cm = replicas(3, args=args)
        fleet = cm.__enter__()
        started.append(cm)
        envoy = Envoy(tmp_path, [r.addr for r in fleet], max_concurrent_rpcs)
        started.append(envoy)
        envoy.wait_healthy([r.addr for r in fleet])
        return Fleet(fleet, envoy)

    yield make
    for item in reversed(started):
        if isinstance(item, Envoy):
            item.close()
        else:
            item.__exit__(None, None, None)


def report(name: str, unary: UnaryClients, stream: StreamClient | None, fleet: Fleet, **extra: object) -> None:
    print(f"\n[{name}] unary: sent {unary.sent}, failed {len(unary.failures())} {dict(unary.codes())}")
    if stream is not None:
        c = stream.counts
        print(f"[{name}] stream: sent {c.sent}, answered {c.answered}, lost {stream.lost}, resent {c.resent}, "
              f"streams {stream.streams_opened}, ended {dict(c.ends)}, stalled {c.stalled}")  # fmt: skip
    print(f"[{name}] envoy: {fleet.retries()} {extra}")


def test_rolling_restart_loses_nothing(make_fleet):
    """
    1. Three replicas with scorewire's default flags (drain delay 1 s) behind Envoy;
       steady load: four unary clients, one stream client.
    2. Each replica in turn: SIGTERM; wait for it to exit (0); start it again on the
       same port; wait until it is SERVING, Envoy sees it healthy and routes to it.
    Result: no unary request failed; every stream message was answered (a stream that
    ended did so with UNAVAILABLE, and the client sent its unanswered messages again
    on a new one), and the stream was moved at least once.
    """
    fleet = make_fleet()
    with (
        grpc.insecure_channel(fleet.envoy.addr) as ch,
        grpc.insecure_channel(fleet.envoy.addr) as sch,
        UnaryClients(ch) as unary,
        StreamClient(sch) as stream,
    ):
        unary.wait_answers(100)
        stream.wait_answers(20)
        # 2.
        for r in fleet.replicas:
            r.signal(signal.SIGTERM)
            assert r.wait_exit() == 0
            r.start()
            fleet.envoy.wait_healthy([r.addr])
            fleet.envoy.wait_routed(r.addr)
        unary.wait_answers(100)
        stream.wait_answers(20)
    report("rolling restart", unary, stream, fleet)
    assert unary.failures() == []
    assert stream.lost == 0 and stream.counts.errors == 0
    assert set(stream.counts.ends) <= {SC.OK, SC.UNAVAILABLE}, stream.counts.ends
    assert stream.counts.ends[SC.UNAVAILABLE] >= 1  # every replica restarted: the stream's too


def test_a_killed_replica_costs_no_request(make_fleet):
    """
    1. Three replicas behind Envoy; the stream client opens its stream (on one
       replica: the victim), then four unary clients start.
    2. SIGKILL the victim; wait until Envoy sees it unhealthy and the clients have
       been answered 200 more times; start it again on its port, wait until Envoy
       routes to it.
    Result: no unary request failed (those on the killed replica were retried); the
    stream on it ended with UNAVAILABLE, the client reconnected through Envoy and
    every message was answered.
    """
    fleet = make_fleet()
    with (
        grpc.insecure_channel(fleet.envoy.addr) as ch,
        grpc.insecure_channel(fleet.envoy.addr) as sch,
        StreamClient(sch) as stream,
    ):
        stream.wait_answers(20)
        victim = fleet.stream_host()
        with UnaryClients(ch) as unary:
            unary.wait_answers(100)
            # 2.
            victim.signal(signal.SIGKILL)
            assert victim.wait_exit() == -signal.SIGKILL
            flags = fleet.envoy.wait_unhealthy(victim.addr)
            unary.wait_answers(200)
            stream.wait_answers(50)
            victim.start()
            fleet.envoy.wait_healthy([victim.addr])
            fleet.envoy.wait_routed(victim.addr)
            unary.wait_answers(100)
    report("SIGKILL", unary, stream, fleet, flags=flags, stream_end=stream.counts.end_details)
    assert unary.failures() == []
    assert stream.lost == 0 and stream.counts.errors == 0
    # The stream on the killed replica was cut: Envoy resets the client's stream when
    # the replica's connection dies after the answers began (gRPC: INTERNAL, "RST_STREAM
    # with error code 2"; no Envoy setting makes it UNAVAILABLE). The client opened a
    # new one through Envoy and sent its unanswered messages again. (A new stream that
    # Envoy sent to the dead replica before it noticed would end UNAVAILABLE: the
    # client opens another.)
    ends = stream.counts.ends
    assert set(ends) <= {SC.OK, SC.UNAVAILABLE, SC.INTERNAL} and ends[SC.INTERNAL] <= 1, ends
    assert sum(ends.values()) - ends[SC.OK] >= 1 and stream.streams_opened >= 2, ends


def test_a_hung_replica_is_routed_around(make_fleet):
    """
    1. Three replicas behind Envoy; the stream client opens its stream (on the
       victim), then four unary clients start.
    2. SIGSTOP the victim (the process hangs, its socket stays open); wait until
       Envoy takes it out (health checks time out, or the per-try timeouts eject it),
       then for 300 more answers; SIGCONT; wait until Envoy routes to it again.
    Result: no unary request failed: those caught on the hung replica timed out per
    try (1 s) and were retried elsewhere. The stream on it got no answers: its client
    gave up on it (no answer in 5 s), opened a new one and sent its messages again;
    none was lost. The p99 latency of the requests sent while it was hung is
    printed.
    """
    fleet = make_fleet()
    with (
        grpc.insecure_channel(fleet.envoy.addr) as ch,
        grpc.insecure_channel(fleet.envoy.addr) as sch,
        StreamClient(sch) as stream,
    ):
        stream.wait_answers(20)
        victim = fleet.stream_host()
        with UnaryClients(ch) as unary:
            unary.wait_answers(100)
            # 2.
            stopped = time.monotonic()
            victim.signal(signal.SIGSTOP)
            flags = fleet.envoy.wait_unhealthy(victim.addr)
            out = time.monotonic()
            unary.wait_answers(300)
            stream.wait_answers(50)
            victim.signal(signal.SIGCONT)
            fleet.envoy.wait_healthy([victim.addr])
            fleet.envoy.wait_routed(victim.addr)
            unary.wait_answers(100)
    during = unary.latencies(stopped, out)
    report("SIGSTOP", unary, stream, fleet, flags=flags, requests_during=len(during),
           p99_during_s=round(p99(during), 3), max_during_s=round(max(during, default=0), 3))  # fmt: skip
    assert unary.failures() == []
    assert stream.lost == 0 and stream.counts.errors == 0
    assert stream.counts.stalled >= 1, stream.counts  # its stream was on the hung replica


def slow_repository(root: Path, delay_us: int = 20_000) -> Path:
    """The demo repository plus ``slow``: the demo's diabetes model, batched, each
    request waiting ``delay_us`` for company. Calls then stay in flight long enough
    for a few client tasks to fill every replica's --max-concurrent-rpcs."""
    repo = root / "models"
    shutil.copytree(scorewire.demo_repository(), repo)
    shutil.copytree(repo / "diabetes", repo / "slow")
    (repo / "slow" / "model.toml").write_text(
        f'description = "diabetes, batched: {delay_us} us for company"\n'
        f"[batching]\nenabled = true\nmax_delay_us = {delay_us}\nmax_batch_rows = 4096\n"
    )
    return repo


def test_overload_is_shed_and_every_replica_recovers(make_fleet, tmp_path):
    """
    1. Three replicas with --max-concurrent-rpcs 4 behind Envoy sized for them
       (at most 12 calls in flight to the cluster); a model whose calls wait 20 ms
       for company in its batcher, so calls stay in flight.
    2. 120 calls kept in flight through Envoy (10× what the fleet takes), 5000 in
       all, by turns Predict and ModelInfer; a client told RESOURCE_EXHAUSTED waits
       50 ms before its next call.
    Result: every call is answered OK or refused RESOURCE_EXHAUSTED (by a replica, or
    by Envoy's circuit breaker, whose answer the shipped configuration makes
    RESOURCE_EXHAUSTED instead of Envoy's UNAVAILABLE), nothing else; some are
    refused, some answered. No health check of Envoy's failed meanwhile (a replica
    answers them whatever its load). Then, with no restart, every replica is
    SERVING and answers a request, and Envoy sees all three healthy.
    """
    limit = 4
    repo = slow_repository(tmp_path)
    fleet = make_fleet(("--repo", str(repo), "--max-concurrent-rpcs", str(limit)), max_concurrent_rpcs=limit)
    codes: collections.Counter[tuple[SC, str]] = collections.Counter()

    async def overload(in_flight: int = 10 * 3 * limit, total: int = 5000) -> None:
        sent = 0
        async with grpc.aio.insecure_channel(fleet.envoy.addr) as channel:
            predict = pb_grpc.PredictServiceStub(channel).Predict
            infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            v1 = predict_request(0, model="slow")
            oip = infer_request(model="slow")

            async def client() -> None:
                nonlocal sent
                while sent < total:
                    sent += 1
                    try:
                        if sent % 2:
                            await infer(oip, timeout=PATIENCE_S)
                        else:
                            await predict(v1, timeout=PATIENCE_S)
                        codes[SC.OK, ""] += 1
                    except grpc.aio.AioRpcError as err:
                        codes[err.code(), err.details() or ""] += 1
                        if err.code() is SC.RESOURCE_EXHAUSTED:
                            await asyncio.sleep(0.05)  # a client backs off when told the fleet is full

            await asyncio.gather(*(client() for _ in range(in_flight)))

    asyncio.run(overload())
    stats = fleet.envoy.stats("cluster.scorewire.")
    print(f"\n[overload] {sum(codes.values())} calls: " + ", ".join(f"{c.name} {d!r}: {n}" for (c, d), n in codes.items()))
    print(f"[overload] envoy: { {k.split('.', 2)[2]: v for k, v in stats.items() if v and ('overflow' in k or 'health_check' in k)} }")
    assert set(code for code, _ in codes) <= {SC.OK, SC.RESOURCE_EXHAUSTED}, codes
    assert codes[SC.OK, ""] > 0 and sum(n for (c, _), n in codes.items() if c is SC.RESOURCE_EXHAUSTED) > 0
    # the replicas' health checks were answered SERVING throughout: busy is not unhealthy
    assert stats["cluster.scorewire.health_check.failure"] == 0, stats
    # every replica recovered by itself: SERVING, and answers
    for r in fleet.replicas:
        with grpc.insecure_channel(r.addr) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            pb_grpc.PredictServiceStub(channel).Predict(predict_request(0), timeout=PATIENCE_S)
    fleet.envoy.wait_healthy(fleet.addrs)


def test_feedback_through_envoy_is_joined_wherever_it_lands(tmp_path):
    """
    1. Three replicas, each told the others' addresses (--peers), behind Envoy.
    2. 600 predictions with request ids through Envoy (spread over the replicas).
    3. Their ground truth through Envoy, 30 items per Feedback call, shuffled.
    Result: at least 99% of the items are MATCHED, and the replicas' own counts add
    up to every item exactly once.
    """
    import random

    from scorewire.grpc._codec import array_to_tensor, tensor_to_array
    from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb

    from ..observability.helpers import free_port

    ports = [free_port() for _ in range(3)]
    peers = ",".join(f"127.0.0.1:{p}" for p in ports)
    fleet = [Replica("127.0.0.1", p, ("--peers", peers)) for p in ports]
    envoy = None
    rng = random.Random(5)
    rows = np.random.default_rng(5).normal(size=(600, 13))
    try:
        for r in fleet:  # 1.
            r.start()
        envoy = Envoy(tmp_path, [r.addr for r in fleet])
        envoy.wait_healthy([r.addr for r in fleet])
        with grpc.insecure_channel(envoy.addr) as channel:
            stub = pb_grpc.PredictServiceStub(channel)
            sent = []
            for i in range(600):  # 2.
                rid = f"fb-{i}"
                r = stub.Predict(pb.PredictRequest(model="wine", request_id=rid, input=array_to_tensor(rows[i : i + 1], raw=True)), timeout=30)
                sent.append((rid, int(tensor_to_array(r.outputs["label"])[0])))
            rng.shuffle(sent)
            matched = 0
            for k in range(0, len(sent), 30):  # 3.
                items = [pb.FeedbackItem(request_id=rid, truth=array_to_tensor(np.array([label]), raw=False))
                         for rid, label in sent[k : k + 30]]  # fmt: skip
                matched += stub.Feedback(pb.FeedbackRequest(model="wine", items=items), timeout=30).matched
        per_replica = []
        for r in fleet:
            with grpc.insecure_channel(r.addr) as direct:
                [v] = pb_grpc.ModelServiceStub(direct).GetModelStats(pb.GetModelStatsRequest(name="wine"), timeout=30).versions
                per_replica.append(v.feedback.matched)
    finally:
        if envoy is not None:
            envoy.close()
        for r in fleet:
            r.close()
    print(f"\n[feedback through envoy] {matched} of {len(sent)} MATCHED; per replica {per_replica}")
    assert matched / len(sent) >= 0.99
    assert sum(per_replica) == matched and sum(1 for m in per_replica if m) >= 2  # joined on several replicas
