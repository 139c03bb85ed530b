"""Feedback joined wherever it lands, with real server processes: predictions and
feedback reach different processes (``--workers``: other connections; replicas:
a random one per call), and still at least 99% of the items are MATCHED, each
counted once over the fleet; a replica that is hung (SIGSTOP) or down (nothing
listening at a --peers address) leaves only its own items UNKNOWN_ID, within
each call's deadline, and nothing of them is lost."""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from .observability.helpers import free_port, scrape, value
from .servers import ServerProcess, server_process, wait_serving
from .test_workers import children, connections, listening, serving_ends

X, Y = load_breast_cancer(return_X_y=True)
MODEL = "breast-cancer"


def predict(channel: grpc.Channel, request_id: str, i: int, metadata=()) -> None:
    pb_grpc.PredictServiceStub(channel).Predict(
        pb.PredictRequest(model=MODEL, request_id=request_id, input=array_to_tensor(X[i : i + 1], raw=True)),
        timeout=10, metadata=metadata,
    )  # fmt: skip


def feedback(channel: grpc.Channel, batch: list[tuple[str, int]], timeout: float = 10, metadata=()) -> pb.FeedbackResponse:
    items = [pb.FeedbackItem(request_id=rid, truth=array_to_tensor(np.array([Y[i]]), raw=False)) for rid, i in batch]
    return pb_grpc.PredictServiceStub(channel).Feedback(
        pb.FeedbackRequest(model=MODEL, items=items), timeout=timeout, metadata=metadata
    )


def outcomes(response: pb.FeedbackResponse) -> dict[str, str]:
    return {r.request_id: pb.FeedbackOutcome.Name(r.outcome) for r in response.results}


def counts(channel: grpc.Channel) -> tuple[int, int, int]:
    """(matched, unknown, duplicate) as one process counted them."""
    [v] = pb_grpc.ModelServiceStub(channel).GetModelStats(pb.GetModelStatsRequest(name=MODEL), timeout=10).versions
    return v.feedback.matched, v.feedback.unknown, v.feedback.duplicate


def test_workers_join_feedback_that_lands_on_another_worker():
    """--workers 3: predictions on 30 connections (the kernel spreads them over the
    workers), feedback on 20 other connections, items shuffled across them. Each
    Feedback call lands on one worker; before feedback was forwarded, that worker
    joined only its own share (about a third)."""
    rng = random.Random(11)
    with server_process("--workers", "3") as server:
        listening(server, 3)  # every worker takes connections from now on
        sent: list[tuple[str, int]] = []
        with connections(server.addr, 30) as channels:
            for c, channel in enumerate(channels):
                for k in range(20):
                    i = rng.randrange(len(X))
                    predict(channel, f"w{c}-{k}", i)
                    sent.append((f"w{c}-{k}", i))
            ends = serving_ends(server.port, children(server.proc.pid))
        assert len(ends) == 30 and len(set(ends.values())) >= 2, ends  # predictions on several workers
        rng.shuffle(sent)
        matched = 0
        with connections(server.addr, 20) as channels:
            for c, channel in enumerate(channels):
                r = feedback(channel, sent[c * 30 : (c + 1) * 30])
                assert len(r.results) == 30
                matched += r.matched
        rate = matched / len(sent)
        print(f"--workers 3: {matched} of {len(sent)} feedback items MATCHED ({rate:.1%})")
        assert rate >= 0.99


def test_workers_join_feedback_with_an_access_file(tmp_path):
    """--workers 2 with --auth-tokens: a client's Feedback call needs its token, the
    workers' own forwarding over their private sockets needs none, and the items are
    joined wherever they land."""
    token = "fleet-token-0123456789abcdef"
    access = tmp_path / "access.toml"
    access.write_text(f'[[token]]\nname = "app"\ntoken = "{token}"\ngroups = ["data"]\n')
    md = (("authorization", f"Bearer {token}"),)
    rng = random.Random(12)
    with server_process("--workers", "2", "--auth-tokens", str(access)) as server:
        listening(server, 2)
        sent: list[tuple[str, int]] = []
        with connections(server.addr, 16) as channels:
            for c, channel in enumerate(channels):
                for k in range(10):
                    i = rng.randrange(len(X))
                    predict(channel, f"a{c}-{k}", i, md)
                    sent.append((f"a{c}-{k}", i))
        rng.shuffle(sent)
        matched = 0
        with connections(server.addr, 8) as channels:
            with pytest.raises(grpc.RpcError) as refused:
                feedback(channels[0], sent[:1])
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            for c, channel in enumerate(channels):
                matched += feedback(channel, sent[c * 20 : (c + 1) * 20], metadata=md).matched
        assert matched / len(sent) >= 0.99, (matched, len(sent))


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[ServerProcess]]:
    """Three `scorewire serve` processes, each given the same --peers: all three
    (itself included) and an address where nothing listens (a peer that is down).
    --peer-timeout-s is long: the calls' own deadlines bound the waits."""
    ports, down = [free_port() for _ in range(3)], free_port()
    peers = ",".join(f"127.0.0.1:{p}" for p in [*ports, down])
    with contextlib.ExitStack() as stack:
        args = ("--peers", peers, "--peer-timeout-s", "30", "--drain-delay-s", "0")
        servers = [stack.enter_context(server_process("--port", str(p), *args, wait=False)) for p in ports]
        for s in servers:
            wait_serving(s.addr)
        yield servers


