"""Start real scorewire servers for tests: in a subprocess (as users run it)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
SCOREWIRE = [sys.executable, "-m", "scorewire.cli"]


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    output: list[str] = field(default_factory=list)  # every line it printed so far

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


def wait_serving(
    addr: str, service: str = "", timeout: float = 90.0, credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Poll grpc.health.v1 until `service` is SERVING (over TLS with `credentials`)."""
    deadline = time.monotonic() + timeout
    channel_of = grpc.insecure_channel if credentials is None else (lambda a: grpc.secure_channel(a, credentials))
    with channel_of(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{addr} not SERVING after {timeout}s")
            time.sleep(0.05)


def wait_for_line(server: ServerProcess, text: str, timeout: float = 60.0) -> str:
    """The first line the server printed that contains ``text``, once it has."""
    deadline = time.monotonic() + timeout
    while True:
        line = next((x for x in list(server.output) if text in x), None)
        if line is not None:
            return line
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not print {text!r} within {timeout}s:\n{''.join(server.output)[-4000:]}")
        time.sleep(0.01)


@contextlib.contextmanager
def server_process(
    *args: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    start_timeout: float = 120.0,
    launcher: list[str] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> Iterator[ServerProcess]:
    """`scorewire serve --port 0 ARGS` in a subprocess; yields once it is SERVING.

    The port is read from the line the server prints when it listens; `launcher`
    replaces `python -m scorewire.cli` (a test that patches a constant first). The server
    runs in its own session, so that cleanup can reach every process it started
    (workers included) even if it does not stop by itself; nothing here waits
    without a time limit.
    """
    proc = subprocess.Popen(
        [*(launcher or SCOREWIRE), "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        start_new_session=True,
    )
    lines: list[str] = []
    listening = threading.Event()

    def drain() -> None:  # also keeps a chatty server from blocking on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not listening.is_set() and re.search(r"scorewire serving on \S+:(\d+)", line):
                listening.set()
        listening.set()  # EOF: it exited

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not listening.wait(start_timeout):
            raise TimeoutError(f"server did not listen within {start_timeout}s:\n{''.join(lines)[-4000:]}")
        m = next((re.search(r"scorewire serving on \S+:(\d+)", x) for x in lines if "serving on" in x), None)
        if m is None:
            raise RuntimeError(f"server exited with {proc.wait(10)} before listening:\n{''.join(lines)[-4000:]}")
        server = ServerProcess(proc, int(m.group(1)), lines)
        if wait:
            wait_serving(server.addr, credentials=credentials)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its session is left
        proc.wait(timeout=10)
        reader.join(timeout=10)
        if proc.stdout is not None and not reader.is_alive():  # closing blocks while it reads
            proc.stdout.close()


class InProcessServer:
    """A scorewire Server on its own event loop thread, for tests that call it
    through generated stubs and need no subprocess."""

    def __init__(self, settings, repository=None, wait_ready: bool = True) -> None:
        import asyncio

        from scorewire.grpc.server import Server

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server = self.call(self._make(Server, settings, repository))
        self.call(self.server.start())
        if wait_ready:
            self.call(self.server.wait_ready())

    @staticmethod
    async def _make(cls, settings, repository):
        return cls(settings, repository)

    def call(self, coro, timeout: float = 60.0):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def begin_stop(self):
        """Start the server's graceful stop; a concurrent.futures.Future of its end."""
        import asyncio

        async def _stop():
            await self.server.stop()

        return asyncio.run_coroutine_threadsafe(_stop(), self._loop)

    def stop(self) -> None:
        try:
            self.begin_stop().result(60.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
