"""Triton's perf_analyzer, the load-testing harness of Triton's clients, against a
real server (`scorewire serve`, bundled demo repository).

perf_analyzer asks the server for ModelMetadata, ModelConfig and ServerMetadata
(refusing any of them aborts it) and, since ServerMetadata lists ``statistics``,
for ModelStatistics around each measurement window: its report's "Server:"
section is what ModelStatistics said. ``make test`` installs it (``make
perf-analyzer``: the binary out of the tritonclient 2.50.0 wheel, Debian's libb64
and the CUDA runtime library from PyPI; no GPU is used).

Each run measures a fixed number of requests per window (``count_windows``) and
accepts the first windows whatever their spread (a stability percentage no
measurement misses): nothing here depends on how fast the machine is.

1. the server starts;
2. perf_analyzer runs against one model, unary (synchronous calls) or streaming
   (ModelStreamInfer, asynchronous, two requests in flight);
3. its exit code is 0 and its report is read: the requests it counted, and the
   server-side counts and breakdown it read from ModelStatistics.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import scorewire

from .servers import server_process

ROOT = Path(__file__).resolve().parent.parent
PERF_ANALYZER = ROOT / ".venv" / "perf_analyzer" / "bin" / "perf_analyzer"
CUDA_LIB = ROOT / ".venv" / "perf_analyzer" / "cuda" / "nvidia" / "cuda_runtime" / "lib"

#: how long a run may take before the test calls it hung (a bound, not a measurement)
HANG_S = 300

SERVER = re.compile(
    r"Server:\s+Inference count: (?P<inferences>\d+)\s+Execution count: (?P<executions>\d+)\s+"
    r"Successful request count: (?P<requests>\d+)\s+"
    r"Avg request latency: (?P<latency>\d+) usec \(overhead (?P<overhead>\d+) usec \+ queue (?P<queue>\d+) usec "
    r"\+ compute input (?P<input>\d+) usec \+ compute infer (?P<infer>\d+) usec \+ compute output (?P<output>\d+) usec\)"
)
CLIENT = re.compile(r"Client:\s+Request count: (?P<requests>\d+)")


@pytest.fixture(scope="module")
def server():
    assert PERF_ANALYZER.is_file(), f"{PERF_ANALYZER} is missing: `make test` installs it (`make perf-analyzer`)"
    with server_process() as s:
        yield s


def perf_analyzer(addr: str, model: str, *args: str) -> str:
    """Run perf_analyzer; its report (stdout), once it exited 0."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(CUDA_LIB)}
    run = subprocess.run(
        [
            str(PERF_ANALYZER),
            "-m", model,
            "-u", addr,
            "-i", "grpc",
            "--measurement-mode", "count_windows",
            "--measurement-request-count", "50",
            "--stability-percentage", "100000",
            "--max-trials", "3",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env=env,
    )  # fmt: skip
    assert run.returncode == 0, f"perf_analyzer exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def report_of(stdout: str) -> tuple[dict[str, int], dict[str, int]]:
    """(client, server) sections of a report, as numbers."""
    client, server = CLIENT.search(stdout), SERVER.search(stdout)
    assert client is not None and server is not None, f"no client/server section in:\n{stdout}"
    return {k: int(v) for k, v in client.groupdict().items()}, {k: int(v) for k, v in server.groupdict().items()}


def test_unary_against_the_native_kernel(server):
    """Synchronous ModelInfer calls of 3 rows to breast-cancer (native, not batched)."""
    client, srv = report_of(perf_analyzer(server.addr, "breast-cancer", "-b", "3"))
    assert client["requests"] > 0
    assert srv["requests"] > 0
    # every request carried 3 rows (inferences) and was scored alone (one execution each)
    assert srv["inferences"] == 3 * srv["requests"]
    assert srv["executions"] == srv["requests"]
    assert srv["queue"] == 0  # no batching queue: nothing is ever counted there


def test_streaming_against_a_batched_model(server):
    """ModelStreamInfer with two requests in flight to iris-forest (onnxruntime,
    dynamic batching: requests may share an execution)."""
    stdout = perf_analyzer(server.addr, "iris-forest", "--streaming", "--concurrency-range", "2", "-b", "2")
    assert "Using asynchronous calls for inference" in stdout
    client, srv = report_of(stdout)
    assert client["requests"] > 0
    assert srv["requests"] > 0
    assert srv["inferences"] == 2 * srv["requests"]
    assert srv["executions"] > 0


@pytest.fixture(scope="module")
def ensemble_server(tmp_path_factory):
    """A repository with bc-vote: a soft vote of two copies of the demo's breast-cancer."""
    root = tmp_path_factory.mktemp("ensembles")
    demo = scorewire.demo_repository()
    for copy in ("bc-a", "bc-b"):
        shutil.copytree(demo / "breast-cancer" / "1", root / copy / "1")
    (root / "bc-vote" / "1").mkdir(parents=True)
    (root / "bc-vote" / "model.toml").write_text('[ensemble]\ncombiner = "soft_vote"\nmembers = ["bc-a", "bc-b"]\n')
    with server_process("--repo", str(root)) as s:
        yield s


def test_unary_against_an_ensemble(ensemble_server):
    """An ensemble's ModelConfig names scorewire's own platform, not Triton's
    "ensemble" (a pipeline of steps, which perf_analyzer reads from the config and
    crashed on when there were none): it is measured as any model."""
    client, srv = report_of(perf_analyzer(ensemble_server.addr, "bc-vote", "-b", "2"))
    assert client["requests"] > 0
    assert srv["requests"] > 0
    assert srv["inferences"] == 2 * srv["requests"]


def test_an_unknown_model_fails_the_run_with_the_servers_message(server):
    env = {**os.environ, "LD_LIBRARY_PATH": str(CUDA_LIB)}
    run = subprocess.run(
        [str(PERF_ANALYZER), "-m", "no-such-model", "-u", server.addr, "-i", "grpc"],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env=env,
    )
    assert run.returncode != 0
    assert "no-such-model" in run.stdout + run.stderr
