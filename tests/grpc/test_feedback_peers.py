"""Forwarded feedback, against stand-in peers: a server with ``--peers`` asks them
about the feedback items it holds no prediction for — and only about those, only
on the Feedback path, never again for a call that was itself forwarded — and a
peer that is down or hung costs at most the call's deadline, never the call."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

import scorewire
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..observability.helpers import free_port
from ..servers import InProcessServer

BC = load_breast_cancer()
FEEDBACK = "/scorewire.v1.PredictService/Feedback"


class FakePeer(grpc.GenericRpcHandler):
    """A stand-in replica on 127.0.0.1: records every call it gets, whatever the
    method; answers Feedback with ``outcomes`` (by request id; UNKNOWN_ID for the
    rest), after ``hold`` is set when it has one (a hung peer)."""

    def __init__(self, outcomes: dict[str, int] | None = None, hold: threading.Event | None = None) -> None:
        self.outcomes = outcomes or {}
        self.hold = hold
        self.calls: list[tuple[str, dict[str, str], object]] = []
        self.arrived = threading.Event()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((self,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def service(self, details: grpc.HandlerCallDetails):
        if details.method != FEEDBACK:
            self.calls.append((details.method, dict(details.invocation_metadata), None))
            return None
        return grpc.unary_unary_rpc_method_handler(
            self.feedback, pb.FeedbackRequest.FromString, pb.FeedbackResponse.SerializeToString
        )

    def feedback(self, request: pb.FeedbackRequest, context: grpc.ServicerContext) -> pb.FeedbackResponse:
        self.calls.append((FEEDBACK, dict(context.invocation_metadata()), request))
        self.arrived.set()
        if self.hold is not None:
            self.hold.wait(60)
        return pb.FeedbackResponse(results=[
            pb.FeedbackResult(request_id=i.request_id, outcome=self.outcomes.get(i.request_id, pb.UNKNOWN_ID), version=7)
            for i in request.items
        ])  # fmt: skip

    def stop(self) -> None:
        self.server.stop(None)


def item(request_id: str, label: int) -> pb.FeedbackItem:
    return pb.FeedbackItem(request_id=request_id, truth=array_to_tensor(np.array([label]), raw=False))


def predict(stub, request_id: str, i: int) -> None:
    stub.Predict(pb.PredictRequest(model="breast-cancer", request_id=request_id,
                                   input=array_to_tensor(BC.data[i : i + 1], raw=True)), timeout=10)  # fmt: skip


def stats(channel) -> pb.FeedbackStats:
    [v] = pb_grpc.ModelServiceStub(channel).GetModelStats(pb.GetModelStatsRequest(name="breast-cancer"), timeout=10).versions
    return v.feedback


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("peers")
    shutil.copytree(scorewire.demo_repository() / "breast-cancer", root / "breast-cancer")
    return root


@pytest.fixture
def fleet(repo_dir):
    """A server whose --peers are two stand-ins (one answers MATCHED for
    'theirs-*' ids, one EXPIRED for 'theirs-1'), an address where nothing listens
    (a peer that is down), and its own address."""
    matching = FakePeer({f"theirs-{i}": pb.MATCHED for i in range(3)})
    stale = FakePeer({"theirs-1": pb.EXPIRED})
    port, down = free_port(), free_port()
    peers = f"127.0.0.1:{matching.port},127.0.0.1:{stale.port},127.0.0.1:{down},127.0.0.1:{port}"
    srv = InProcessServer(Settings(port=port, peers=peers, peer_timeout_s=30, drain_delay_s=0), ModelRepository(repo_dir, n_threads=1))
    with grpc.insecure_channel(srv.addr) as channel:
        yield srv, channel, matching, stale
    srv.stop()
    matching.stop()
    stale.stop()


def test_only_the_feedback_path_forwards_and_only_unknown_items(fleet, caplog):
    srv, channel, matching, stale = fleet
    stub = pb_grpc.PredictServiceStub(channel)
    # 1. predictions with ids, on every scoring RPC: no peer hears of any of them
    for i in range(100):
        predict(stub, f"ours-{i}", i)
    stream = [pb.PredictRequest(model="breast-cancer", request_id=f"stream-{i}",
                                input=array_to_tensor(BC.data[i : i + 1], raw=True)) for i in range(20)]  # fmt: skip
    assert len(list(stub.PredictStream(iter(stream), timeout=10))) == 20
    infer = oip.ModelInferRequest(model_name="breast-cancer", id="oip-0")
    infer.inputs.add(name="input", datatype="FP64", shape=[1, 30])
    infer.raw_input_contents.append(BC.data[:1].tobytes())
    oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer, timeout=10)
    assert matching.calls == [] and stale.calls == []
    # 2. feedback: what this server holds is joined here; the rest is asked of the peers
    items = [item(f"ours-{i}", BC.target[i]) for i in range(100)]
    items += [item("theirs-0", 1), item("theirs-1", 0), item("nobody-knows", 1), item("oip-0", BC.target[0])]
    with caplog.at_level(logging.INFO, logger="scorewire.peers"):
        r = stub.Feedback(pb.FeedbackRequest(model="breast-cancer", items=items), timeout=10)
        outcomes = [pb.FeedbackOutcome.Name(x.outcome) for x in r.results]
        assert outcomes == ["MATCHED"] * 100 + ["MATCHED", "MATCHED", "UNKNOWN_ID", "MATCHED"]
        assert [x.version for x in r.results[100:]] == [7, 7, 1, 1]  # the version that answered, there (or counted it)
        # each stand-in got one call, with the three unknown items only, marked as forwarded
        for peer in (matching, stale):
            [(method, metadata, request)] = peer.calls
            assert method == FEEDBACK and [x.request_id for x in request.items] == ["theirs-0", "theirs-1", "nobody-knows"]
            assert metadata["scorewire-forwarded"] == "replica" and metadata["scorewire-origin"] == srv.server.replica_id
            assert float(metadata["scorewire-forward-deadline"]) > time.time() - 60
        # 3. the server's own address was asked once (a forwarded call came back: answered
        #    with nothing) and is skipped from then on
        stub.Feedback(pb.FeedbackRequest(model="breast-cancer", items=[item("nobody-either", 0)]), timeout=10)
    assert [r.getMessage() for r in caplog.records].count(
        f"peer address ipv4:127.0.0.1:{srv.port} is this replica: not asking it again") == 1
    assert len(matching.calls) == len(stale.calls) == 2
    # 4. counted once: matched here 101, unknown here 2 (what nobody knew), nothing for theirs
    fb = stats(channel)
    assert (fb.matched, fb.unknown, fb.duplicate, fb.expired) == (101, 2, 0, 0)


def test_a_forwarded_call_is_not_forwarded_again(fleet):
    srv, channel, matching, stale = fleet
    stub = pb_grpc.PredictServiceStub(channel)
    predict(stub, "held-here", 3)
    request = pb.FeedbackRequest(model="breast-cancer", items=[item("held-here", BC.target[3]), item("elsewhere", 1)])
    soon = repr(time.time() + 30)
    # 1. from another worker, and from another replica (which asks only its own workers:
    #    this server has none): joined here, unknown left uncounted, nothing forwarded
    for hop, origin in (("worker", srv.server.replica_id), ("replica", "another-replica")):
        metadata = (("scorewire-forwarded", hop), ("scorewire-origin", origin), ("scorewire-forward-deadline", soon))
        r, call = stub.Feedback.with_call(request, metadata=metadata, timeout=10)
        assert [pb.FeedbackOutcome.Name(x.outcome) for x in r.results] == (
            ["MATCHED", "UNKNOWN_ID"] if hop == "worker" else ["DUPLICATE", "UNKNOWN_ID"])  # fmt: skip
        assert dict(call.initial_metadata())["scorewire-replica"] == srv.server.replica_id
    assert matching.calls == [] and stale.calls == []
    fb = stats(channel)
    assert (fb.matched, fb.duplicate, fb.unknown) == (1, 1, 0)
    # 2. back at the replica it came from: answered with nothing
    metadata = (("scorewire-forwarded", "replica"), ("scorewire-origin", srv.server.replica_id))
    assert len(stub.Feedback(request, metadata=metadata, timeout=10).results) == 0
    # 3. read after its sender stopped waiting (this process was stopped, say): not joined
    predict(stub, "late", 4)
    late = pb.FeedbackRequest(model="breast-cancer", items=[item("late", BC.target[4])])
    metadata = (("scorewire-forwarded", "worker"), ("scorewire-forward-deadline", repr(time.time() - 1)))
    with pytest.raises(grpc.RpcError) as err:
        stub.Feedback(late, metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stub.Feedback(late, timeout=10).matched == 1  # still waiting for its feedback


def test_a_server_without_peers_leaves_unknown_forwarded_items_to_their_origin(repo_dir):
    """A fleet where only some replicas were given --peers: a forwarded call is still
    answered as one (what is unknown here is counted by the process that forwarded it)."""
    srv = InProcessServer(Settings(port=0, drain_delay_s=0), ModelRepository(repo_dir, n_threads=1))
    try:
        with grpc.insecure_channel(srv.addr) as channel:
            stub = pb_grpc.PredictServiceStub(channel)
            request = pb.FeedbackRequest(model="breast-cancer", items=[item("elsewhere", 1)])
            metadata = (("scorewire-forwarded", "replica"), ("scorewire-origin", "another-replica"))
            r, call = stub.Feedback.with_call(request, metadata=metadata, timeout=10)
            assert pb.FeedbackOutcome.Name(r.results[0].outcome) == "UNKNOWN_ID"
            assert dict(call.initial_metadata())["scorewire-replica"] == srv.server.replica_id
            assert stats(channel).unknown == 0
            stub.Feedback(request, timeout=10)  # a client's own call: counted
            assert stats(channel).unknown == 1
    finally:
        srv.stop()


def test_a_hung_peer_costs_the_call_its_deadline_share_not_the_call(repo_dir):
    """--peer-timeout-s is 30 s, the client gives the call 2 s: the server stops
    waiting for a peer that never answers in time to answer the call itself."""
    hold = threading.Event()
    hung = FakePeer(hold=hold)
    srv = InProcessServer(Settings(port=0, peers=f"127.0.0.1:{hung.port}", peer_timeout_s=30, drain_delay_s=0),
                          ModelRepository(repo_dir, n_threads=1))  # fmt: skip
    try:
        with grpc.insecure_channel(srv.addr) as channel:
            stub = pb_grpc.PredictServiceStub(channel)
            predict(stub, "mine", 0)
            request = pb.FeedbackRequest(model="breast-cancer", items=[item("mine", BC.target[0]), item("its", 1)])
            r = stub.Feedback(request, timeout=2)
            assert hung.arrived.is_set()  # it was asked, and is still holding the call
            assert [pb.FeedbackOutcome.Name(x.outcome) for x in r.results] == ["MATCHED", "UNKNOWN_ID"]
            assert stats(channel).unknown == 1
    finally:
        hold.set()
        srv.stop()
        hung.stop()


def test_the_best_answer_wins_and_the_peer_timeout_bounds_the_wait(repo_dir):
    """One stand-in remembers 'both' as expired, another holds it: MATCHED, whichever
    answers first. Without a client deadline, a hung peer is waited for
    --peer-timeout-s at most (it would answer MATCHED, a minute later)."""
    hold = threading.Event()
    expired, holder = FakePeer({"both": pb.EXPIRED}), FakePeer({"both": pb.MATCHED})
    hung = FakePeer({"none": pb.MATCHED}, hold=hold)
    peers = ",".join(f"127.0.0.1:{p.port}" for p in (expired, holder, hung))
    srv = InProcessServer(Settings(port=0, peers=peers, peer_timeout_s=0.5, drain_delay_s=0), ModelRepository(repo_dir, n_threads=1))
    try:
        with grpc.insecure_channel(srv.addr) as channel:
            stub = pb_grpc.PredictServiceStub(channel)
            r = stub.Feedback(pb.FeedbackRequest(model="breast-cancer", items=[item("both", 1)]))  # no deadline
            assert pb.FeedbackOutcome.Name(r.results[0].outcome) == "MATCHED"
            r = stub.Feedback(pb.FeedbackRequest(model="breast-cancer", items=[item("none", 1)]))
            assert pb.FeedbackOutcome.Name(r.results[0].outcome) == "UNKNOWN_ID" and hung.arrived.is_set()
    finally:
        hold.set()
        srv.stop()
        for peer in (expired, holder, hung):
            peer.stop()


def test_a_name_stands_for_each_of_its_addresses(repo_dir, monkeypatch):
    """--peers replicas.test:50051, a headless service's name: each address it
    resolves to is asked (here two stand-ins; the resolver is replaced, no DNS is
    asked); a name that does not resolve is skipped, with a warning."""
    import socket

    one, two = FakePeer({"on-one": pb.MATCHED}), FakePeer({"on-two": pb.MATCHED})
    resolve = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "replicas.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p.port)) for p in (one, two)]
        if host == "nowhere.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    settings = Settings(port=0, peers="replicas.test:50051,nowhere.test:50051", drain_delay_s=0)
    srv = InProcessServer(settings, ModelRepository(repo_dir, n_threads=1))
    try:
        with grpc.insecure_channel(srv.addr) as channel:
            request = pb.FeedbackRequest(model="breast-cancer", items=[item("on-one", 1), item("on-two", 0)])
            r = pb_grpc.PredictServiceStub(channel).Feedback(request, timeout=10)
            assert [pb.FeedbackOutcome.Name(x.outcome) for x in r.results] == ["MATCHED", "MATCHED"]
            assert len(one.calls) == len(two.calls) == 1
    finally:
        srv.stop()
        one.stop()
        two.stop()


def test_bad_peers_are_refused_at_startup():
    for bad in ("localhost", "host:0", "host:http", "a/b:80"):
        with pytest.raises(ValueError, match="is not host:port"):
            Settings(peers=f"127.0.0.1:1,{bad}").validate()
    with pytest.raises(ValueError, match="peer_timeout_s"):
        Settings(peer_timeout_s=0).validate()
    assert Settings(peers=" [::1]:50051 , replicas.scorewire.svc:50051 ,").validate()
