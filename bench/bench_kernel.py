"""Kernel benchmark: the native linear kernel against scikit-learn, onnxruntime and NumPy.

``make bench`` (``make bench ARGS="--quick"`` for a smoke test) prints, for a binary
logistic model with 30 and 256 features and batches of 1 to 131072 float32 rows:

* (a) native:      ``NativeLinearModel.predict(X, outputs=("probabilities",))``
* (b) sklearn:     ``LogisticRegression.predict_proba(X)``
* (c) onnxruntime: ``InferenceSession.run(["probabilities"], ...)`` on the skl2onnx
  export (float32 input, no ZipMap), with the server's own session options and as
  many intra-op threads as the native kernel has
* (d) numpy:       ``z = X @ w + b; 1 / (1 + np.exp(-z))`` in float32, BLAS limited to
  the same thread count

and this machine's memory read bandwidth, which gives a floor per row: the bytes a
row must move (its 4·d input bytes plus the 8 bytes of its two float32
probabilities) divided by the bandwidth.

Timing: the machine is shared and noisy, so the four methods are interleaved. The run
makes ``--reps`` passes over all configurations; in each pass every method gets one
sample per configuration, a loop of calls lasting about ``--sample-ms`` (so a cell is
about reps x sample-ms = 160 ms), timed with ``time.perf_counter_ns`` and the garbage
collector off (as ``timeit`` does). The order of the methods follows a balanced
(Williams) square, so each method is timed after each other one equally often: a
method's idle worker threads (OpenBLAS spins for ~0.1 s after a call) slow whatever
runs next, and no method should always be the one that pays. A cell is the best of its
samples; the median is shown next to each target. Timing never fails the run: the
targets from the issue are printed with PASS/MISS as ratios measured in this run.

OpenBLAS: where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set (this workplace sets them
on some processors, for old OpenBLAS builds) they slow current NumPy, so this script
re-executes itself once without both, in its own process only, and reports which BLAS
kernel threadpoolctl then sees. ``--keep-openblas-env`` opts out. ``--blas-no-spin``
re-executes with OPENBLAS_THREAD_TIMEOUT=4, so NumPy's idle BLAS threads sleep at once.
"""

from __future__ import annotations

import os
import sys

OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: OpenBLAS's idle workers busy-wait 2**n cycles (default n = 28, ~0.1 s) after a call
BLAS_NO_SPIN = ("OPENBLAS_THREAD_TIMEOUT", "4")
_REEXEC_MARK = "_SCOREWIRE_BENCH_REEXEC"


def _reexec_for_openblas() -> None:
    """exec this script again with the OpenBLAS environment this run wants.

    Unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (unless --keep-openblas-env) and,
    with --blas-no-spin, sets OPENBLAS_THREAD_TIMEOUT=4 so that NumPy's idle BLAS
    workers sleep at once instead of spinning on a core the next method needs.

    NOTE: OpenBLAS reads its environment when it is loaded, i.e. at ``import numpy``,
    so this must happen before any third-party import. It touches this process only.
    """
    argv = sys.argv[1:]
    if _REEXEC_MARK in os.environ:
        return
    env = dict(os.environ)
    notes = []
    if "--keep-openblas-env" not in argv:
        found = [f"{k}={env.pop(k)}" for k in OPENBLAS_OVERRIDES if k in env]
        if found:
            notes.append(f"unset {' '.join(found)}")
    if "--blas-no-spin" in argv and env.get(BLAS_NO_SPIN[0]) != BLAS_NO_SPIN[1]:
        env[BLAS_NO_SPIN[0]] = BLAS_NO_SPIN[1]
        notes.append(f"set {'='.join(BLAS_NO_SPIN)}")
    if not notes:
        return
    env[_REEXEC_MARK] = "; ".join(notes)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


if __name__ == "__main__":
    _reexec_for_openblas()