@pytest.fixture(scope="module")
def channels(replicas) -> Iterator[list[grpc.Channel]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(grpc.insecure_channel(s.addr)) for s in replicas]


def test_three_replicas_join_feedback_sent_to_any_of_them(channels):
    """Each prediction and each Feedback call goes to a random replica: at least 99%
    MATCHED, and over the three, each item counted once (no DUPLICATE, no UNKNOWN)."""
    rng = random.Random(12)
    before = [counts(c) for c in channels]
    sent = []
    for k in range(600):
        i = rng.randrange(len(X))
        predict(rng.choice(channels), f"r-{k}", i)
        sent.append((f"r-{k}", i))
    rng.shuffle(sent)
    matched = 0
    for c in range(0, len(sent), 25):
        matched += feedback(rng.choice(channels), sent[c : c + 25]).matched
    rate = matched / len(sent)
    print(f"3 replicas: {matched} of {len(sent)} feedback items MATCHED ({rate:.1%})")
    assert rate >= 0.99
    after = [counts(c) for c in channels]
    fleet = [sum(a[j] - b[j] for a, b in zip(after, before, strict=True)) for j in range(3)]
    assert fleet == [matched, len(sent) - matched, 0]


def test_a_hung_replica_leaves_only_its_items_unknown_and_loses_none(replicas, channels):
    """Replica 2 stopped (SIGSTOP: its port still accepts, it never answers). Feedback
    sent to replicas 0 and 1 with a 3 s deadline (under --peer-timeout-s 30) is
    answered: what replicas 0 and 1 hold MATCHED, what replica 2 holds UNKNOWN_ID.
    Once replica 2 runs again, those items are MATCHED: the forwarded calls it read
    too late joined nothing."""
    rng = random.Random(13)
    sent = {0: [], 1: [], 2: []}
    for k in range(60):
        r, i = k % 3, rng.randrange(len(X))
        predict(channels[r], f"h-{k}", i)
        sent[r].append((f"h-{k}", i))
    every = [x for r in (0, 1, 2) for x in sent[r]]
    rng.shuffle(every)
    hung = replicas[2].proc.pid
    os.kill(hung, signal.SIGSTOP)
    try:
        got: dict[str, str] = {}
        for n, r in enumerate((0, 1)):
            got.update(outcomes(feedback(channels[r], every[n * 30 : (n + 1) * 30], timeout=3)))
    finally:
        os.kill(hung, signal.SIGCONT)
    assert {rid for rid, o in got.items() if o == "MATCHED"} == {rid for r in (0, 1) for rid, _ in sent[r]}
    assert {rid for rid, o in got.items() if o == "UNKNOWN_ID"} == {rid for rid, _ in sent[2]}
    wait_serving(replicas[2].addr)
    again = outcomes(feedback(channels[0], sent[2]))
    assert set(again.values()) == {"MATCHED"}, again


def test_replicas_with_workers_join_feedback_in_two_hops():
    """Two replicas of --workers 2 each: a Feedback call's worker asks its sibling
    and the other replica, whose worker asks its own sibling (and no one else). The
    forwards are counted by hop and status, the peer that is down as UNAVAILABLE."""
    rng = random.Random(14)
    ports, down, metrics = [free_port(), free_port()], free_port(), free_port()
    peers = ",".join(f"127.0.0.1:{p}" for p in [*ports, down])
    with contextlib.ExitStack() as stack:
        args = ("--peers", peers, "--workers", "2", "--drain-delay-s", "0")
        servers = [
            stack.enter_context(server_process("--port", str(p), *args, *extra, wait=False))
            for p, extra in zip(ports, [("--metrics-port", str(metrics)), ()], strict=True)
        ]
        for s in servers:
            listening(s, 2)
            wait_serving(s.addr)
        sent = []
        with contextlib.ExitStack() as conns:  # 12 connections to each replica, over its workers
            channels = [ch for s in servers for ch in conns.enter_context(connections(s.addr, 12))]
            for k in range(400):
                i = rng.randrange(len(X))
                predict(rng.choice(channels), f"t-{k}", i)
                sent.append((f"t-{k}", i))
            rng.shuffle(sent)
            matched = sum(feedback(rng.choice(channels), sent[c : c + 20]).matched for c in range(0, 400, 20))
        rate = matched / len(sent)
        print(f"2 replicas x 2 workers: {matched} of {len(sent)} feedback items MATCHED ({rate:.1%})")
        assert rate >= 0.99
        m = scrape(metrics)
        assert value(m, "scorewire_feedback_forwards_total", hop="worker", code="OK") > 0
        assert value(m, "scorewire_feedback_forwards_total", hop="replica", code="OK") > 0
        assert value(m, "scorewire_feedback_forwards_total", hop="replica", code="UNAVAILABLE") > 0
