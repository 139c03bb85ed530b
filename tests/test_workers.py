"""`scorewire serve --workers 2`: both processes serve one port, a killed worker
is replaced, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from .servers import server_process, wait_serving


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def gone(pid: int) -> bool:
    """Exited (a zombie left for init to reap counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def replacement_for(supervisor: int, workers: list[int], timeout: float = 30.0) -> int:
    """After workers[0] died: wait until the supervisor again has two children, one
    of them new, and return the new one. One listing per check: a dead worker shows
    as a zombie until it is reaped, then for a moment there is only one child."""
    found: list[int] = []

    def replaced() -> bool:
        now = children(supervisor)
        found[:] = [p for p in now if p not in workers]
        return len(now) == 2 and len(found) == 1

    wait_for(replaced, timeout)
    return found[0]


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def serving_on(channel: grpc.Channel, timeout: float = 90.0) -> None:
    """Wait until the worker behind this one connection is SERVING (workers start
    and load their models independently; another one may already answer)."""
    stub = health_pb2_grpc.HealthStub(channel)

    def serving() -> bool:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        except grpc.RpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING

    wait_for(serving, timeout)


def hammer(addr: str, connections: int = 24, calls: int = 150) -> None:
    request = pb.PredictRequest(model="wine", input=array_to_tensor(np.zeros((64, 13)), raw=True))
    for i in range(connections):
        # a private subchannel pool: each channel is its own TCP connection
        options = [("grpc.use_local_subchannel_pool", 1), ("scorewire.test.connection", i)]
        with grpc.insecure_channel(addr, options=options) as channel:
            serving_on(channel)
            stub = pb_grpc.PredictServiceStub(channel)
            for _ in range(calls // 10):
                assert stub.Predict(request, timeout=10).model == "wine"


def test_two_workers_share_the_port_and_survive_a_kill():
    with server_process("--workers", "2") as server:
        # 1. two worker processes under the supervisor
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        workers = children(server.proc.pid)
        for _ in workers:
            wait_serving(server.addr)
        # 2. connections are spread over both: both spend CPU on requests
        before = {p: cpu_ticks(p) for p in workers}
        hammer(server.addr)
        used = {p: cpu_ticks(p) - before[p] for p in workers}
        assert all(t > 0 for t in used.values()), used
        # 3. a worker killed with SIGKILL is replaced, and the port keeps answering
        os.kill(workers[0], signal.SIGKILL)
        replacement = replacement_for(server.proc.pid, workers)
        wait_for(lambda: b"scorewire" in Path(f"/proc/{replacement}/cmdline").read_bytes())
        hammer(server.addr, connections=8, calls=20)
        # 4. SIGTERM to the supervisor: every worker stops gracefully, exit 0
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        assert children(server.proc.pid) == []


def test_workers_stop_when_the_supervisor_is_killed():
    """SIGKILL leaves the supervisor no chance to forward anything: the kernel's
    parent-death signal makes each worker drain and exit instead of serving on as
    an orphan holding the port."""
    with server_process("--workers", "2", "--shutdown-grace-s", "1") as server:
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        workers = children(server.proc.pid)
        server.proc.kill()
        server.proc.wait(timeout=10)
        wait_for(lambda: all(gone(p) for p in workers), timeout=30)


def supervisor_with(**constants: float) -> list[str]:
    """A launcher of `scorewire` whose supervisor has some of scorewire._workers'
    constants replaced (the workers it starts are plain `scorewire serve`)."""
    assignments = "".join(f"w.{name} = {value!r}; " for name, value in constants.items())
    return [
        sys.executable,
        "-c",
        f"import sys, scorewire._workers as w; {assignments}"
        "from scorewire.cli import main; sys.exit(main(sys.argv[1:]))",
    ]


def test_a_stuck_worker_is_killed_after_the_grace_period():
    """A worker that cannot act on SIGTERM (stopped here with SIGSTOP) must not keep
    the supervisor from exiting: past drain delay + grace + margin it is killed and
    the supervisor reports the unclean stop with exit status 1."""
    args = ("--workers", "2", "--shutdown-grace-s", "0.5", "--drain-delay-s", "0")
    with server_process(*args, launcher=supervisor_with(STOP_MARGIN_S=1.0)) as server:
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        workers = children(server.proc.pid)
        for _ in workers:
            wait_serving(server.addr)
        os.kill(workers[0], signal.SIGSTOP)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 1
        assert time.monotonic() - started >= 1.5  # it waited out grace + margin first
        assert all(gone(p) for p in workers)


def test_a_stop_during_a_restart_pause_starts_no_new_worker():
    """A worker that dies soon after starting is restarted after a pause; SIGTERM
    within that pause must stop everything, not start a worker nobody signals.
    Here any death is 'soon' and the pause is an hour, so the signal is sure to
    come within it (and the supervisor must not sleep it out either)."""
    launcher = supervisor_with(CRASH_WINDOW_S=3600.0, RESTART_PAUSE_S=3600.0)
    with server_process("--workers", "2", "--shutdown-grace-s", "1", launcher=launcher) as server:
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        workers = children(server.proc.pid)
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: any("restarting it" in line for line in server.output))
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 1  # worker 0's death was not a clean stop
        assert all(gone(p) for p in workers)
    started = [line for line in server.output if "started (pid" in line]  # all of it read by now
    assert len(started) == 2, started
