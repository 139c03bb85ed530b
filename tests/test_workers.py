"""`scorewire serve --workers 2`: both processes serve one port, a killed worker
is replaced, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from .servers import server_process


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def state(pid: int) -> str:
    """The process's state letter (R, S, T for stopped, Z for a zombie...); "" once reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def gone(pid: int) -> bool:
    """Exited (a zombie left for init to reap counts as exited)."""
    return state(pid) in ("Z", "")


def hold(pid: int) -> None:
    """SIGSTOP a worker and wait until it is stopped: a signal sent to it from then
    on waits for SIGCONT (it is a worker that has installed its handlers: see
    listening), rather than maybe being handled just before it stops."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: state(pid) == "T")


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


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def established() -> list[tuple[int, int, int]]:
    """This network namespace's established TCP connections: (local port, remote
    port, socket inode) of each end."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "01":  # TCP_ESTABLISHED
                    rows.append((int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), int(f[9])))
    return rows


def serving_ends(port: int, pids: list[int]) -> dict[int, int]:
    """For each of this process's open connections to ``port`` (on this host): which
    of ``pids`` holds its server end, {client port: pid}. The process that accepted
    a connection is the one that answered every request sent on it."""
    rows, mine = established(), socket_inodes(os.getpid())
    clients = {local for local, remote, inode in rows if remote == port and inode in mine}
    ends = {}
    for pid in pids:
        theirs = socket_inodes(pid)
        ends.update({remote: pid for local, remote, inode in rows if local == port and remote in clients and inode in theirs})
    return ends


def listening(server, workers: int) -> None:
    """Until ``workers`` workers have printed that they listen: the kernel can hand
    a new connection to any of them, and each handles SIGTERM (it prints the line
    after installing its handlers)."""
    wait_for(lambda: sum("scorewire serving on" in line for line in server.output) >= workers)


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


@contextlib.contextmanager
def connections(addr: str, n: int) -> Iterator[list[grpc.Channel]]:
    """``n`` channels to ``addr``, each its own TCP connection (a private subchannel
    pool) to a worker that is SERVING; all open until the block ends."""
    with contextlib.ExitStack() as stack:
        channels = []
        for i in range(n):
            options = [("grpc.use_local_subchannel_pool", 1), ("scorewire.test.connection", i)]
            channel = stack.enter_context(grpc.insecure_channel(addr, options=options))
            serving_on(channel)
            channels.append(channel)
        yield channels


def hammer(channels: list[grpc.Channel], calls: int = 15) -> None:
    request = pb.PredictRequest(model="wine", input=array_to_tensor(np.zeros((64, 13)), raw=True))
    for channel in channels:
        stub = pb_grpc.PredictServiceStub(channel)
        for _ in range(calls):
            assert stub.Predict(request, timeout=10).model == "wine"


def test_two_workers_share_the_port_and_survive_a_kill():
    with server_process("--workers", "2") as server:
        # 1. two worker processes under the supervisor, both listening
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        workers = children(server.proc.pid)
        listening(server, 2)
        # 2. connections are spread over both: each worker accepted some of them
        #    and answered the requests sent on them
        with connections(server.addr, 24) as channels:
            hammer(channels)
            ends = serving_ends(server.port, workers)
        assert len(ends) == 24 and set(ends.values()) == set(workers), ends
        # 3. a worker killed with SIGKILL is replaced, and the port keeps answering
        os.kill(workers[0], signal.SIGKILL)
        replacement = replacement_for(server.proc.pid, workers)
        wait_for(lambda: b"scorewire" in Path(f"/proc/{replacement}/cmdline").read_bytes())
        with connections(server.addr, 8) as channels:
            hammer(channels, calls=20)
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
    """A launcher of `scorewire` whose supervisor has some of scorewire.grpc.workers'
    constants replaced (the workers it starts are plain `scorewire serve`)."""
    assignments = "".join(f"w.{name} = {value!r}; " for name, value in constants.items())
    return [
        sys.executable,
        "-c",
        f"import sys, scorewire.grpc.workers as w; {assignments}"
        "from scorewire.cli import main; sys.exit(main(sys.argv[1:]))",
    ]


def sigterm_pending(pid: int) -> bool:
    """A SIGTERM sent to the process waits for it (it is stopped, say)."""
    status = Path(f"/proc/{pid}/status").read_text()
    pending = next(line.split()[1] for line in status.splitlines() if line.startswith("ShdPnd:"))
    return bool(int(pending, 16) & (1 << (signal.SIGTERM - 1)))


KILLED = "still running after the grace period: killing it"


def test_a_stuck_worker_is_killed_after_the_grace_period():
    """A worker that cannot act on SIGTERM (stopped here with SIGSTOP) must not keep
    the supervisor from exiting: past drain delay + grace + margin (a 1 s margin
    here, not 30 s) it is killed and the supervisor reports the unclean stop with
    exit status 1."""
    args = ("--workers", "2", "--shutdown-grace-s", "0.5", "--drain-delay-s", "0")
    with server_process(*args, launcher=supervisor_with(STOP_MARGIN_S=1.0)) as server:
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        workers = children(server.proc.pid)
        listening(server, 2)
        hold(workers[0])
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 1
        assert all(gone(p) for p in workers)
        wait_for(lambda: any(f"(pid {workers[0]}) {KILLED}" in line for line in server.output))


def test_a_slow_worker_is_left_alone_until_its_time():
    """Before drain delay + grace + margin (an hour here) have passed, a worker that
    has not acted on SIGTERM yet is not killed: held (SIGSTOP) until the other one
    has stopped and then let go, it stops by itself, and the supervisor exits 0."""
    args = ("--workers", "2", "--shutdown-grace-s", "0", "--drain-delay-s", "0")
    with server_process(*args, launcher=supervisor_with(STOP_MARGIN_S=3600.0)) as server:
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        workers = children(server.proc.pid)
        listening(server, 2)
        hold(workers[0])
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: gone(workers[1]))  # the other worker stopped
        wait_for(lambda: sigterm_pending(workers[0]))  # and the held one was told to
        assert server.proc.poll() is None and not gone(workers[0])
        os.kill(workers[0], signal.SIGCONT)
        assert server.proc.wait(timeout=30) == 0
    assert not any(KILLED in line for line in server.output)


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
