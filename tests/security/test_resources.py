"""Clients that hold resources without using them cannot keep others out: 1,000
connections that stall (half a request, nothing at all, half the HTTP/2 preface)
and clients that never read their responses, against one server; a well-behaved
client is answered the whole time, and the server frees what the others hold."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from ..servers import server_process

PREDICT = "/scorewire.v1.PredictService/Predict"
HALF_REQUESTS, SILENT, HALF_PREFACE, NEVER_READ = 600, 200, 200, 20
PATIENCE_S = 120


def framed(request: pb.PredictRequest) -> bytes:
    body = request.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def h2_client(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    return sock, conn


def headers(port: int) -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", PREDICT), (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"), ("te", "trailers")]  # fmt: skip


def half_request(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    """A Predict whose message stops half way; the client then waits."""
    sock, conn = h2_client(port)
    data = framed(pb.PredictRequest(model="diabetes", input=array_to_tensor(np.zeros((1, 10)), raw=True)))
    conn.send_headers(1, headers(port))
    conn.send_data(1, data[: len(data) // 2])
    sock.sendall(conn.data_to_send())
    return sock, conn


def never_reads(port: int, calls: int) -> socket.socket:
    """``calls`` complete Predicts whose answers this client never reads: it allows
    the server 16 bytes per stream (HTTP/2 flow control) and never more, so every
    answer stays stuck in the server's send."""
    sock, conn = h2_client(port)
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16})
    data = framed(pb.PredictRequest(model="breast-cancer", input=array_to_tensor(np.zeros((1, 30)), raw=True)))
    for i in range(calls):
        stream = 1 + 2 * i
        conn.send_headers(stream, headers(port))
        conn.send_data(stream, data, end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock


def stream_fate(sock: socket.socket, conn: h2.connection.H2Connection) -> str:
    """Read until the server ends stream 1: "reset", "answered" (a status), or
    "closed" (the whole connection); "timeout" when nothing arrives for a while."""
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return "timeout"
        if not data:
            return "closed"
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            return "closed"
        for event in events:
            if isinstance(event, h2.events.StreamReset):
                return "reset"
            if isinstance(event, h2.events.TrailersReceived | h2.events.StreamEnded):
                return "answered"
            if isinstance(event, h2.events.ConnectionTerminated):
                return "closed"
        # NOTE: what h2 would answer (PING acknowledgements) is never sent: this client
        # has stalled, and the server's keepalive must find out


def closed(sock: socket.socket) -> str:
    """Read until the server closes the connection ("timeout" if it never does)."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return "timeout"
    return "closed"


def test_stalled_and_greedy_clients_do_not_keep_others_out():
    """
    1. A server with a small limit of calls served at once (16) and short timeouts.
    2. 1,000 connections stall: 600 send half a Predict, 200 send nothing, 200 send
       half the HTTP/2 preface; 20 more send 400 Predicts with large answers and
       never read them.
    3. A well-behaved client sends 200 Predicts and checks health meanwhile.
    Result: every one of its calls is answered OK (the half requests hold no place
    among the calls served at once); the silent and half-preface connections are
    closed after the handshake timeout, those that never read (their streams stalled
    or answers stuck) when they do not answer the server's keepalive pings; the
    server stops cleanly.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # both ends' sockets
    args = ("--max-concurrent-rpcs", "16", "--receive-timeout-s", "2", "--handshake-timeout-s", "2",
            "--keepalive-time-s", "2", "--keepalive-timeout-s", "2", "--shutdown-grace-s", "2")  # fmt: skip
    held: list[socket.socket] = []
    try:
        with server_process(*args) as server:
            port = server.port
            # 2.
            halves = [half_request(port) for _ in range(HALF_REQUESTS)]
            held += [s for s, _ in halves]
            silent = [socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) for _ in range(SILENT)]
            prefaces = [socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) for _ in range(HALF_PREFACE)]
            for s in prefaces:
                s.sendall(b"PRI * HTTP/2.0\r\n")
            held += silent + prefaces
            greedy = [never_reads(port, 20) for _ in range(NEVER_READ)]
            held += greedy
            # 3.
            codes: list[str] = []
            with grpc.insecure_channel(server.addr) as channel:
                stub = pb_grpc.PredictServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                request = pb.PredictRequest(model="diabetes", input=array_to_tensor(np.zeros((1, 10)), raw=True))
                for i in range(200):
                    try:
                        stub.Predict(request, timeout=PATIENCE_S)
                        codes.append("OK")
                    except grpc.RpcError as err:
                        codes.append(err.code().name)
                    if i % 50 == 0:
                        status = health.Check(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S).status
                        assert status == health_pb2.HealthCheckResponse.SERVING
            assert codes == ["OK"] * 200, {c: codes.count(c) for c in set(codes)}
            # Result: what the stalled clients held is freed, in parallel (each read blocks)
            fates: list[str] = []
            lock = threading.Lock()

            def watch(fn, *a) -> None:
                try:
                    fate = fn(*a)
                except OSError:
                    fate = "closed"  # the server reset the connection
                with lock:
                    fates.append(fate)

            threads = [threading.Thread(target=watch, args=(stream_fate, s, c)) for s, c in halves]
            threads += [threading.Thread(target=watch, args=(closed, s)) for s in silent + prefaces + greedy]
            for t in threads:
                t.start()
            for t in threads:
                t.join(PATIENCE_S + 10)
            # the half requests' connections never answer the server's keepalive pings,
            # nor do the greedy ones; the others never finish their handshake
            assert fates == ["closed"] * (HALF_REQUESTS + SILENT + HALF_PREFACE + NEVER_READ), {
                f: fates.count(f) for f in set(fates)
            }
        assert server.proc.returncode == 0
    finally:
        for s in held:
            with contextlib.suppress(OSError):
                s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_call_whose_request_does_not_arrive_in_time_is_cancelled():
    """Calls' receive timeout, by events: a call counted in but never admitted (its
    request never arrived) is cancelled by expire_stalled; an admitted one is not."""
    import asyncio

    from scorewire.grpc._calls import STALLED, Calls

    async def main() -> tuple[list[str], bool]:
        calls = Calls(max_served=4, receive_timeout_s=0.01)
        started = asyncio.Event()
        seen: list[str] = []

        async def call(admit: bool) -> None:
            calls.count_in("/scorewire.v1.PredictService/Predict")
            if admit:
                assert calls.admit()
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError as exc:
                seen.append(exc.args[0] if exc.args else "")
                raise

        stalled, served = asyncio.ensure_future(call(False)), asyncio.ensure_future(call(True))
        await started.wait()
        expiring = asyncio.ensure_future(calls.expire_stalled(poll_s=0.01))
        await asyncio.wait([stalled])
        alive = not served.done()
        for task in (served, expiring):
            task.cancel()
        await asyncio.gather(served, expiring, return_exceptions=True)
        return seen, alive

    seen, alive = asyncio.run(asyncio.wait_for(main(), PATIENCE_S))
    assert seen[0] == STALLED and alive
