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
    output: list[str] = field(default_factory=list)  # what it printed after listening

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


def wait_serving(addr: str, service: str = "", timeout: float = 90.0) -> None:
    """Poll grpc.health.v1 until `service` is SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as channel:
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


@contextlib.contextmanager
def server_process(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Iterator[ServerProcess]:
    """`scorewire serve --port 0 ARGS` in a subprocess; yields once it is SERVING.

    The port is read from the line the server prints when it listens.
    """
    proc = subprocess.Popen(
        [*SCOREWIRE, "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    try:
        port = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"scorewire serving on \S+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if not port:
            raise RuntimeError(f"server exited with {proc.wait()} before listening")
        server = ServerProcess(proc, port)
        # keep draining its output so a chatty server never blocks on a full pipe
        threading.Thread(target=lambda: server.output.extend(proc.stdout), daemon=True).start()
        if wait:
            wait_serving(server.addr)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class InProcessServer:
    """A scorewire Server on its own event loop thread, for tests that call it
    through generated stubs and need no subprocess (STYLE.md point 15)."""

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

    def stop(self) -> None:
        async def _stop():
            await self.server.stop()

        try:
            self.call(_stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
