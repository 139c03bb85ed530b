"""``serve --workers 2 --metrics-port P``: the supervisor serves the sum of both
workers (prometheus-client's multiprocess mode), keeps a dead worker's counts, drops
its live gauges, and removes the multiprocess directory when it stops."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.multiprocess import MultiProcessCollector

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from ..servers import server_process, wait_serving
from ..test_workers import children, connections, replacement_for, serving_ends
from .helpers import free_port, scrape, total, value, wait_for

OK = {"model": "breast-cancer", "version": "1", "rpc": "Predict", "code": "OK"}
READY = {"model": "breast-cancer", "version": "1", "state": "READY"}


def send(channels: list[grpc.Channel], calls: int) -> int:
    """``calls`` requests on each channel (its own TCP connection); returns the count."""
    request = pb.PredictRequest(model="breast-cancer", input=array_to_tensor(np.zeros((1, 30)), raw=False))
    for channel in channels:
        stub = pb_grpc.PredictServiceStub(channel)
        for _ in range(calls):
            assert stub.Predict(request, timeout=10).model == "breast-cancer"
    return len(channels) * calls


def multiproc_dir(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    entry = next(e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
    return Path(entry.split(b"=", 1)[1].decode())


def ready_in(gauge_file: Path) -> bool:
    """Whether one worker's own live gauges say breast-cancer v1 is READY."""
    if not gauge_file.exists():
        return False
    for metric in MultiProcessCollector.merge([str(gauge_file)], accumulate=False):
        for s in metric.samples:
            if s.name == "scorewire_model_state" and READY.items() <= s.labels.items():
                return s.value == 1
    return False


def test_two_workers_sum_to_the_requests_sent():
    port = free_port()
    with server_process("--workers", "2", "--metrics-port", str(port)) as server:
        # 1. two workers, each with the supervisor's fresh multiprocess directory
        wait_for(lambda: len(children(server.proc.pid)) == 2, what="two workers")
        workers = children(server.proc.pid)
        directory = multiproc_dir(workers[0])
        assert multiproc_dir(workers[1]) == directory and directory.is_dir()
        wait_for(lambda: value(scrape(port), "scorewire_model_state", **READY) == 2, what="both workers ready")
        # 2. requests spread over both workers (each accepted some of the connections)
        with connections(server.addr, 24) as channels:
            sent = send(channels, calls=25)
            ends = serving_ends(server.port, workers)
        assert len(ends) == 24 and set(ends.values()) == set(workers), ends
        # 3. /metrics on the supervisor's port: the sum of both
        m = scrape(port)
        assert value(m, "scorewire_requests_total", **OK) == sent
        assert value(m, "scorewire_request_duration_seconds_count", model="breast-cancer", version="1",
                     rpc="Predict") == sent  # fmt: skip
        assert total(m, "scorewire_requests_in_flight") == 0
        # each worker's process metrics, labelled by worker
        workers_seen = {dict(labels)["worker"] for (name, labels) in m if name == "process_cpu_seconds_total"}
        assert workers_seen == {"0", "1"}
        # 4. a worker killed: its counts stay, its live gauges go, its replacement adds its own
        os.kill(workers[0], signal.SIGKILL)
        replacement = replacement_for(server.proc.pid, workers)
        wait_for(lambda: ready_in(directory / f"gauge_livesum_{replacement}.db"), what="the replacement ready")
        wait_serving(server.addr)
        assert not (directory / f"gauge_livesum_{workers[0]}.db").exists()  # marked dead
        assert value(scrape(port), "scorewire_model_state", **READY) == 2  # not 3
        with connections(server.addr, 8) as channels:
            sent += send(channels, calls=5)
        m = scrape(port)
        assert value(m, "scorewire_requests_total", **OK) == sent
        # 5. SIGTERM: the workers stop, the supervisor removes the directory
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
    assert not directory.exists()
