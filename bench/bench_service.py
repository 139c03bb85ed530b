"""Service benchmark: scorewire against a do-nothing gRPC server, end to end.

``make bench-service`` (``make bench-service ARGS="--quick"`` for a smoke run) builds
the C++ load generator (bench/loadgen/) and runs this script, which starts two servers
on 127.0.0.1, each one process on a free port:

* noop:      bench/noop_server.py — the same protocols and grpc.aio server options
  as scorewire, answering every request with a precomputed response: the floor, what
  gRPC in Python costs per request on this machine;
* scorewire: ``.venv/bin/scorewire serve --port 0`` on the bundled demo repository
  (``--scorewire-args "..."`` appends flags, e.g. ``"--n-threads 1"``).

Each scenario runs on both servers INTERLEAVED — noop, scorewire, noop, scorewire, …
``--rounds`` times (default 3) — so slow drifts of a shared machine hit both alike.
A run is one loadgen process: ``--warmup-s`` of load that is not counted, then
``--duration-s`` that is (see bench/loadgen/loadgen.cc). Around each run this script
reads the server's CPU time (utime + stime of the process and its children, from
/proc/PID/stat) and divides it by the calls the loadgen completed in the whole run:
server CPU µs per request. It also reads the machine's total busy CPU (/proc/stat)
and subtracts both servers and the loadgen: what is left is other load on the machine
during the run ("other" column, in cores), a warning sign for noisy numbers.

A cell of the table is the median over the rounds; "spread" is (max - min) / median
of the request rate over the rounds. Ratios are scorewire / noop of those medians.
The issue's targets are printed next to the ratios as PASS/MISS; timing never fails
the run (a server that dies, or errors in a run, are reported, and the exit code is 1).

Scenarios (logistic-30 is the demo's breast-cancer: 30 float64 features; the 1-row
and 256-row requests carry typed values, ``double_values``, as a client in any
language would send; 8192-row requests carry raw bytes):

  name            protocol        rows  conns x in flight
  1row-c1         v1 Predict         1  1 x 1
  1row-c16        v1 Predict         1  1 x 16
  1row-c64        v1 Predict         1  4 x 16  (64 in flight over 4 TCP connections)
  256row-c8       v1 Predict       256  1 x 8
  8192row-c4-raw  v1 Predict      8192  1 x 4   (raw bytes)
  stream-1row     PredictStream      1  1 stream x 16 messages in flight
  forest-1row-c16 v1 Predict         1  1 x 16  (iris-forest: onnxruntime, 4 float32)
  oip-1row-c16    OIP ModelInfer     1  1 x 16  (raw_input_contents, as tritonclient)
  named-1row-c16  v1 Predict         1  1 x 16  (1row-c16's request naming its three
                                                outputs: label, probabilities, decision)
  explain-1row-c16 v1 Predict        1  1 x 16  (the same naming the explanations too:
                                                contributions, base_value)

explain-1row-c16 is compared with scorewire's own named-1row-c16 (the same request
without the explanations), not with the noop: what asking for them costs. Run the two
together: ``--only named-1row-c16,explain-1row-c16`` (rounds alternate them).

``--ensembles`` runs other scenarios, on scorewire alone (no noop server), over a
repository it writes to a temporary directory (see :func:`ensemble_repository`):
the demo's models, and ensembles of them. It compares an ensemble with its members
(ratios of medians, ensemble / member), all 1-row v1 Predict requests:

  name                     model               what
  member-1row-c{1,16}      breast-cancer       one logistic model (30 float64)
  vote3-1row-c{1,16}       bc-vote3            soft vote of 3 logistic members: 3 kernel calls
  folded3-1row-c{1,16}     bc-folded3          stacking of the same 3 members' decisions,
                                               folded into one linear model: 1 kernel call
  forest-1row-c16          iris-forest         onnxruntime (4 float32), batched (its default)
  iris-lr-1row-c16         iris-lr             a native logistic model of the same input
  mixed-1row-c16           iris-mixed          soft vote of iris-forest and iris-lr, not batched
  mixed-batched-1row-c16   iris-mixed-batched  the same ensemble, batched

Before the servers start, it times ``model.predict`` of one row in-process (no
gRPC) for the same models: what the ensemble itself adds, free of the server's
per-request cost and of most of the machine's noise.

Rounds are the outer loop: each round runs every scenario once on each server, so
a drift of a shared machine spreads over all scenarios alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "bench" / "loadgen" / "build" / "loadgen"
NOOP = ROOT / "bench" / "noop_server.py"
HOST = "127.0.0.1"
SERVERS = ("noop", "scorewire")
#: the optional third server: scorewire with --variant's extra flags (e.g. tracing on)
VARIANT = "variant"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    protocol: str  # v1 | v1-stream | oip
    rows: int
    connections: int
    concurrency: int
    model: str = "breast-cancer"
    features: int = 30
    dtype: str = "float64"
    raw: bool = False
    outputs: str = ""  # comma-separated output names; "": the model's default outputs

    def loadgen_args(self) -> list[str]:
        args = [
            "--protocol", self.protocol, "--model", self.model, "--features", str(self.features),
            "--dtype", self.dtype, "--rows", str(self.rows),
            "--connections", str(self.connections), "--concurrency", str(self.concurrency),
        ]  # fmt: skip
        if self.outputs:
            args += ["--outputs", self.outputs]
        return [*args, "--raw"] if self.raw else args


SCENARIOS = (
    Scenario("1row-c1", "v1", rows=1, connections=1, concurrency=1),
    Scenario("1row-c16", "v1", rows=1, connections=1, concurrency=16),
    Scenario("1row-c64", "v1", rows=1, connections=4, concurrency=16),
    Scenario("256row-c8", "v1", rows=256, connections=1, concurrency=8),
    Scenario("8192row-c4-raw", "v1", rows=8192, connections=1, concurrency=4, raw=True),
    Scenario("stream-1row", "v1-stream", rows=1, connections=1, concurrency=16),
    Scenario("forest-1row-c16", "v1", rows=1, connections=1, concurrency=16,
             model="iris-forest", features=4, dtype="float32"),
    Scenario("oip-1row-c16", "oip", rows=1, connections=1, concurrency=16, raw=True),
    Scenario("named-1row-c16", "v1", rows=1, connections=1, concurrency=16, outputs="label,probabilities,decision"),
    Scenario("explain-1row-c16", "v1", rows=1, connections=1, concurrency=16,
             outputs="label,probabilities,decision,contributions,base_value"),
)  # fmt: skip

#: ``--ensembles``: on the repository of :func:`ensemble_repository`
ENSEMBLE_SCENARIOS = (
    *(
        Scenario(f"{name}-1row-c{c}", "v1", rows=1, connections=1, concurrency=c, model=model)
        for c in (1, 16)
        for name, model in (("member", "breast-cancer"), ("vote3", "bc-vote3"), ("folded3", "bc-folded3"))
    ),
    *(
        Scenario(f"{name}-1row-c16", "v1", rows=1, connections=1, concurrency=16, model=model, features=4,
                 dtype="float32")
        for name, model in (("forest", "iris-forest"), ("iris-lr", "iris-lr"), ("mixed", "iris-mixed"),
                            ("mixed-batched", "iris-mixed-batched"))
    ),
)  # fmt: skip

#: ``--ensembles``: (scenario, the scenario it is compared with)
ENSEMBLE_PAIRS = (
    ("vote3-1row-c1", "member-1row-c1"),
    ("folded3-1row-c1", "member-1row-c1"),
    ("vote3-1row-c16", "member-1row-c16"),
    ("folded3-1row-c16", "member-1row-c16"),
    ("mixed-1row-c16", "forest-1row-c16"),
    ("mixed-1row-c16", "iris-lr-1row-c16"),
    ("mixed-batched-1row-c16", "forest-1row-c16"),
    ("mixed-batched-1row-c16", "mixed-1row-c16"),
)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: scorewire's ``metric`` over the noop's ``base_metric``
    in ``base`` (another scenario, or the same one) must be ≥ (or ≤) ``bound``."""

    scenario: str
    text: str
    metric: str  # req_per_s | rows_per_s | cpu_us | p99_us
    bound: float
    at_least: bool = True
    base: str | None = None  # the noop scenario compared with (default: the same)
    base_server: str = "noop"  # whose run of ``base`` it is compared with


