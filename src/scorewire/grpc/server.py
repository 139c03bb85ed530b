"""The gRPC server: services, health, reflection, loading, and shutdown.

Shutdown, in order (SIGTERM or SIGINT), so that no request a client sent before
the signal is lost and none is answered CANCELLED (the client's own code, which
no balancer retries):

1. health turns NOT_SERVING for every service and model at once (open Watch
   streams hear it); only :data:`LIVENESS` stays SERVING;
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
import contextlib
import gc
import ipaddress
import logging
import os
import secrets
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
from ..service import RepositoryWatch, ScoringService
from ..settings import Settings, parse_peers
from ._access import Access, AccessFile
from ._calls import Calls
from ._gen.inference import grpc_service_pb2 as oip
from ._gen.inference import grpc_service_pb2_grpc as oip_grpc
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from ._handlers import MethodTable, register
from ._oip import InferenceServicer
from ._peers import Forwarder, Hop
from ._predict import ModelServicer, PredictServicer
from ._tls import CertificateFiles

log = logging.getLogger("scorewire.server")

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["PredictService"].full_name,
    pb.DESCRIPTOR.services_by_name["ModelService"].full_name,
    oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def health_name(model: str) -> str:
    """The health service name of one model."""
    return f"model/{model}"


#: the health entry for a liveness probe: SERVING from the moment the port is bound
#: until the process stops, whatever the models do and through the drain. Only its
#: being answered counts (by the event loop): a probe of it restarts a process that
#: stopped answering, never one that is loading its models or draining.
LIVENESS = "liveness"


class HealthServicer(health.aio.HealthServicer):
    """grpc's health service, plus :data:`LIVENESS`, which stays SERVING at shutdown."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.service == LIVENESS:
            return health_pb2.HealthCheckResponse(status=SERVING)
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        if request.service != LIVENESS:
            return await super().Watch(request, context)
        await context.write(health_pb2.HealthCheckResponse(status=SERVING))
        # it never changes: the stream ends when the client leaves or shutdown ends it
        await asyncio.Event().wait()


#: how often shutdown looks whether only calls gRPC never handed over are left
IDLE_POLL_S = 0.02

