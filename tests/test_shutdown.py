"""Shutdown as clients see it: `scorewire serve` in a subprocess, SIGTERM with
requests in flight, every request counted from the client's side by what it got
(numbered steps, as uvicorn's signal tests read). Nothing here compares times:
each step waits for an event (answers received, a log line, the process's exit)."""

from __future__ import annotations

import asyncio
import collections
import queue
import signal
import threading

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

import scorewire
from scorewire.grpc._calls import SHUTTING_DOWN
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.grpc._handlers import MethodTable, register
from scorewire.grpc.server import LIVENESS, SERVICE_NAMES
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from .servers import InProcessServer, server_process, wait_for_line

SC = grpc.StatusCode
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: the longest any step may take before the test fails instead of hanging
PATIENCE_S = 120


def oip_request(model: str = "diabetes", X: np.ndarray | None = None) -> oip.ModelInferRequest:
    X = np.zeros((1, 10)) if X is None else X
    dtype = "FP32" if X.dtype == np.float32 else "FP64"
    return oip.ModelInferRequest(
        model_name=model,
        inputs=[oip.ModelInferRequest.InferInputTensor(name="input", datatype=dtype, shape=list(X.shape))],
        raw_input_contents=[X.tobytes()],
    )


class Clients:
    """Closed-loop clients: each keeps one request in flight and records, for every
    request, whether it was sent before the signal and the code it got back."""

    def __init__(self) -> None:
        self.signalled = threading.Event()
        self.results: list[tuple[bool, SC, str]] = []  # (sent before the signal, code, details)
        self.answered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def record(self, before: bool, code: SC, details: str = "") -> None:
        with self._lock:
            self.results.append((before, code, details))
        if code is SC.OK:
            self.answered.release()

    def unary_loop(self, call, request) -> None:
        """Send until the first failure after the signal."""
        while True:
            before = not self.signalled.is_set()
            try:
                call(request, timeout=PATIENCE_S)
                self.record(before, SC.OK)
            except grpc.RpcError as err:
                self.record(before, err.code(), err.details() or "")
                if not before:
                    return

    def codes(self, before: bool) -> collections.Counter[SC]:
        return collections.Counter(code for b, code, _ in self.results if b is before)


def test_sigterm_with_default_flags_loses_nothing_sent_before_it():
    """
    1. With the default flags: 8 clients keep one 1-row OIP ModelInfer in flight each
       (on the batched ONNX model and a native one), a PredictStream client sends one
       message after another, a health Watch is open.
    2. Once every client has been answered, SIGTERM.
    3. The clients go on until their first failure.
    Result: every request sent before the signal is answered OK; what was sent after
    it is answered OK or refused UNAVAILABLE (never CANCELLED: that is the client's
    own code, which no balancer retries); the stream's messages sent before the
    signal are all answered and the stream ends UNAVAILABLE; the Watch sees
    NOT_SERVING before it ends (UNAVAILABLE), so before the port closes; exit 0.
    """
    clients = Clients()
    stream_sent: list[tuple[int, bool]] = []  # (request id, sent before the signal)
    stream_answered: set[int] = set()
    with server_process() as server, grpc.insecure_channel(server.addr) as channel:
        infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        iris = oip_request("iris-forest", np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S)
        seen = [next(watch).status]
        # 1.
        threads = [
            threading.Thread(target=clients.unary_loop, args=(infer, iris if i % 2 else oip_request()))
            for i in range(8)
        ]
        go: queue.Queue[bool] = queue.Queue()

        def messages():
            n = 0
            while go.get():  # one message in flight: the next goes once this one is answered
                n += 1
                stream_sent.append((n, not clients.signalled.is_set()))
                yield pb.PredictRequest(model="wine", request_id=str(n), input=array_to_tensor(np.zeros((1, 13)), raw=True))

        stream = pb_grpc.PredictServiceStub(channel).PredictStream(messages(), timeout=PATIENCE_S)
        stream_end: list[SC] = []

        def read_stream() -> None:
            go.put(True)
            try:
                for answer in stream:
                    assert not answer.HasField("error"), answer.error
                    stream_answered.add(int(answer.request_id))
                    go.put(True)
                stream_end.append(SC.OK)
            except grpc.RpcError as err:
                stream_end.append(err.code())
            go.put(False)

        reader = threading.Thread(target=read_stream)
        for t in [*threads, reader]:
            t.start()
        # 2.
        for _ in range(len(threads) * 4):
            assert clients.answered.acquire(timeout=PATIENCE_S)
        clients.signalled.set()
        server.proc.send_signal(signal.SIGTERM)
        # 3.
        for t in [*threads, reader]:
            t.join(PATIENCE_S)
        try:
            for r in watch:
                seen.append(r.status)
            watch_end = SC.OK
        except grpc.RpcError as err:
            watch_end = err.code()
        assert server.proc.wait(timeout=PATIENCE_S) == 0
    # Result
    before, after = clients.codes(True), clients.codes(False)
    assert set(before) == {SC.OK}, before
    assert set(after) <= {SC.OK, SC.UNAVAILABLE}, after
    refused = [d for b, code, d in clients.results if code is SC.UNAVAILABLE]
    assert refused and set(refused) == {SHUTTING_DOWN}
    sent_before = {n for n, before in stream_sent if before}
    assert sent_before and sent_before <= stream_answered
    assert stream_end == [SC.UNAVAILABLE]
    assert seen == [SERVING, NOT_SERVING] and watch_end is SC.UNAVAILABLE