TARGETS = (
    *(
        t
        for s in ("1row-c1", "1row-c16", "1row-c64", "oip-1row-c16")
        for t in (
            Target(s, "unary 1-row throughput ≥ 0.85× noop", "req_per_s", 0.85),
            Target(s, "unary 1-row server CPU/req ≤ 1.2× noop", "cpu_us", 1.2, at_least=False),
        )
    ),
    Target("1row-c64", "p99 at concurrency 64 ≤ 1.2× noop", "p99_us", 1.2, at_least=False),
    Target("256row-c8", "256-row rows/s ≥ 0.8× noop", "rows_per_s", 0.8),
    Target("stream-1row", "PredictStream ≥ 2× noop unary 1-row c16 req/s", "req_per_s", 2.0, base="1row-c16"),
    Target("forest-1row-c16", "ONNX forest ≥ 0.6× noop", "req_per_s", 0.6),
    Target("explain-1row-c16", "explanations: CPU/req < 1.2× scorewire named-1row-c16", "cpu_us", 1.2,
           at_least=False, base="named-1row-c16", base_server="scorewire"),
    Target("explain-1row-c16", "explanations: throughput > 1/1.2× scorewire named-1row-c16", "req_per_s", 1 / 1.2,
           base="named-1row-c16", base_server="scorewire"),
)  # fmt: skip


