"""``scorewire serve --workers N``: N server processes on one port.

The parent reserves the port with a bound (never listening) SO_REUSEPORT socket,
so port 0 resolves to one free port that every worker then binds with
SO_REUSEPORT; the kernel spreads new connections across the workers. The parent
forwards SIGTERM/SIGINT to every worker (each shuts down gracefully; a second
signal forces them), restarts a worker that dies on its own, and exits 0 when
all workers stopped cleanly. A worker still running well past the drain delay
and grace period after the first signal is killed (exit 1), so the supervisor
never hangs on a stuck worker; a worker whose supervisor dies (even by SIGKILL)
gets SIGTERM from the kernel and stops gracefully (``bind_to_supervisor``).

Metrics (``--metrics-port``): the parent makes a fresh directory for
prometheus-client's multiprocess mode and names it in each worker's
``PROMETHEUS_MULTIPROC_DIR`` (read when the worker imports prometheus-client);
the workers write their values there and do not open the port; the parent serves
their sum on it, with each worker's process metrics, marks a dead worker's live
gauges dead, and removes the directory when it exits.

Feedback (see ``_peers``): the parent makes a private directory (mode 0700) and
names it in each worker's ``--sibling-dir``, with one ``--replica-id`` for all of
them; each worker also listens on a unix socket there, named by its pid, over
which the others forward feedback items it may hold the predictions of. The
parent removes a dead worker's socket, and the directory when it exits.

The parent imports neither grpc nor the models: it only supervises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING

from ..settings import Settings, to_environ

if TYPE_CHECKING:
    from ..observability.exposition import MetricsServer

log = logging.getLogger("scorewire.workers")

#: a worker that dies this soon after starting is restarted only after a pause
#: (a stop signal ends the pause: however long it is, it does not delay a stop)
CRASH_WINDOW_S = 5.0
RESTART_PAUSE_S = 1.0
#: after the first signal, workers get drain delay + grace + this long before SIGKILL
STOP_MARGIN_S = 30.0
#: names the supervisor's pid in each worker's environment
SUPERVISOR_ENV = "SCOREWIRE_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1


def bind_to_supervisor() -> None:
    """In a worker: ask the kernel for SIGTERM when the supervisor dies, so that a
    supervisor killed with SIGKILL leaves no orphaned workers holding its port.

    The worker's own SIGTERM handling then drains it like any other stop. If the
    supervisor is already gone (it died before the request took effect), exit now.
    """
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:  # pragma: no cover
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != int(supervisor):
        log.error("supervisor %s is gone: exiting", supervisor)
        raise SystemExit(1)


#: the longest unix socket path (sun_path holds 108 bytes with the final NUL)
MAX_SOCKET_PATH = 107


def socket_path(directory: str, pid: int | None = None) -> str:
    """The private socket of the worker ``pid`` (this process by default) in ``--sibling-dir``."""
    return os.path.join(directory, f"{os.getpid() if pid is None else pid}.sock")


def sibling_directory() -> str:
    """A fresh private directory for the workers' sockets; "" (and a warning) when
    its socket paths would be too long for unix sockets (a long TMPDIR)."""
    directory = tempfile.mkdtemp(prefix="scorewire-workers-")
    if len(socket_path(directory, 4194304)) > MAX_SOCKET_PATH:  # the largest pid Linux gives
        os.rmdir(directory)
        log.warning("the temporary directory's path is too long for unix sockets: "
                    "workers will not forward feedback to each other")  # fmt: skip
        return ""
    return directory


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket; keep it open while workers run."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((bare, port))
    return sock


def _n_threads_each(settings: Settings) -> int:
    if settings.n_threads:
        return settings.n_threads
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // settings.workers)


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sock = reserve_port(settings.host, settings.port)
        self.port = self._sock.getsockname()[1]
        self.sibling_dir = sibling_directory()
        worker = replace(
            settings, port=self.port, workers=1, reuse_port=True, n_threads=_n_threads_each(settings),
            serve_metrics=False, sibling_dir=self.sibling_dir, replica_id=settings.replica_id or secrets.token_hex(8),
        )  # fmt: skip
        self._env = {**os.environ, **to_environ(worker), SUPERVISOR_ENV: str(os.getpid())}
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * settings.workers
        self._started: list[float] = [0.0] * settings.workers
        self._signals = 0
        self._last_signal = signal.SIGTERM
        self._signalled: set[int] = set()  # pids the last signal has reached
        self._stop_deadline = float("inf")
        self.metrics_dir: str | None = None
        self._metrics_server: MetricsServer | None = None
        if settings.metrics_port:
            self.metrics_dir = tempfile.mkdtemp(prefix="scorewire-metrics-")
            self._env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir

    def _serve_metrics(self) -> None:
        from ..observability.exposition import MetricsServer, multiprocess_registry

        assert self.metrics_dir is not None
        registry = multiprocess_registry(self.metrics_dir, self._live_workers)
        self._metrics_server = MetricsServer(self.settings.host, self.settings.metrics_port, registry)

    def _live_workers(self) -> list[tuple[str, int]]:
        return [(str(i), p.pid) for i, p in enumerate(self._procs) if p is not None and p.returncode is None]

    def _mark_dead(self, pid: int) -> None:
        """Drop a dead worker's live gauges (in-flight, queue depth, model state) and
        its private socket (the others stop asking it about feedback)."""
        if self.sibling_dir:
            with contextlib.suppress(OSError):
                os.unlink(socket_path(self.sibling_dir, pid))
        if self.metrics_dir is not None:
            from ..observability.exposition import mark_process_dead

            mark_process_dead(pid, self.metrics_dir)

    def _clean_up(self) -> None:
        """Stop serving metrics; remove the multiprocess and socket directories."""
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if self.sibling_dir:
            shutil.rmtree(self.sibling_dir, ignore_errors=True)

    def _spawn(self, i: int) -> None:
        self._procs[i] = subprocess.Popen([sys.executable, "-m", "scorewire.cli", "serve"], env=self._env)
        self._started[i] = time.monotonic()
        log.info("worker %d started (pid %d)", i, self._procs[i].pid)  # type: ignore[union-attr]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self._last_signal = signal.Signals(signum)
        self._signalled.clear()
        if self._signals == 1:
            s = self.settings
            self._stop_deadline = time.monotonic() + s.drain_delay_s + s.shutdown_grace_s + STOP_MARGIN_S
        self._forward()

    def _forward(self) -> None:
        """Send the last signal to every live worker it has not reached yet (one
        spawned while the signal arrived included)."""
        for p in self._procs:
            if p is not None and p.pid not in self._signalled and p.poll() is None:
                self._signalled.add(p.pid)
                p.send_signal(self._last_signal)

    def _kill_stuck(self) -> None:
        for i, p in enumerate(self._procs):
            if p is not None and p.poll() is None:
                log.error("worker %d (pid %d) still running after the grace period: killing it", i, p.pid)
                p.kill()
                p.wait()

    def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, ending within a poll (0.1 s) of a stop signal
        (time.sleep alone would resume after the handler and sleep on)."""
        until = time.monotonic() + seconds
        while not self._signals and time.monotonic() < until:
            time.sleep(min(0.1, max(0.0, until - time.monotonic())))

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            if self.metrics_dir is not None:
                self._serve_metrics()
            for i in range(self.settings.workers):
                self._spawn(i)
            log.info("%d workers on %s:%d", self.settings.workers, self.settings.host, self.port)
            while True:
                alive = 0
                for i, p in enumerate(self._procs):
                    if p is None:
                        continue
                    code = p.poll()
                    if code is None:
                        alive += 1
                    elif not self._signals:
                        log.error("worker %d (pid %d) exited with %s: restarting it", i, p.pid, code)
                        self._mark_dead(p.pid)
                        if time.monotonic() - self._started[i] < CRASH_WINDOW_S:
                            self._pause(RESTART_PAUSE_S)
                        if not self._signals:  # no stop asked for during the pause
                            self._spawn(i)
                            alive += 1
                if self._signals:
                    if not alive:
                        break
                    self._forward()
                    if time.monotonic() > self._stop_deadline:
                        self._kill_stuck()
                        break
                time.sleep(0.1)
        finally:
            self._sock.close()
            self._clean_up()
        # a worker signalled before it installed its handlers (still starting, so
        # nothing in flight) ends by the signal itself: that is a clean stop too
        clean = (0, -signal.SIGTERM, -signal.SIGINT)
        codes = [p.returncode for p in self._procs if p is not None]
        return 0 if all(c in clean for c in codes) else 1

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None]


def run_workers(settings: Settings) -> int:
    """Run ``settings.workers`` server processes until told to stop."""
    return Supervisor(settings).run()