# ruff: noqa: E402  (third-party imports follow the re-exec above on purpose)
import argparse
import dataclasses
import datetime
import gc
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import skl2onnx
import sklearn
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info, threadpool_limits

from scorewire.backends import _kernel
from scorewire.backends.native import NativeLinearModel, default_n_threads
from scorewire.backends.ort import session_options
from scorewire.export import linear_spec_from_sklearn, onnx_from_sklearn

FEATURES = (30, 256)
BATCHES = (1, 8, 64, 1024, 16384, 131072)
QUICK_BATCHES = (1, 1024, 16384)
METHODS = ("native", "sklearn", "onnxruntime", "numpy")

#: issue targets
BATCH1_MAX_NS = 1000.0  # native batch-1 call under 1 µs
BATCH1_MAX_VS_ORT = 0.25  # ... and at most a quarter of onnxruntime's
LARGE_BATCH = 1024  # from this batch size on:
LARGE_MAX_VS_NUMPY = 1.0  # at least as fast per row as NumPy float32
LARGE_MAX_VS_FLOOR = 1.5  # within 1.5x of the memory-bandwidth floor

perf_counter_ns = time.perf_counter_ns

# A loop runs n calls of one method and returns the elapsed nanoseconds.
Loop = Callable[[int], int]


# ---------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cache_bytes(level: int) -> int | None:
    """Size of cpu0's unified/data cache at ``level`` from sysfs (None if unknown)."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return None
    for entry in entries:
        try:
            with open(f"{base}/{entry}/level", encoding="utf-8") as fh:
                if int(fh.read()) != level:
                    continue
            with open(f"{base}/{entry}/type", encoding="utf-8") as fh:
                if fh.read().strip() == "Instruction":
                    continue
            with open(f"{base}/{entry}/size", encoding="utf-8") as fh:
                text = fh.read().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        return int(text.rstrip("KMG")) * scale
    return None


def blas_description() -> str:
    """NumPy's BLAS as threadpoolctl sees it: library, version, kernel, threads."""
    parts = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        owner = "numpy" if "numpy" in info.get("filepath", "") else (
            "scipy" if "scipy" in info.get("filepath", "") else "other")
        parts.append(
            f"{owner}: {info.get('internal_api')} {info.get('version')} "
            f"kernel={info.get('architecture', '?')} threads={info.get('num_threads')}"
        )
    return "; ".join(parts) or "none found"


def openblas_env_note() -> str:
    parts = []
    if os.environ.get(_REEXEC_MARK):
        parts.append(f"re-executed: {os.environ[_REEXEC_MARK]}")
    present = [f"{k}={os.environ[k]}" for k in (*OPENBLAS_OVERRIDES, BLAS_NO_SPIN[0])
               if k in os.environ]
    parts.append(f"in effect: {' '.join(present)}" if present else "none set")
    if any(k in os.environ for k in OPENBLAS_OVERRIDES):
        parts.append("(--keep-openblas-env: NumPy may be slowed)")
    return "; ".join(parts)


def _elapsed_ns(fn: Callable[[], object]) -> int:
    t0 = perf_counter_ns()
    fn()
    return perf_counter_ns() - t0