# --------------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    dead_reported: bool = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def start_server(name: str, argv: list[str], log: Path, banner: str, timeout: float = 60.0) -> Server:
    """Start a server with stdout and stderr to ``log``; wait for its
    ``"<banner> serving on HOST:PORT"`` line."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
    server = Server(name, proc, log)
    deadline = time.monotonic() + timeout
    needle = f"{banner} serving on "
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(needle):
                server.port = int(line.rsplit(":", 1)[1])
                return server
        if not server.alive():
            raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{server.log_tail()}")
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"{name} did not print '{needle}HOST:PORT' within {timeout:.0f} s:\n{server.log_tail()}")


def wait_serving(port: int, timeout: float = 60.0) -> None:
    """Wait until scorewire's health says SERVING (every model loaded)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"scorewire on port {port} was not SERVING within {timeout:.0f} s")


def stop_server(server: Server) -> None:
    if server.alive():
        server.proc.terminate()
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


# ------------------------------------------------------------- --ensembles
def _ensemble_toml(combiner: str, members: Sequence[str], extra: str = "", output: str = "") -> str:
    lines = [extra, "[ensemble]", f'combiner = "{combiner}"'] if extra else ["[ensemble]", f'combiner = "{combiner}"']
    for m in members:
        lines += ["", "[[ensemble.members]]", f'model = "{m}"'] + ([f'output = "{output}"'] if output else [])
    return "\n".join(lines) + "\n"


