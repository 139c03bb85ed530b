"""A --workers worker binds its port only once its models are loaded: the kernel
gives new connections (and health probes) to any worker listening on the port, and
one still loading could only refuse their calls while its siblings are ready."""

from __future__ import annotations

import asyncio
import socket
import threading

import scorewire
from scorewire.grpc.server import Server
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..servers import wait_serving


class GatedRepository(ModelRepository):
    """Loads nothing until the test opens the gate."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate, self.waiting = threading.Event(), threading.Event()

    def load_version(self, entry, version):
        self.waiting.set()
        self.gate.wait(120)
        return super().load_version(entry, version)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def stop(server: Server) -> None:
    await server.stop()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_worker_binds_only_once_its_models_are_loaded():
    port = free_port()
    repo = GatedRepository(scorewire.demo_repository(), n_threads=1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def make() -> Server:
        return Server(Settings(port=port, reuse_port=True, drain_delay_s=0), repo)

    server = asyncio.run_coroutine_threadsafe(make(), loop).result(60)
    started = asyncio.run_coroutine_threadsafe(server.start(), loop)
    try:
        assert repo.waiting.wait(60)  # loading, held by the gate
        assert refused(port) and not started.done()
        repo.gate.set()
        started.result(120)
        wait_serving(f"127.0.0.1:{port}")  # bound once loaded, and ready at once
    finally:
        repo.gate.set()
        started.result(120)
        asyncio.run_coroutine_threadsafe(stop(server), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_an_ordinary_server_binds_at_once_and_answers_not_serving_while_loading():
    port = free_port()
    repo = GatedRepository(scorewire.demo_repository(), n_threads=1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def make() -> Server:
        return Server(Settings(port=port, drain_delay_s=0), repo)

    server = asyncio.run_coroutine_threadsafe(make(), loop).result(60)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)
        assert repo.waiting.wait(60) and not refused(port)
    finally:
        repo.gate.set()
        asyncio.run_coroutine_threadsafe(stop(server), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
