"""Serving ``/metrics`` over HTTP: from one server process, or from the ``--workers``
supervisor for all its workers (prometheus-client's multiprocess mode).

This module defines no metric, so the supervisor can import it without
creating any.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("scorewire.metrics")

__all__ = ["MetricsServer", "mark_process_dead", "multiprocess_registry"]


#: how often a TLS metrics server looks whether its certificate files changed, seconds
TLS_CHECK_S = 30.0


class MetricsServer:
    """``/metrics`` on an HTTP port, served by a daemon thread; over TLS with
    ``certfile`` and ``keyfile`` (PEM), which are read again when they change."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry = REGISTRY,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        addr = host.strip("[]")  # "[::]" → "::"
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(
            port, addr=addr, registry=registry, certfile=certfile, keyfile=keyfile
        )
        self.port = self._httpd.server_port
        self._stop = threading.Event()
        if certfile is not None and keyfile is not None:
            context = self._httpd.socket.context  # type: ignore[attr-defined]  # an SSLSocket
            threading.Thread(
                target=self._watch_certificate, args=(context, certfile, keyfile), name="scorewire-metrics-tls", daemon=True
            ).start()
        log.info("metrics on %s://%s:%d/metrics", "https" if certfile else "http", host, self.port)

    def _watch_certificate(self, context: ssl.SSLContext, certfile: str, keyfile: str) -> None:
        """Load the certificate again when its files change (new connections get it)."""

        def stamp() -> tuple[tuple[int, int, int] | None, ...]:
            out: list[tuple[int, int, int] | None] = []
            for path in (certfile, keyfile):
                try:
                    st = os.stat(path)
                    out.append((st.st_mtime_ns, st.st_size, st.st_ino))
                except OSError:
                    out.append(None)
            return tuple(out)

        seen = stamp()
        while not self._stop.wait(TLS_CHECK_S):
            now = stamp()
            if now == seen:
                continue
            seen = now
            try:
                context.load_cert_chain(certfile, keyfile)
                log.info("metrics TLS certificate read again from %s", certfile)
            except (OSError, ssl.SSLError) as exc:
                log.error("%s: cannot use the new certificate (%s); the previous one stays in use", certfile, exc)

    def close(self) -> None:
        """Stop serving (blocks until the serving thread has stopped)."""
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


class WorkerProcessCollector(Collector):
    """process_* metrics (CPU, memory, file descriptors) of each worker, with a
    ``worker`` label: multiprocess mode cannot collect them from the workers."""

    def __init__(self, workers: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._workers = workers

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for worker, pid in self._workers():
            collector = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for family in collector.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for s in family.samples:
                    merged.add_sample(s.name, {**s.labels, "worker": worker}, s.value)
        return list(families.values())


def multiprocess_registry(path: str, workers: Callable[[], Iterable[tuple[str, int]]]) -> CollectorRegistry:
    """The supervisor's registry: the sum of the workers' metrics in ``path``, and
    each worker's process metrics."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    registry.register(WorkerProcessCollector(workers))
    PlatformCollector(registry=registry)
    return registry