def ensemble_repository(root: Path) -> Path:
    """Write the repository of ``--ensembles`` into ``root``: the demo's models;
    bc-a, bc-b, bc-c (copies of breast-cancer); iris-lr (a native logistic model of
    iris, float32 like iris-forest, fitted here); and the ensembles over them, each
    with its members' reference.json so that every model pays for drift alike:

    * bc-vote3: soft vote of bc-a, bc-b, bc-c (three kernel calls per batch);
    * bc-folded3: stacking of their decisions into a logistic model with weights
      1/3 (folded at load time into one linear model: one kernel call);
    * iris-mixed: soft vote of iris-forest (onnxruntime) and iris-lr (native);
    * iris-mixed-batched: the same, with ``[batching] enabled = true``.
    """
    import shutil

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import scorewire
    from scorewire.export import linear_spec_from_sklearn
    from scorewire.formats.linear_json import dump_linear_json

    demo = scorewire.demo_repository()
    for model in demo.iterdir():
        if model.is_dir():
            shutil.copytree(model, root / model.name)
    for copy in ("bc-a", "bc-b", "bc-c"):
        shutil.copytree(demo / "breast-cancer" / "1", root / copy / "1")
    X, y = load_iris(return_X_y=True)
    spec = linear_spec_from_sklearn(LogisticRegression(max_iter=1000).fit(X, y))
    assert spec is not None
    (root / "iris-lr" / "1").mkdir(parents=True)
    dump_linear_json(dataclasses.replace(spec, dtype="float32"), root / "iris-lr" / "1" / "model.json")

    final = '\n[ensemble.final]\nkind = "logistic"\ncoefficients = [[0.3333, 0.3333, 0.3333]]\nintercepts = [0.0]\nclasses = [0, 1]\n'
    ensembles = {
        "bc-vote3": ("breast-cancer", _ensemble_toml("soft_vote", ["bc-a", "bc-b", "bc-c"])),
        "bc-folded3": ("breast-cancer", _ensemble_toml("stack", ["bc-a", "bc-b", "bc-c"], output="decision") + final),
        "iris-mixed": ("iris-forest", _ensemble_toml("soft_vote", ["iris-forest", "iris-lr"])),
        "iris-mixed-batched": (
            "iris-forest", _ensemble_toml("soft_vote", ["iris-forest", "iris-lr"], extra="[batching]\nenabled = true\n")
        ),
    }  # fmt: skip
    for name, (reference, toml) in ensembles.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "model.toml").write_text(toml)
        shutil.copy(demo / reference / "1" / "reference.json", root / name / "1" / "reference.json")
    return root


#: ``--ensembles``, in-process: (model, what its cost is compared with: one model, or members summed)
PREDICT_PAIRS = (
    ("bc-vote3", ("breast-cancer",)),
    ("bc-folded3", ("breast-cancer",)),
    ("iris-mixed", ("iris-forest",)),
    ("iris-mixed", ("iris-forest", "iris-lr")),
)


def predict_costs(root: Path, passes: int = 15, sample_s: float = 0.02) -> dict[str, float]:
    """In-process, no server: µs per ``model.predict`` of one row (all outputs), for
    each model of PREDICT_PAIRS; ``passes`` interleaved passes over the models, each
    a loop of ~``sample_s``; the best pass (garbage collector off, as timeit)."""
    import gc

    import numpy as np

    from scorewire import ModelRepository

    repo = ModelRepository(root)
    repo.load_all()
    names = list(dict.fromkeys(n for a, bs in PREDICT_PAIRS for n in (a, *bs)))
    rng = np.random.default_rng(0)
    calls = {}
    for name in names:
        model = repo.resolve(name).model
        sig = model.signature
        calls[name] = (model.predict, rng.random((1, sig.n_features or 0)).astype(sig.input.np_dtype))
    best = dict.fromkeys(names, float("inf"))
    gc.disable()
    try:
        for _ in range(passes):
            for name, (predict, X) in calls.items():
                n, t0 = 0, time.perf_counter_ns()
                while True:
                    for _ in range(20):
                        predict(X)
                    n += 20
                    elapsed = time.perf_counter_ns() - t0
                    if elapsed > sample_s * 1e9:
                        break
                best[name] = min(best[name], elapsed / n / 1e3)
    finally:
        gc.enable()
    return best


