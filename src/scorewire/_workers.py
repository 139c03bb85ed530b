"""``scorewire serve --workers N``: N server processes on one port.

The parent reserves the port with a bound (never listening) SO_REUSEPORT socket,
so port 0 resolves to one free port that every worker then binds with
SO_REUSEPORT; the kernel spreads new connections across the workers. The parent
forwards SIGTERM/SIGINT to every worker (each shuts down gracefully; a second
signal forces them), restarts a worker that dies on its own, and exits 0 when
all workers stopped cleanly.

Metrics (``--metrics-port``): the parent makes a fresh directory for
prometheus-client's multiprocess mode and names it in each worker's
``PROMETHEUS_MULTIPROC_DIR`` (read when the worker imports prometheus-client);
the workers write their values there and do not open the port; the parent serves
their sum on it, with each worker's process metrics, marks a dead worker's live
gauges dead, and removes the directory when it exits.

The parent imports neither grpc nor the models: it only supervises.
"""

from __future__ import annotations

import logging
import os
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

from .settings import Settings, to_environ

if TYPE_CHECKING:
    from .observability._exposition import MetricsServer

log = logging.getLogger("scorewire.workers")

#: a worker that dies this soon after starting is restarted only after a pause
CRASH_WINDOW_S = 5.0
RESTART_PAUSE_S = 1.0


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
        worker = replace(
            settings, port=self.port, workers=1, reuse_port=True, n_threads=_n_threads_each(settings),
            serve_metrics=False,
        )  # fmt: skip
        self._env = {**os.environ, **to_environ(worker)}
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * settings.workers
        self._started: list[float] = [0.0] * settings.workers
        self._signals = 0
        self.metrics_dir: str | None = None
        self._metrics_server: MetricsServer | None = None
        if settings.metrics_port:
            self.metrics_dir = tempfile.mkdtemp(prefix="scorewire-metrics-")
            self._env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir

    def _serve_metrics(self) -> None:
        from .observability._exposition import MetricsServer, multiprocess_registry

        assert self.metrics_dir is not None
        registry = multiprocess_registry(self.metrics_dir, self._live_workers)
        self._metrics_server = MetricsServer(self.settings.host, self.settings.metrics_port, registry)

    def _live_workers(self) -> list[tuple[str, int]]:
        return [(str(i), p.pid) for i, p in enumerate(self._procs) if p is not None and p.returncode is None]

    def _mark_dead(self, pid: int) -> None:
        """Drop a dead worker's live gauges (in-flight, queue depth, model state)."""
        if self.metrics_dir is not None:
            from .observability._exposition import mark_process_dead

            mark_process_dead(pid, self.metrics_dir)

    def _close_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _spawn(self, i: int) -> None:
        self._procs[i] = subprocess.Popen([sys.executable, "-m", "scorewire.cli", "serve"], env=self._env)
        self._started[i] = time.monotonic()
        log.info("worker %d started (pid %d)", i, self._procs[i].pid)  # type: ignore[union-attr]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        for p in self._procs:
            if p is not None and p.poll() is None:
                p.send_signal(signum)

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
                            time.sleep(RESTART_PAUSE_S)
                        self._spawn(i)
                        alive += 1
                if self._signals and not alive:
                    break
                time.sleep(0.1)
        finally:
            self._sock.close()
            self._close_metrics()
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