def test_a_call_still_running_after_the_grace_period_is_answered_unavailable(tmp_path):
    """
    1. A request is in flight on a model that does not answer until the test says so.
    2. The server is stopped with no drain delay and a short grace period.
    Result: the request is answered UNAVAILABLE (abandoned by the server, not CANCELLED);
    health Watch streams end UNAVAILABLE too; the server then stops.
    """
    repo = ModelRepository(scorewire.demo_repository(), n_threads=1)
    srv = InProcessServer(Settings(port=0, drain_delay_s=0, shutdown_grace_s=0.1, offload_min_values=1), repo)
    gate, entered = threading.Event(), threading.Event()
    inner = repo.resolve("diabetes").model

    class Stuck:
        backend, native_reason, signature, output_names = "native", "", inner.signature, inner.output_names

        def predict(self, X, outputs=None):
            entered.set()
            gate.wait(PATIENCE_S)
            return inner.predict(X, outputs)

    repo.add_model("stuck", Stuck())
    try:
        with grpc.insecure_channel(srv.addr) as channel:
            call = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer.future(oip_request("stuck"), timeout=PATIENCE_S)
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S)
            assert next(watch).status == SERVING
            # 1.
            assert entered.wait(PATIENCE_S)
            # 2.
            stopping = srv.begin_stop()
            # Result
            err = call.exception(timeout=PATIENCE_S)
            assert err is not None and err.code() is SC.UNAVAILABLE and err.details() == SHUTTING_DOWN
            statuses, end = [], None
            try:
                for r in watch:
                    statuses.append(r.status)
            except grpc.RpcError as e:
                end = e.code()
            assert statuses == [NOT_SERVING] and end is SC.UNAVAILABLE
            gate.set()  # the scoring thread is still in predict; the stop waits for it
            stopping.result(PATIENCE_S)
    finally:
        gate.set()
        srv.stop()


def test_second_signal_forces_exit():
    """1. SIGTERM starts a shutdown whose drain delay would last ten minutes.
    2. Once the server has logged it, a second SIGTERM.
    Result: the process exits at once with code 1."""
    with server_process("--drain-delay-s", "600") as server:
        server.proc.send_signal(signal.SIGTERM)
        wait_for_line(server, "SIGTERM received: shutting down", PATIENCE_S)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=PATIENCE_S) == 1