def predict_report(costs: dict[str, float]) -> str:
    rows = [
        [a, " + ".join(bs), f"{costs[a]:.1f}", f"{sum(costs[b] for b in bs):.1f}", f"{costs[a] / sum(costs[b] for b in bs):.2f}"]
        for a, bs in PREDICT_PAIRS
    ]  # fmt: skip
    return table(rows, ["model", "compared with", "µs/call", "µs/call", "×"])


def ensemble_report(runs: list[Run], scenarios: Sequence[Scenario]) -> str:
    """``--ensembles``: each scenario on scorewire, and each ensemble over what it is
    compared with (ratios of the medians)."""
    summary = {s.name: summarise(runs, s.name, "scorewire") for s in scenarios}
    rows = [
        [s.name, s.model, fmt(m["req_per_s"]), fmt(m["p50_us"]), fmt(m["p99_us"]), fmt(m["cpu_us"]),
         f"{m['spread'] * 100:.0f}%", f"{m['other']:.2f}"]
        for s in scenarios
        for m in (summary[s.name],)
    ]  # fmt: skip
    results = table(rows, ["scenario", "model", "req/s", "p50 µs", "p99 µs", "CPU µs/req", "spread", "other"])
    pair_rows = [
        [a, b, f"{x['req_per_s'] / y['req_per_s']:.2f}", f"{x['cpu_us'] / y['cpu_us']:.2f}",
         f"{x['p50_us'] / y['p50_us']:.2f}", f"{x['p99_us'] / y['p99_us']:.2f}"]
        for a, b in ENSEMBLE_PAIRS
        if a in summary and b in summary
        for x, y in ((summary[a], summary[b]),)
    ]  # fmt: skip
    ratios = table(pair_rows, ["scenario", "compared with", "throughput ×", "CPU/req ×", "p50 ×", "p99 ×"])
    problems = [f"  {r.scenario} / {r.server} / round {r.round}: {r.problem}" for r in runs if r.problem]
    text = f"{results}\n\nratios of the medians:\n\n{ratios}\n"
    if problems:
        text += "\nProblems:\n" + "\n".join(problems) + "\n"
    return text


