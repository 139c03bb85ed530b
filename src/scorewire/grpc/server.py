"""The gRPC server: services, health, reflection, loading, and shutdown.

Shutdown, in order (SIGTERM or SIGINT), so that no request a client sent before
the signal is lost and none is answered CANCELLED (the client's own code, which
no balancer retries):

1. health turns NOT_SERVING for every service and model at once (open Watch
   streams hear it);
2. for ``drain_delay_s`` every call is still served, so load balancers that probe
   health stop routing here, and what clients sent before the signal arrives and
   is answered;
3. every new call is answered UNAVAILABLE at once, by scorewire (``_calls``); the
   calls in flight get ``shutdown_grace_s`` to finish; open streams answer what
   they receive and end with UNAVAILABLE once idle;
4. what is still running after the grace period is abandoned: answered
   UNAVAILABLE;
5. once nothing is in flight and no call has arrived for a moment, health Watch
   streams end (UNAVAILABLE) and gRPC stops: the port closes. A call gRPC accepted
   just then but never handed to scorewire is cancelled at once (gRPC core's own
   answer), not held for the grace period;
6. the batchers and the scoring thread pool are drained; the monitoring export
   stops, the metrics port closes and buffered spans are exported; the process
   exits 0.

A second signal during shutdown skips the waiting and exits at once (code 1).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from .. import demo_repository
from ..backends.native import default_n_threads, kernel_paths
from ..observability import metrics, tracing
from ..observability.exposition import MetricsServer
from ..repository import ModelEntry, ModelRepository, State
from ..service import ScoringService
from ..settings import Settings
from ._calls import Calls
from ._gen.inference import grpc_service_pb2 as oip
from ._gen.inference import grpc_service_pb2_grpc as oip_grpc
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from ._handlers import MethodTable, register
from ._oip import InferenceServicer
from ._predict import ModelServicer, PredictServicer

log = logging.getLogger("scorewire.server")

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["PredictService"].full_name,
    pb.DESCRIPTOR.services_by_name["ModelService"].full_name,
    oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_name(model: str) -> str:
    """The health service name of one model."""
    return f"model/{model}"


#: how often shutdown looks whether only calls gRPC never handed over are left
IDLE_POLL_S = 0.02


class Server:
    """One scorewire server process.

    >>> server = Server(settings)          # doctest: +SKIP
    >>> await server.start()               # binds; models load in the background
    >>> server.port                        # the bound port (settings.port may be 0)
    >>> await server.wait_for_termination()
    """

    def __init__(self, settings: Settings, repository: ModelRepository | None = None) -> None:
        self.settings = settings
        n_threads = settings.n_threads or default_n_threads()
        self.kernel_paths = kernel_paths(settings.simd)
        self.repository = repository or ModelRepository(
            settings.repo or demo_repository(), n_threads=n_threads, max_model_mb=settings.max_model_mb
        )
        self._executor = ThreadPoolExecutor(max_workers=max(2, n_threads), thread_name_prefix="scorewire-score")
        self.service = ScoringService(
            self.repository,
            max_batch_rows=settings.max_batch_rows,
            offload_min_values=settings.offload_min_values,
            executor=self._executor,
            metrics=settings.metrics_port > 0,
        )
        self.service.on_change(self._update_model_health)
        self.health = health.aio.HealthServicer()
        #: the calls being served, counted by scorewire (see ``_calls``)
        self.calls = Calls()
        self._metrics_server: MetricsServer | None = None
        self._server: grpc.aio.Server | None = None
        self._loading: asyncio.Task[None] | None = None
        self._monitoring: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._signals = 0
        self._loaded = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # ---------------------------------------------------------------- start
    async def start(self) -> None:
        """Bind and start serving; models load in the background (UNAVAILABLE
        for a model until it is ready, health NOT_SERVING until then)."""
        mb = self.settings.max_message_mb * 1024 * 1024
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", mb),
                ("grpc.max_send_message_length", mb),
                ("grpc.so_reuseport", 1 if self.settings.reuse_port else 0),
                # NOTE: grpc core cancels calls above this backlog; keep it above the
                # concurrency limit so overload is answered with RESOURCE_EXHAUSTED.
                ("grpc.max_pending_requests", 4 * self.settings.max_concurrent_rpcs + 1024),
            ],
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
        )
        table = MethodTable(self.calls)
        register(pb_grpc.add_PredictServiceServicer_to_server, PredictServicer(self.service, self.calls), table)
        register(pb_grpc.add_ModelServiceServicer_to_server, ModelServicer(self.service), table)
        register(
            oip_grpc.add_GRPCInferenceServiceServicer_to_server,
            InferenceServicer(self.service, self.ready, self.calls),
            table,
        )
        register(health_pb2_grpc.add_HealthServicer_to_server, self.health, table)
        if self.settings.reflection:
            names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
            # what reflection.enable_server_reflection does for an aio server, into the table
            servicer = reflection.aio.ReflectionServicer(names)
            register(reflection_pb2_grpc.add_ServerReflectionServicer_to_server, servicer, table)
        server.add_generic_rpc_handlers((table,))
        address = f"{self.settings.host}:{self.settings.port}"  # IPv6 as "[::]"
        self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, NOT_SERVING)
        if self.settings.metrics_port and self.settings.serve_metrics:
            self._metrics_server = MetricsServer(self.settings.host, self.settings.metrics_port)
        await server.start()
        self._server = server
        log.info(
            "scorewire listening on %s:%d, repository %s, kernel paths %s",
            self.settings.host, self.port, self.repository.root, self.kernel_paths,
        )  # fmt: skip
        self._loading = asyncio.create_task(self._load_all())
        if self.service.metrics:  # the drift and feedback gauges, recomputed now and then
            self._monitoring = asyncio.create_task(self.service.run_monitoring_export(self.settings.monitor_interval_s))

    async def _load_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            names = await loop.run_in_executor(None, self.repository.model_names)
        except Exception as exc:
            log.error("cannot read the model repository: %s", exc)
            names = []
        entries = [self.repository.prepare(n) for n in names]
        for entry in entries:
            self._export_model_state(entry.name)
            await self.health.set(health_name(entry.name), NOT_SERVING)

        async def load(entry: ModelEntry) -> None:
            for v in list(entry.versions):
                await loop.run_in_executor(None, self.repository.load_version, entry, v)
            self._update_model_health(entry.name)  # each model as soon as it is ready

        await asyncio.gather(*(load(e) for e in entries))
        self._loaded = True
        await self._update_server_health()
        ready = [e.name for e in self.repository.entries() if e.state is State.READY]
        log.info("%d of %d models ready: %s", len(ready), len(entries), ", ".join(ready) or "none")

    def ready(self) -> bool:
        """Serving: not shutting down, loading done, and at least one model ready."""
        if self._stopping is not None:
            return False
        if not self._loaded:
            return False
        return any(e.state is State.READY for e in self.repository.entries())

    async def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until the initial load has finished; True when the server is ready."""
        if self._loading is not None:
            await asyncio.wait_for(asyncio.shield(self._loading), timeout)
        return self.ready()

    def _export_model_state(self, name: str) -> None:
        if not self.service.metrics:
            return
        try:
            versions = self.repository.entry(name).versions
        except Exception:
            versions = {}
        metrics.set_model_states(name, {v: mv.state.value for v, mv in versions.items()})

    def _update_model_health(self, name: str) -> None:
        if self._stopping is not None:
            return
        self._export_model_state(name)
        try:
            state = self.repository.entry(name).state
        except Exception:
            state = State.UNLOADED
        status = SERVING if state is State.READY else NOT_SERVING
        self._background(self.health.set(health_name(name), status))
        if self._loaded:
            self._background(self._update_server_health())

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine from sync code, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _update_server_health(self) -> None:
        status = SERVING if self.ready() else NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    # ----------------------------------------------------------------- stop
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s received: shutting down (send it again to force)", sig.name)
            self._stopping = asyncio.get_running_loop().create_task(self._shutdown())
        else:
            log.warning("%s received again: exiting now", sig.name)
            logging.shutdown()
            os._exit(1)

    def stop(self) -> asyncio.Task[None]:
        """Start the graceful shutdown (idempotent); await the task to wait for it."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._shutdown())
        return self._stopping

    async def _shutdown(self) -> None:
        calls = self.calls
        # 1. health first: every service and model NOT_SERVING
        await self.health.enter_graceful_shutdown()
        # 2. keep serving while load balancers notice
        if self.settings.drain_delay_s > 0:
            await asyncio.sleep(self.settings.drain_delay_s)
        # 3. refuse new calls, let those in flight finish within the grace period
        calls.refuse_new_calls()
        if not await calls.wait_quiet(time.monotonic() + self.settings.shutdown_grace_s):
            # 4. abandon what is left: UNAVAILABLE
            if calls.in_flight:
                log.warning("%d calls still running after the grace period: answered UNAVAILABLE", len(calls.in_flight))
            await calls.abandon(calls.in_flight)
        # 5. end the health Watch streams, then stop gRPC (the port closes)
        await calls.abandon(calls.standing)
        if self._server is not None:
            stopping = asyncio.ensure_future(self._server.stop(self.settings.shutdown_grace_s))
            await self._cancel_when_idle(stopping)
            await stopping
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        # 6. drain the batchers and the scoring threads; flush telemetry
        if self._monitoring is not None:
            self._monitoring.cancel()
        await self.service.aclose()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        if self._metrics_server is not None:
            await loop.run_in_executor(None, self._metrics_server.close)
        await loop.run_in_executor(None, tracing.flush)
        log.info("scorewire stopped")
        self._stopped.set()

    async def _cancel_when_idle(self, stopping: asyncio.Future[None]) -> None:
        """While gRPC's stop runs: once no call scorewire counted is in flight, in
        two looks ``IDLE_POLL_S`` apart (a call gRPC has just handed over is counted
        within a step of the event loop), cancel what gRPC still holds at once.

        What it holds then are calls it accepted just as the stop began and never
        handed to scorewire: they would hang until the grace period ends (the
        client's deadline, often, comes first).
        """
        assert self._server is not None
        idle_checks = 0
        while not stopping.done():
            idle_checks = idle_checks + 1 if not self.calls.in_flight else 0
            if idle_checks >= 2:
                await self._server.stop(None)
                return
            await asyncio.wait([stopping], timeout=IDLE_POLL_S)

    async def wait_loaded(self) -> None:
        """Until the repository's initial load is done (or the server stopped)."""
        if self._loading is None:
            return
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait([self._loading, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()

    @property
    def accepting(self) -> bool:
        """Started, and not told to stop."""
        return self._server is not None and self._stopping is None

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()


def freeze_heap() -> None:
    """Move what the process holds now (modules, loaded models: it lives as long as
    the server) out of the garbage collector's way. A full collection re-walks every
    tracked object; under load one ran every few seconds and took ~40 ms of the event
    loop, mostly on objects that never die. Collected first, so only live objects stay.
    """
    gc.collect()
    gc.freeze()


async def serve(settings: Settings) -> int:
    """Run a server until it is told to stop; returns the process exit code."""
    tracing.configure(settings.trace)
    try:
        server = Server(settings)
        await server.start()
        server.install_signal_handlers()
        # one write, line and newline together: workers share the supervisor's stdout
        # (unbuffered under PYTHONUNBUFFERED) and another's log line must not split it
        sys.stdout.write(f"scorewire serving on {settings.host}:{server.port}\n")
        sys.stdout.flush()
        await server.wait_loaded()
        if server.accepting:
            freeze_heap()
        await server.wait_for_termination()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, tracing.shutdown)
    return 0