def test_sigterm_answers_batched_requests():
    """
    1. 16 threads send small requests to the batched ONNX model in a loop.
    2. SIGTERM once 100 have been answered; the threads go on until refused.
    Result: every request sent before the signal is answered OK (the batcher's queue is
    drained, not dropped); later ones are answered OK or refused UNAVAILABLE; the grace
    period (ten minutes) is not waited out.
    """
    X = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    request = pb.PredictRequest(model="iris-forest", input=array_to_tensor(X, raw=True))
    clients = Clients()
    with server_process("--shutdown-grace-s", "600") as server, grpc.insecure_channel(server.addr) as channel:
        stub = pb_grpc.PredictServiceStub(channel)
        threads = [threading.Thread(target=clients.unary_loop, args=(stub.Predict, request)) for _ in range(16)]
        for t in threads:
            t.start()
        for _ in range(100):
            assert clients.answered.acquire(timeout=PATIENCE_S)
        clients.signalled.set()
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(PATIENCE_S)
        assert server.proc.wait(timeout=PATIENCE_S) == 0
    assert set(clients.codes(True)) == {SC.OK}
    assert set(clients.codes(False)) <= {SC.OK, SC.UNAVAILABLE}


def test_open_health_watch_streams_do_not_hold_up_shutdown():
    """A Watch stream never ends by itself: on SIGTERM its client sees NOT_SERVING,
    then the stream ends UNAVAILABLE once nothing else is in flight; the grace period
    (ten minutes) is not waited out."""
    with server_process("--shutdown-grace-s", "600") as server:
        with grpc.insecure_channel(server.addr) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S)
            seen = [next(watch).status]
            server.proc.send_signal(signal.SIGTERM)
            try:
                for r in watch:
                    seen.append(r.status)
                ended = SC.OK
            except grpc.RpcError as err:
                ended = err.code()
        assert seen == [SERVING, NOT_SERVING]
        assert ended is SC.UNAVAILABLE
        assert server.proc.wait(timeout=PATIENCE_S) == 0


def test_liveness_stays_serving_while_the_server_drains():
    """What a Kubernetes liveness probe asks (deploy/kubernetes): on SIGTERM the server
    turns NOT_SERVING, but its liveness entry stays SERVING through the drain (a
    liveness probe must never restart a draining pod); a second signal ends it."""
    with server_process("--drain-delay-s", "600") as server:
        with grpc.insecure_channel(server.addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            server_watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S)
            live_watch = stub.Watch(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=PATIENCE_S)
            assert next(server_watch).status == SERVING and next(live_watch).status == SERVING
            server.proc.send_signal(signal.SIGTERM)
            assert next(server_watch).status == NOT_SERVING
            assert stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=PATIENCE_S).status == SERVING
            for service in ("", *SERVICE_NAMES, "model/wine"):
                assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=PATIENCE_S).status == NOT_SERVING
            server_watch.cancel()
            live_watch.cancel()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=PATIENCE_S) == 1


def test_the_method_table_counts_calls_in_flight():
    """Shutdown waits for the calls scorewire counted itself (its method table, asked
    for a handler in each call's task). A grpcio release that asked outside the
    call's task must fail here rather than let shutdown cancel calls in flight."""
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        table = MethodTable()
        release = asyncio.Event()

        class Health(health_pb2_grpc.HealthServicer):
            async def Check(self, request, context):
                seen.append((len(table.calls.in_flight), len(table.calls.standing)))
                await release.wait()
                return health_pb2.HealthCheckResponse(status=SERVING)

            async def Watch(self, request, context):
                await context.write(health_pb2.HealthCheckResponse(status=SERVING))
                await asyncio.Event().wait()

        register(health_pb2_grpc.add_HealthServicer_to_server, Health(), table)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((table,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S)
            await watch.read()
            check = asyncio.ensure_future(stub.Check(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S))
            while not seen:
                await asyncio.sleep(0.01)
            release.set()
            await check
            watch.cancel()
            while table.calls.in_flight or table.calls.standing:
                await asyncio.sleep(0.01)
            seen.append((len(table.calls.in_flight), len(table.calls.standing)))
        await server.stop(None)

    asyncio.run(asyncio.wait_for(main(), PATIENCE_S))
    assert seen == [(1, 1), (0, 0)]