# ------------------------------------------------------------------ CPU times
def _stat_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def _descendants(pid: int) -> list[int]:
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            out += [child, *_descendants(child)]
    return out


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants (``--workers``)."""
    ticks = 0
    for p in (pid, *_descendants(pid)):
        with contextlib.suppress(OSError, IndexError, ValueError):  # it just exited
            ticks += _stat_ticks(p)
    return ticks / CLK_TCK


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine (all CPUs) since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ----------------------------------------------------------------------- runs
@dataclass
class Run:
    scenario: str
    server: str
    round: int
    result: dict[str, Any] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    other_cores: float = 0.0
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem and "requests" in self.result

    def metric(self, name: str) -> float:
        r = self.result
        if name == "cpu_us":
            calls = r.get("calls_total", 0)
            return self.server_cpu_s * 1e6 / calls if calls else float("nan")
        if name in ("p50_us", "p99_us"):
            value = r.get("latency_us", {}).get(name[:3])
            return float("nan") if value is None else float(value)
        return float(r.get(name, float("nan")))


def run_once(
    scenario: Scenario, server: Server, others: Sequence[Server], args: argparse.Namespace, round_: int
) -> Run:
    run = Run(scenario.name, server.name, round_)
    argv = [
        str(args.loadgen), "--addr", f"{HOST}:{server.port}", *scenario.loadgen_args(),
        "--warmup-s", str(args.warmup_s), "--duration-s", str(args.duration_s),
        "--threads", str(args.threads), "--timeout-s", "10",
    ]  # fmt: skip
    cpu0 = process_cpu_s(server.proc.pid)
    other0 = sum(process_cpu_s(o.proc.pid) for o in others if o.alive())
    busy0, child0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=args.warmup_s + args.duration_s + 60, check=False
        )
    except subprocess.TimeoutExpired:
        run.problem = "loadgen timed out"
        return run
    wall = time.monotonic() - t0
    run.server_cpu_s = process_cpu_s(server.proc.pid) - cpu0
    run.loadgen_cpu_s = children_cpu_s() - child0
    other_cpu = sum(process_cpu_s(o.proc.pid) for o in others if o.alive()) - other0
    foreign = machine_busy_s() - busy0 - run.server_cpu_s - run.loadgen_cpu_s - other_cpu
    run.other_cores = max(0.0, foreign / wall)
    if out.returncode != 0:
        run.problem = f"loadgen exit {out.returncode}: {(out.stdout + out.stderr).strip()[-300:]}"
        return run
    try:
        run.result = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        run.problem = f"loadgen printed no JSON: {(out.stdout + out.stderr).strip()[-300:]}"
        return run
    problems = []
    check = run.result.get("check", {})
    if check.get("code") != "OK" or "error" in check.get("response", {}):
        problems.append(f"checked response: {json.dumps(check)}")
    if run.result.get("errors"):
        problems.append(f"errors in the measured window: {json.dumps(run.result['errors'])}")
    if not server.alive():
        problems.append(f"server exited with code {server.proc.returncode}")
    run.problem = "; ".join(problems)
    return run


# -------------------------------------------------------------------- report
def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def summarise(runs: list[Run], scenario: str, server: str) -> dict[str, float]:
    mine = [r for r in runs if r.scenario == scenario and r.server == server and r.ok]
    out = {m: median([r.metric(m) for r in mine]) for m in ("req_per_s", "rows_per_s", "p50_us", "p99_us", "cpu_us")}
    rates = [r.metric("req_per_s") for r in mine]
    out["spread"] = (max(rates) - min(rates)) / out["req_per_s"] if len(rates) > 1 and out["req_per_s"] else 0.0
    out["other"] = median([r.other_cores for r in mine])
    out["n"] = len(mine)
    return out


def fmt(value: float, digits: int = 0) -> str:
    if value != value:
        return "-"
    if digits == 0 and abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value:,.{digits}f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(runs: list[Run], scenarios: Sequence[Scenario], servers: Sequence[str] = SERVERS, variant: str = "") -> str:
    summary = {(s.name, srv): summarise(runs, s.name, srv) for s in scenarios for srv in servers}
    rows = []
    for s in scenarios:
        for srv in servers:
            m = summary[(s.name, srv)]
            rows.append([
                s.name if srv == "noop" else "", srv, fmt(m["req_per_s"]), fmt(m["rows_per_s"]),
                fmt(m["p50_us"]), fmt(m["p99_us"]), fmt(m["cpu_us"]), f"{m['spread'] * 100:.0f}%",
                f"{m['other']:.2f}",
            ])  # fmt: skip
    results = table(rows, ["scenario", "server", "req/s", "rows/s", "p50 µs", "p99 µs", "CPU µs/req", "spread", "other"])

    ratio_rows = []
    for s in scenarios:
        n, w = summary[(s.name, "noop")], summary[(s.name, "scorewire")]
        ratio_rows.append([
            s.name, "", f"{w['req_per_s'] / n['req_per_s']:.2f}", f"{w['cpu_us'] / n['cpu_us']:.2f}",
            f"{w['p99_us'] / n['p99_us']:.2f}",
        ])  # fmt: skip
    ratios = table(ratio_rows, ["scenario", "", "throughput ×", "CPU/req ×", "p99 ×"])

    target_rows = []
    names = {s.name for s in scenarios}
    for t in TARGETS:
        base = t.base or t.scenario
        if t.scenario not in names or base not in names:
            continue
        value = summary[(t.scenario, "scorewire")][t.metric] / summary[(base, t.base_server)][t.metric]
        if value != value:
            verdict = "n/a"
        else:
            verdict = "PASS" if (value >= t.bound if t.at_least else value <= t.bound) else "MISS"
        target_rows.append([t.scenario, t.text, f"{value:.2f}", verdict])
    targets = table(target_rows, ["scenario", "target", "measured ×", ""])

    problems = [f"  {r.scenario} / {r.server} / round {r.round}: {r.problem}" for r in runs if r.problem]
    text = f"{results}\n\nscorewire / noop (medians):\n\n{ratios}\n\nTargets (issues 4 and 16):\n\n{targets}\n"
    if VARIANT in servers:
        variant_rows = []
        for s in scenarios:
            a, b = summary[(s.name, "scorewire")], summary[(s.name, VARIANT)]
            variant_rows.append([
                s.name, "", f"{b['req_per_s'] / a['req_per_s']:.3f}", f"{b['cpu_us'] / a['cpu_us']:.3f}",
                f"{b['p50_us'] / a['p50_us']:.3f}", f"{b['p99_us'] / a['p99_us']:.3f}",
            ])  # fmt: skip
        text += (
            f"\nvariant ({variant}) / scorewire (medians):\n\n"
            + table(variant_rows, ["scenario", "", "throughput ×", "CPU/req ×", "p50 ×", "p99 ×"])
            + "\n"
        )
    if problems:
        text += "\nProblems:\n" + "\n".join(problems) + "\n"
    return text


def scorewire_revision() -> str:
    """The commit the server runs, "+ local changes" when src/ or ext/ differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        # NOTE: --no-optional-locks: a benchmark must not touch the repository's index
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), "diff", "--quiet", "HEAD",
                                "--", "src", "ext"], capture_output=True, check=False).returncode == 1
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return head + (" + local changes to src/ or ext/" if dirty else "")  # fmt: skip