class BandwidthProbe:
    """Memory read bandwidth in GB/s (bytes per ns), the best of every sample taken.

    Reads a float32 array much larger than the last-level cache with two probes,
    ``np.add.reduce`` (pairwise sum) and ``np.dot(a, a)`` (OpenBLAS sdot limited to one
    thread; both operands are the same memory, so each byte comes from DRAM once), on
    one thread and on ``n_threads`` Python threads each reading its own slice (both
    release the GIL). Like the methods, it is sampled once per pass, so that one busy
    moment of another tenant does not set the floor.
    """

    def __init__(self, n_threads: int, nbytes: int) -> None:
        self.nbytes = nbytes
        self._a = a = np.ones(nbytes // 4, dtype=np.float32)  # every page written once
        self._pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
        self._probes: list[tuple[str, Callable[[], object]]] = [
            ("1 thread", lambda: np.add.reduce(a)),
            ("1 thread", lambda: np.dot(a, a)),
        ]
        if self._pool is not None:
            pool, chunks = self._pool, np.array_split(a, n_threads)
            self._probes += [
                (f"{n_threads} threads", lambda: list(pool.map(np.add.reduce, chunks))),
                (f"{n_threads} threads", lambda: list(pool.map(lambda c: np.dot(c, c), chunks))),
            ]
        self.best: dict[str, float] = {key: 0.0 for key, _ in self._probes}
        self.samples = 0

    def sample(self) -> None:
        with threadpool_limits(limits=1, user_api="blas"):
            for key, fn in self._probes:
                self.best[key] = max(self.best[key], self.nbytes / _elapsed_ns(fn))
        self.samples += 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        del self._a, self._probes

    @property
    def gbps(self) -> float:
        return max(self.best.values())


# ---------------------------------------------------------------------------
# the four methods
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Contestants:
    """One fitted model and its four scorers."""

    n_features: int
    clf: LogisticRegression
    native: NativeLinearModel
    session: ort.InferenceSession
    w32: np.ndarray
    b32: np.float32

    def loops(self, X: np.ndarray) -> dict[str, Loop]:
        """A timing loop per method for input X (everything looked up outside it)."""

        def native(n: int) -> int:
            predict = self.native.predict
            outputs = ("probabilities",)
            t0 = perf_counter_ns()
            for _ in range(n):
                predict(X, outputs=outputs)
            return perf_counter_ns() - t0

        def sklearn_(n: int) -> int:
            predict_proba = self.clf.predict_proba
            t0 = perf_counter_ns()
            for _ in range(n):
                predict_proba(X)
            return perf_counter_ns() - t0

        def onnxruntime(n: int) -> int:
            run = self.session.run
            names = ["probabilities"]
            feed = {"input": X}
            t0 = perf_counter_ns()
            for _ in range(n):
                run(names, feed)
            return perf_counter_ns() - t0

        def numpy(n: int) -> int:
            w, b, exp = self.w32, self.b32, np.exp
            t0 = perf_counter_ns()
            for _ in range(n):
                z = X @ w + b
                1 / (1 + exp(-z))
            return perf_counter_ns() - t0

        return {"native": native, "sklearn": sklearn_, "onnxruntime": onnxruntime,
                "numpy": numpy}

    def check(self, X: np.ndarray) -> float:
        """Largest difference in P(class 1) between the four (they must agree)."""
        p_native = self.native.predict(X, outputs=("probabilities",))["probabilities"][:, 1]
        p_sklearn = self.clf.predict_proba(X)[:, 1]
        p_ort = self.session.run(["probabilities"], {"input": X})[0][:, 1]
        p_numpy = 1 / (1 + np.exp(-(X @ self.w32 + self.b32)))
        ref = p_sklearn.astype(np.float64)
        return float(max(np.abs(p - ref).max() for p in (p_native, p_ort, p_numpy)))


def make_contestants(d: int, n_threads: int, seed: int) -> Contestants:
    """Fit a binary LogisticRegression on synthetic data and build the four scorers."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((4000, d))
    w = rng.standard_normal(d) / np.sqrt(d)
    y = (X @ w + 0.5 * rng.standard_normal(len(X)) > 0).astype(np.int64)
    clf = LogisticRegression(max_iter=2000).fit(X, y)
    spec = linear_spec_from_sklearn(clf)
    assert spec is not None
    # a float32 model: float32 probabilities, like the ONNX export and the NumPy baseline
    native = NativeLinearModel(dataclasses.replace(spec, dtype="float32"), n_threads=n_threads)
    session = ort.InferenceSession(
        onnx_from_sklearn(clf, d),
        sess_options=session_options(n_threads),
        providers=["CPUExecutionProvider"],
    )
    return Contestants(
        n_features=d,
        clf=clf,
        native=native,
        session=session,
        w32=np.ascontiguousarray(clf.coef_[0], dtype=np.float32),
        b32=np.float32(clf.intercept_[0]),
    )


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------

def calibrate(loop: Loop, target_ns: float) -> int:
    """Calls per sample so that one sample lasts about ``target_ns`` (at least 1)."""
    loop(1)  # warm-up: first-call allocations, lazy initialisation
    n = 1
    while True:
        elapsed = max(loop(n), 1)
        if elapsed >= target_ns / 10 or n >= 1 << 26:
            break
        n = min(n * 10, max(n + 1, int(n * target_ns / 10 / elapsed) + 1))
    return max(1, round(n * target_ns / elapsed))


def balanced_orders(n: int) -> list[list[int]]:
    """A Williams square: n orders of range(n) (n even) in which every method follows
    every other exactly once, so no method is always timed right after the same one
    (whose idle threads may still be spinning on a core)."""
    first = [0]
    lo, hi = 1, n - 1
    while len(first) < n:
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    return [[(x + r) % n for x in first] for r in range(n)]


@dataclasses.dataclass
class Config:
    """One (feature count, batch size) cell row: its loops and calls per sample."""

    d: int
    batch: int
    loops: dict[str, Loop]
    counts: dict[str, int]
    samples: dict[str, list[float]]  # per-call ns


def time_passes(configs: list[Config], reps: int, probe: BandwidthProbe) -> None:
    """``reps`` passes over every configuration; in each, one sample per method, in a
    balanced order. A configuration's samples are thus spread over the whole run, not
    bunched into one second that another tenant of the machine may own."""
    orders = balanced_orders(len(METHODS))
    for rep in range(reps):
        gc.collect()
        for i, c in enumerate(configs):
            for m in orders[(rep + i) % len(orders)]:
                name = METHODS[m]
                c.samples[name].append(c.loops[name](c.counts[name]) / c.counts[name])
        probe.sample()
        print(f"  pass {rep + 1}/{reps} done", file=sys.stderr, flush=True)


def empty_loop_ns(reps: int = 5) -> float:
    """What a ``for _ in range(n)`` iteration costs alone (not subtracted anywhere)."""
    n = 1_000_000
    best = float("inf")
    for _ in range(reps):
        t0 = perf_counter_ns()
        for _ in range(n):
            pass
        best = min(best, (perf_counter_ns() - t0) / n)
    return best


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

def fmt_time(ns: float) -> str:
    """ns as a short human number with its unit."""
    if ns < 1e3:
        return f"{ns:.0f} ns" if ns >= 10 else f"{ns:.2f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs" if ns < 1e4 else f"{ns / 1e3:.1f} µs"
    return f"{ns / 1e6:.2f} ms" if ns < 1e7 else f"{ns / 1e6:.1f} ms"


def fmt_row_ns(ns: float) -> str:
    return f"{ns:.1f}" if ns < 100 else f"{ns:.0f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, right-aligned numbers, readable as plain text too."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    body = [
        "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join([line, rule, *body])


@dataclasses.dataclass
class Cell:
    d: int
    batch: int
    samples: dict[str, list[float]]  # per-call ns
    floor_row_ns: float

    def best(self, m: str) -> float:
        return min(self.samples[m])

    def median(self, m: str) -> float:
        return statistics.median(self.samples[m])


def report_tables(cells: list[Cell]) -> str:
    call_rows, row_rows = [], []
    for c in cells:
        call_rows.append([str(c.d), str(c.batch), *(fmt_time(c.best(m)) for m in METHODS)])
        per_row = {m: c.best(m) / c.batch for m in METHODS}
        row_rows.append([
            str(c.d), str(c.batch),
            *(fmt_row_ns(per_row[m]) for m in METHODS),
            fmt_row_ns(c.floor_row_ns),
            f"{per_row['native'] / per_row['onnxruntime']:.2f}",
            f"{per_row['native'] / per_row['numpy']:.2f}",
            f"{per_row['native'] / c.floor_row_ns:.2f}",
        ])
    per_call = table(["d", "batch", *(f"{m} /call" for m in METHODS)], call_rows)
    per_row_t = table(
        ["d", "batch", *(f"{m} ns/row" for m in METHODS), "floor ns/row",
         "native/ort", "native/numpy", "native/floor"],
        row_rows,
    )
    return (
        "Time per call (best of the samples):\n\n" + per_call
        + "\n\nTime per row in ns, and ratios (native time / other time: below 1 = native"
        " faster):\n\n" + per_row_t
    )


def report_targets(cells: list[Cell]) -> tuple[str, int, int]:
    """The issue's targets as PASS/MISS lines: (text, passed, total)."""
    lines = []
    passed = total = 0

    def verdict(name: str, best: float, median: float, limit: float, unit: str = "") -> None:
        nonlocal passed, total
        ok = best < limit if unit else best <= limit
        total += 1
        passed += ok
        fmt = (lambda v: fmt_time(v)) if unit else (lambda v: f"{v:.2f}")
        lines.append(
            f"- {'PASS' if ok else 'MISS'}  {name}: {fmt(best)} "
            f"(median {fmt(median)}), target {'<' if unit else '≤'} {fmt(limit)}"
        )

    for c in cells:
        if c.batch == 1:
            verdict(f"d={c.d} batch 1, native time per call",
                    c.best("native"), c.median("native"), BATCH1_MAX_NS, unit="ns")
            verdict(f"d={c.d} batch 1, native / onnxruntime",
                    c.best("native") / c.best("onnxruntime"),
                    c.median("native") / c.median("onnxruntime"), BATCH1_MAX_VS_ORT)
    for c in cells:
        if c.batch >= LARGE_BATCH:
            verdict(f"d={c.d} batch {c.batch}, native / numpy per row",
                    c.best("native") / c.best("numpy"),
                    c.median("native") / c.median("numpy"), LARGE_MAX_VS_NUMPY)
            verdict(f"d={c.d} batch {c.batch}, native / floor per row",
                    c.best("native") / c.batch / c.floor_row_ns,
                    c.median("native") / c.batch / c.floor_row_ns, LARGE_MAX_VS_FLOOR)
    head = (
        "Targets (from the issue; PASS/MISS on the best of the samples, median in"
        " parentheses; timing never fails the run):\n"
    )
    return head + "\n".join(lines), passed, total


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    # NOTE: no abbreviations: the re-exec above matches its two flags literally
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: batches {QUICK_BATCHES}, 4 short passes")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for the native kernel, onnxruntime's intra-op pool and "
                        "NumPy's BLAS (default: the CPUs this process may use)")
    p.add_argument("--features", type=int, nargs="+", default=None,
                   help=f"feature counts (default {FEATURES})")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help=f"batch sizes (default {BATCHES})")
    p.add_argument("--reps", type=int, default=None,
                   help="passes over all configurations, i.e. samples per cell; a multiple of 4 "
                        "keeps the order balanced (default 8, quick 4)")
    p.add_argument("--sample-ms", type=float, default=None,
                   help="target duration of one timed sample (default 20, quick 10)")
    p.add_argument("--bandwidth-mib", type=int, default=None,
                   help="array size for the bandwidth probe (default 4x the L3 cache, "
                        "1-2 GiB; quick 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="do not re-exec without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    p.add_argument("--blas-no-spin", action="store_true",
                   help="re-exec with OPENBLAS_THREAD_TIMEOUT=4: NumPy's idle BLAS threads "
                        "sleep at once instead of spinning (~0.1 s) on a core the method "
                        "timed next needs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    threads = default_n_threads() if args.threads is None else max(1, args.threads)
    features = tuple(args.features or FEATURES)
    batches = tuple(args.batches or (QUICK_BATCHES if args.quick else BATCHES))
    reps = args.reps or (4 if args.quick else 8)
    sample_ns = (args.sample_ms or (10.0 if args.quick else 20.0)) * 1e6
    l2, l3 = cache_bytes(2), cache_bytes(3)
    if args.bandwidth_mib:
        bw_bytes = args.bandwidth_mib * 2**20
    elif args.quick:
        bw_bytes = 256 * 2**20
    else:
        bw_bytes = min(max(4 * (l3 or 0), 2**30), 2**31)

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 1
    print("# scorewire kernel benchmark")
    print()
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {cpu_model()}; nproc {os.cpu_count()} (usable {affinity}); "
          f"L2 {(l2 or 0) / 2**20:.0f} MiB, L3 {(l3 or 0) / 2**20:.0f} MiB (as sysfs reports); "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"- software: Python {platform.python_version()}, numpy {np.__version__}, "
          f"scikit-learn {sklearn.__version__}, onnxruntime {ort.__version__}, "
          f"skl2onnx {skl2onnx.__version__}")
    print(f"- OpenBLAS environment: {openblas_env_note()}")
    with threadpool_limits(limits=threads, user_api="blas"):
        print(f"- BLAS (threadpoolctl): {blas_description()}")
    print(f"- threads: native kernel {threads} (OpenMP "
          f"{'on' if _kernel.openmp_enabled() else 'OFF'}, parallel from "
          f"{_kernel.PARALLEL_MIN_ROWS} rows), onnxruntime intra-op {threads} "
          f"(scorewire session_options), NumPy BLAS {threads}")
    print(f"- timing: {reps} passes over all configurations, in each one sample of "
          f"~{sample_ns / 1e6:.0f} ms per method, the 4 methods in a balanced (Williams) "
          f"order; best sample shown; time.perf_counter_ns, GC off; "
          f"an empty loop iteration costs {empty_loop_ns():.0f} ns (included, not subtracted)")

    probe = BandwidthProbe(threads, bw_bytes)
    for _ in range(3):
        probe.sample()

    configs: list[Config] = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for d in features:
            contestants = make_contestants(d, threads, args.seed)
            rng = np.random.default_rng(args.seed + 1)
            diff = contestants.check(rng.standard_normal((257, d), dtype=np.float32))
            if diff > 1e-5:
                print(f"ERROR: the four scorers disagree by {diff:.2e} for d={d}")
                probe.close()
                return 1
            for batch in batches:
                X = rng.standard_normal((batch, d), dtype=np.float32)
                loops = contestants.loops(X)
                counts = {m: calibrate(loops[m], sample_ns) for m in METHODS}
                configs.append(Config(d, batch, loops, counts, {m: [] for m in METHODS}))
        gc.collect()
        gc.disable()
        try:
            time_passes(configs, reps, probe)
        finally:
            gc.enable()
    probe.close()
    bw = probe.gbps
    cells = [Cell(c.d, c.batch, c.samples, (4 * c.d + 8) / bw) for c in configs]

    print(f"- memory read bandwidth (a float32 array of {bw_bytes / 2**20:.0f} MiB read by "
          f"np.add.reduce and by sdot; best of {probe.samples} samples spread over the run): "
          + ", ".join(f"{k} {v:.1f} GB/s" for k, v in probe.best.items())
          + f"; the floor uses {bw:.1f} GB/s")
    print("- floor per row = (4·d input bytes + 8 output bytes) / bandwidth: "
          + ", ".join(f"d={d}: {(4 * d + 8) / bw:.1f} ns" for d in features))
    print()
    print(report_tables(cells))
    print()
    text, passed, total = report_targets(cells)
    print(text)
    print()
    print(f"{passed} of {total} targets PASS; run took {time.monotonic() - started:.0f} s; "
          f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
