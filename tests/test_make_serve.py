"""README's first command: `make serve` from a fresh checkout serves the demo."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import grpc
import numpy as np
import pytest

from scorewire.grpc._codec import array_to_tensor, tensor_to_array
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

from .servers import ROOT, wait_serving


@pytest.mark.slow
def test_make_serve_from_a_fresh_checkout(tmp_path):
    """
    1. `git clone` this repository's committed HEAD into an empty folder.
    2. `make serve ARGS="--port 0"` there: it creates its own .venv, installs,
       builds the kernel and serves the bundled demo repository. pip installs from
       the wheels `make test` fetched beforehand, not from the network.
    3. `scorewire health` answers SERVING and a Predict on a demo model answers.
    Result: SIGTERM stops it with exit code 0.
    """
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.fail("git and make are needed for this test")
    wheelhouse = ROOT / ".venv" / "wheelhouse"
    assert (wheelhouse / ".stamp").is_file(), f"{wheelhouse} is missing: `make test` fetches it"
    checkout = tmp_path / "scorewire"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(checkout)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    proc = subprocess.Popen(
        ["make", "serve", "ARGS=--port 0"],
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        port, lines = 0, []
        deadline = time.monotonic() + 600
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"scorewire serving on \S+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
            assert time.monotonic() < deadline
        assert port, "make serve never listened:\n" + "".join(lines[-30:])
        addr = f"127.0.0.1:{port}"
        wait_serving(addr)
        health = subprocess.run(
            [str(checkout / ".venv" / "bin" / "scorewire"), "health", "--addr", addr],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert health.returncode == 0 and health.stdout.strip() == "SERVING"
        with grpc.insecure_channel(addr) as channel:
            r = pb_grpc.PredictServiceStub(channel).Predict(
                pb.PredictRequest(model="wine", input=array_to_tensor(np.zeros((2, 13)), raw=True))
            )
        assert tensor_to_array(r.outputs["probabilities"]).shape == (2, 3)
        # SIGTERM to the server that make started: it stops, and make exits with its 0
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, "make serve has no server process"
        for pid in children:
            os.kill(int(pid), signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "".join(lines[-30:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