def machine_line() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import grpc

        grpc_version = grpc.__version__
    except ImportError:  # pragma: no cover
        grpc_version = "?"
    return (
        f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}, "
        f"grpcio {grpc_version}"
    )


# ----------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a smoke run: 0.3 s warm-up, 1 s per run, 1 round")
    p.add_argument("--duration-s", type=float, default=None, help="measured seconds per run (default 5)")
    p.add_argument("--warmup-s", type=float, default=None, help="unmeasured seconds before each run (default 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per scenario (default 3)")
    p.add_argument("--threads", type=int, default=2, help="loadgen client threads (default 2)")
    p.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    p.add_argument("--ensembles", action="store_true",
                   help="ensembles against their members, on scorewire alone (see above)")  # fmt: skip
    p.add_argument("--scorewire-args", default="", help='extra flags for scorewire serve, e.g. "--n-threads 1"')
    p.add_argument("--variant", default="", help='a third server, interleaved: scorewire with these extra flags '
                   '(e.g. "--trace --trace-ratio 0.01"); prints variant / scorewire ratios')  # fmt: skip
    p.add_argument("--loadgen", type=Path, default=LOADGEN, help="the loadgen binary (make -C bench/loadgen)")
    p.add_argument("--json", type=Path, default=None, help="also write every run's raw result here")
    args = p.parse_args(argv)
    quick = args.quick
    args.duration_s = args.duration_s or (1.0 if quick else 5.0)
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (0.3 if quick else 1.0)
    args.rounds = args.rounds or (1 if quick else 3)
    if args.duration_s > 10 or args.warmup_s > 5:
        p.error("keep runs bounded: --duration-s ≤ 10, --warmup-s ≤ 5")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.loadgen.exists():
        print(f"no load generator at {args.loadgen}: build it with `make -C bench/loadgen` "
              "(or run `make bench-service`)", file=sys.stderr)  # fmt: skip
        return 2
    pool = ENSEMBLE_SCENARIOS if args.ensembles else SCENARIOS
    scenarios = [s for s in pool if not args.only or s.name in args.only.split(",")]
    if not scenarios:
        print(f"no scenario matches --only {args.only!r}", file=sys.stderr)
        return 2
    scorewire_bin = Path(sys.executable).parent / "scorewire"
    logs = Path(tempfile.mkdtemp(prefix="scorewire-bench-"))
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"service benchmark, {started}: {machine_line()}")
    print(f"scorewire at {scorewire_revision()}")
    print(f"runs: {args.warmup_s:g} s warm-up + {args.duration_s:g} s measured, {args.rounds} round(s), "
          f"loadgen threads {args.threads}; server logs in {logs}", flush=True)  # fmt: skip

    servers: dict[str, Server] = {}
    names: list[str] = []
    runs: list[Run] = []
    try:
        if not args.ensembles:
            servers["noop"] = start_server("noop", [sys.executable, str(NOOP), "--host", HOST, "--port", "0"],
                                           logs / "noop.log", "noop")  # fmt: skip
        repo = []
        if args.ensembles:
            repo = ["--repo", str(ensemble_repository(logs / "models"))]
            print("in-process model.predict of one row (best of 15 passes):\n")
            print(predict_report(predict_costs(logs / "models")) + "\n", flush=True)
        argv_sw = [str(scorewire_bin), "serve", "--host", HOST, "--port", "0", *repo, *shlex.split(args.scorewire_args)]
        servers["scorewire"] = start_server("scorewire", argv_sw, logs / "scorewire.log", "scorewire")
        wait_serving(servers["scorewire"].port)
        if args.variant:
            argv_v = [*argv_sw, *shlex.split(args.variant)]
            servers[VARIANT] = start_server(VARIANT, argv_v, logs / "variant.log", "scorewire")
            wait_serving(servers[VARIANT].port)
        names = list(servers)
        for round_ in range(1, args.rounds + 1):
            for s in scenarios:
                for name in names:
                    server = servers[name]
                    if not server.alive():
                        if not server.dead_reported:
                            server.dead_reported = True
                            print(f"!! {name} is not running (exit code {server.proc.returncode}); its log:\n"
                                  f"{server.log_tail()}", flush=True)  # fmt: skip
                        runs.append(Run(s.name, name, round_, problem="server not running"))
                        continue
                    others = [v for k, v in servers.items() if k != name]
                    run = run_once(s, server, others, args, round_)
                    runs.append(run)
                    r = run.result
                    print(f"  {s.name:16} {name:9} round {round_}: "
                          f"{fmt(run.metric('req_per_s')):>7} req/s  p50 {fmt(run.metric('p50_us')):>6} µs  "
                          f"p99 {fmt(run.metric('p99_us')):>7} µs  CPU {fmt(run.metric('cpu_us')):>5} µs/req  "
                          f"loadgen {fmt(r.get('client_cpu_us_per_call', float('nan'))):>4} µs/call  "
                          f"other {run.other_cores:.2f} cores"
                          + (f"  !! {run.problem}" if run.problem else ""), flush=True)  # fmt: skip
                    if not server.alive() and not server.dead_reported:
                        server.dead_reported = True
                        print(f"!! {name} died during {s.name} round {round_} (exit code "
                              f"{server.proc.returncode}); its log:\n{server.log_tail()}", flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            stop_server(server)

    print()
    print(ensemble_report(runs, scenarios) if args.ensembles else report(runs, scenarios, names, args.variant))
    print("other = CPU cores busy with anything but the servers and the loadgen during a run (median).")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in runs], indent=1))
        print(f"raw results: {args.json}")
    problems = any(r.problem for r in runs)
    errors_logged = any("ERROR" in s.log_tail(10_000) or "Traceback" in s.log_tail(10_000) for s in servers.values())
    if errors_logged:
        print(f"!! a server logged errors: see {logs}")
    return 1 if problems or errors_logged else 0


if __name__ == "__main__":
    sys.exit(main())