#: the shortest interval at which clients may send keepalive pings (ms). gRPC's
#: default is 5 minutes: a client that pings more often on a connection where the
#: server sends nothing (e.g. one that holds only the client-side health check's
#: Watch stream) is sent GOAWAY "too_many_pings", and its gRPC library then pings
#: less and less often, so it no longer notices a replica that hangs (README,
#: "Client-side balancing": keepalive every second).
KEEPALIVE_MIN_PING_MS = 500


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
        #: names this replica to its peers (--workers gives its workers one)
        self.replica_id = settings.replica_id or secrets.token_hex(8)
        #: asks the other workers (--sibling-dir) and replicas (--peers) about feedback
        #: (with neither, nobody; it still answers forwarded calls as this replica)
        self.forwarder = Forwarder(
            self.replica_id, parse_peers(settings.peers), settings.sibling_dir, settings.peer_timeout_s,
            settings.max_message_mb * 1024 * 1024, metrics=settings.metrics_port > 0,
        )  # fmt: skip
        self.health = HealthServicer()
        #: the calls being served, counted by scorewire (see ``_calls``)
        self.calls = Calls(settings.max_concurrent_rpcs, settings.receive_timeout_s)
        #: TLS certificates read again when they change (None: plaintext); who may call
        #: what. Both are checked here, so a bad file stops the server before it binds
        self._certificates = (
            CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            if settings.tls_cert is not None and settings.tls_key is not None
            else None
        )
        self._access = Access(AccessFile(settings.auth_tokens) if settings.auth_tokens else None, settings.health_open)
        self._metrics_server: MetricsServer | None = None
        #: the gRPC servers: the gRPC port's, and the admin port's when there is one
        self._servers: list[grpc.aio.Server] = []
        self._loading: asyncio.Task[None] | None = None
        self._monitoring: asyncio.Task[None] | None = None
        #: --poll-interval-s: what changed in the repository is loaded (None: off)
        self.watch: RepositoryWatch | None = None
        self._watching: asyncio.Task[None] | None = None
        self._expiring: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._signals = 0
        self._loaded = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.admin_port = 0

    # ---------------------------------------------------------------- start
    async def start(self) -> None:
        """Bind and start serving; models load in the background (UNAVAILABLE
        for a model until it is ready, health NOT_SERVING until then).

        A ``--workers`` worker (``reuse_port``) loads its models first and binds only
        then: the kernel hands new connections to any worker listening on the port,
        so one still loading would otherwise take connections (and health probes)
        whose calls it can only refuse while the others are ready."""
        settings = self.settings
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, NOT_SERVING)
        if settings.reuse_port:
            self._loading = asyncio.create_task(self._load_all())
            with contextlib.suppress(asyncio.CancelledError):  # a stop during the load cancels it
                await asyncio.shield(self._loading)
            if self._stopping is not None:  # told to stop while loading: never bind
                return
        # the control plane on the gRPC port: as asked, or only where the port is loopback;
        # with --admin-port, only there (which serves everything)
        control_here = settings.admin_port == 0 and (
            settings.control_plane == "on" or (settings.control_plane == "auto" and is_loopback(settings.host))
        )
        # IPv6 hosts as "[::]"
        server, self.port = self._grpc_server(f"{settings.host}:{settings.port}", control_here)
        servers = [server]
        if settings.admin_port:
            admin, self.admin_port = self._grpc_server(f"{settings.admin_host}:{settings.admin_port}", True)
            servers.append(admin)
        if self.forwarder.own_socket:  # the other workers' way in, for forwarded feedback
            servers.append(self._grpc_server(self.forwarder.own_socket, False, outside=False)[0])
        if settings.metrics_port and settings.serve_metrics:
            tls = settings.metrics_tls and settings.tls_cert is not None
            self._metrics_server = MetricsServer(
                settings.host, settings.metrics_port,
                certfile=str(settings.tls_cert) if tls else None, keyfile=str(settings.tls_key) if tls else None,
            )  # fmt: skip
        for s in servers:
            await s.start()
        self._servers = servers
        log.info(
            "scorewire listening on %s:%d (%s%s), repository %s, kernel paths %s",
            settings.host, self.port, "TLS" if self._certificates else "plaintext",
            "" if control_here else "; control plane " + (f"on {settings.admin_host}:{self.admin_port}" if settings.admin_port else "off"),
            self.repository.root, self.kernel_paths,
        )  # fmt: skip
        if self.forwarder.forwards(Hop()):
            log.info(
                "feedback this process cannot join is asked of %s (replica %s)",
                " and ".join(filter(None, (
                    "the other workers" if settings.sibling_dir else "",
                    f"peers {settings.peers}" if settings.peers else "",
                ))),
                self.replica_id,
            )  # fmt: skip
        if self._loading is None:
            self._loading = asyncio.create_task(self._load_all())
        self._expiring = asyncio.create_task(self.calls.expire_stalled())
        if self.service.metrics:  # the drift and feedback gauges, recomputed now and then
            self._monitoring = asyncio.create_task(self.service.run_monitoring_export(settings.monitor_interval_s))

    def _grpc_server(self, address: str, control: bool, outside: bool = True) -> tuple[grpc.aio.Server, int]:
        """One gRPC server with every service (the control plane answered PERMISSION_DENIED
        unless ``control``), bound to ``address``; (server, the bound port). An
        ``outside`` port has TLS and the access rules when they are configured; the
        other workers' unix socket (in a directory only this user may enter) has neither."""
        settings = self.settings
        mb = settings.max_message_mb * 1024 * 1024
        ms = 1000
        options = [
            ("grpc.max_receive_message_length", mb),
            ("grpc.max_send_message_length", mb),
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            # NOTE: grpc core cancels calls above this backlog; keep it above the
            # concurrency limit so overload is answered with RESOURCE_EXHAUSTED.
            ("grpc.max_pending_requests", 4 * settings.max_concurrent_rpcs + 1024),
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
            ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * ms)),
            ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * ms)),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * ms)),
            # any ping of the server's (keepalive, or the flow-control probe it sends at
            # once) unanswered this long closes the connection: a peer that has stopped
            # reading goes in keepalive_timeout, not grpc's default minute
            ("grpc.http2.ping_timeout_ms", int(settings.keepalive_timeout_s * ms)),
            ("grpc.keepalive_permit_without_calls", 1),
            # accept clients' keepalive pings down to one every KEEPALIVE_MIN_PING_MS, even
            # between calls (grpc's default answers more than one per 5 minutes with GOAWAY)
            ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_MIN_PING_MS),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        if settings.max_connection_idle_s:
            options.append(("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * ms)))
        if settings.max_connection_age_s:
            options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age_s * ms)))
            options.append(("grpc.max_connection_age_grace_ms", int(settings.shutdown_grace_s * ms)))
        # NOTE: no maximum_concurrent_rpcs: grpc counts a call from its first byte, so
        # clients that send half a request would use up the limit; Calls counts a call
        # once its request has arrived (see _calls)
        server = grpc.aio.server(options=options)
        table = MethodTable(self.calls, self._access if outside else None, control=control)
        register(pb_grpc.add_PredictServiceServicer_to_server, PredictServicer(self.service, self.calls, self.forwarder), table)
        register(pb_grpc.add_ModelServiceServicer_to_server, ModelServicer(self.service), table)
        register(
            oip_grpc.add_GRPCInferenceServiceServicer_to_server,
            InferenceServicer(self.service, self.ready, self.calls),
            table,
        )
        register(health_pb2_grpc.add_HealthServicer_to_server, self.health, table)
        if settings.reflection:
            names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
            # what reflection.enable_server_reflection does for an aio server, into the table
            servicer = reflection.aio.ReflectionServicer(names)
            register(reflection_pb2_grpc.add_ServerReflectionServicer_to_server, servicer, table)
        server.add_generic_rpc_handlers((table,))
        if outside and self._certificates is not None:
            bound = server.add_secure_port(address, self._certificates.server_credentials())
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"cannot listen on {address}")
        return server, bound

    async def _load_all(self) -> None:
        loop = asyncio.get_running_loop()
        if self.settings.poll_interval_s > 0:  # what is on disk before the load: changes after it are seen
            self.watch = RepositoryWatch(self.service)
            await self.watch.poll()
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
            for v in list(entry.pending):
                await loop.run_in_executor(None, self.repository.load_version, entry, v)
            self.repository.finish(entry)  # retires what it no longer serves (a repository loaded before)
            self._update_model_health(entry.name)  # each model as soon as it is ready

        # ensembles once the models they are made of are loaded
        await asyncio.gather(*(load(e) for e in entries if e.config.ensemble is None))
        await asyncio.gather(*(load(e) for e in entries if e.config.ensemble is not None))
        self._loaded = True
        await self._update_server_health()
        ready = [e.name for e in self.repository.entries() if e.state is State.READY]
        log.info("%d of %d models ready: %s", len(ready), len(entries), ", ".join(ready) or "none")
        if self.watch is not None and self._stopping is None:
            self._watching = asyncio.create_task(self.watch.run(self.settings.poll_interval_s))
            log.info("watching the repository for changes every %g s", self.settings.poll_interval_s)

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
        self.service.export_drift_series(name)

    def _update_model_health(self, name: str) -> None:
        if self._stopping is not None:
            return
        self._export_model_state(name)
        try:
            entry = self.repository.entry(name)
            # a model whose only ready version is its shadow answers no request without a version
            serving = entry.state is State.READY and bool(entry.shares())
        except Exception:
            serving = False
        status = SERVING if serving else NOT_SERVING
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
        if self._watching is not None:  # the repository as it is now is what drains
            self._watching.cancel()
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
        if self._servers:
            stopping = asyncio.ensure_future(
                asyncio.gather(*(s.stop(self.settings.shutdown_grace_s) for s in self._servers))
            )
            await self._cancel_when_idle(stopping)
            await stopping
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self._expiring is not None:
            self._expiring.cancel()
        # 6. drain the batchers and the scoring threads; flush telemetry
        if self._monitoring is not None:
            self._monitoring.cancel()
        await self.forwarder.close()
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
        idle_checks = 0
        while not stopping.done():
            idle_checks = idle_checks + 1 if not self.calls.in_flight else 0
            if idle_checks >= 2:
                await asyncio.gather(*(s.stop(None) for s in self._servers))
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
        return bool(self._servers) and self._stopping is None

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()


def check_configuration(settings: Settings) -> None:
    """Read and check the files the settings name (TLS certificates, the access file):
    ConfigurationError naming the file and the problem, before anything binds or forks."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    if settings.auth_tokens is not None:
        AccessFile(settings.auth_tokens)


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
        if settings.reuse_port:  # a worker loads before it binds: a stop may come meanwhile
            server.install_signal_handlers()
        await server.start()
        if not settings.reuse_port:
            server.install_signal_handlers()
        if not server.accepting:  # stopped before it ever bound
            await server.wait_for_termination()
            return 0
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
