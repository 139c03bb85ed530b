"""Explanations benchmark: what asking a native model for its contributions costs.

``make bench-explain`` (``ARGS="--quick"`` for a smoke run) times, on the demo's
breast-cancer model (binary logistic, 30 float64 features, explanations from its
reference means) and on the wine model (multinomial: 3 decision columns, 13
features), for batches of 1 to 131072 rows:

* score:   ``NativeLinearModel.predict(X, outputs=("probabilities",))``
* explain: ``NativeLinearModel.predict(X, outputs=("probabilities", "contributions", "base_value"))``

and prints the time per row of each and their ratio (explain / score; the issue's
target for bulk scoring is at most 2).

Then the request path, in-process: a serialized 1-row scorewire.v1 PredictRequest
(typed ``double_values``, as the service benchmark's loadgen sends) read and answered
to response bytes by the server's own adapter over a ScoringService on the demo
repository — the requests of bench_service.py's 1row-c16 (no output named),
named-1row-c16 (label, probabilities, decision) and explain-1row-c16 (the same and the
explanations) — as CPU time per request on this thread,
without gRPC's transport or the event loop's other work: steadier on a shared machine
than the service benchmark, which measures the whole server. The two are interleaved as in
bench_kernel.py: ``--reps`` passes over every configuration, in each one sample of
~``--sample-ms`` per method, the order of the two alternating from pass to pass; a
cell is the best of its samples, the median beside it. Timing never fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from bench_kernel import balanced_orders, calibrate, cpu_model, fmt_time, table

from scorewire import ModelRepository, demo_repository, load_model
from scorewire.backends.native import default_n_threads
from scorewire.grpc._predict import V1
from scorewire.grpc.stubs import array_to_tensor, pb
from scorewire.service import ScoringService

MODELS = ("breast-cancer", "wine")
BATCHES = (1, 64, 1024, 16384, 131072)
QUICK_BATCHES = (1, 1024, 16384)
METHODS = ("score", "explain")
OUTPUTS = {"score": ("probabilities",), "explain": ("probabilities", "contributions", "base_value")}
#: the issue's target: explanations per row in bulk within 2x of scoring alone
BULK_MIN_ROWS = 1024
BULK_MAX_RATIO = 2.0

perf_counter_ns = time.perf_counter_ns


def loop_for(predict: Callable[..., object], X: np.ndarray, outputs: tuple[str, ...]) -> Callable[[int], int]:
    def loop(n: int) -> int:
        t0 = perf_counter_ns()
        for _ in range(n):
            predict(X, outputs)
        return perf_counter_ns() - t0

    return loop


#: the service benchmark's 1-row requests to the 30-feature model
REQUEST_OUTPUTS = {
    "1row-c16": (),
    "named-1row-c16": ("label", "probabilities", "decision"),
    "explain-1row-c16": ("label", "probabilities", "decision", "contributions", "base_value"),
}


def request_path(reps: int, calls: int) -> dict[str, list[float]]:
    """CPU ns per 1-row Predict, bytes to bytes through the v1 adapter, for each of
    REQUEST_OUTPUTS: ``reps`` samples of ``calls`` calls each, in an order that
    turns each pass."""
    repo = ModelRepository(demo_repository(), n_threads=1)
    repo.load_all()
    adapter = V1(ScoringService(repo))
    X = np.random.default_rng(1).standard_normal((1, 30))
    blobs = {
        name: pb.PredictRequest(model="breast-cancer", input=array_to_tensor(X, raw=False), outputs=outputs,
                                request_id="r-1").SerializeToString()
        for name, outputs in REQUEST_OUTPUTS.items()
    }  # fmt: skip

    async def loop(blob: bytes, n: int) -> int:
        read, answer = adapter.read, adapter.answer_wire
        t0 = time.thread_time_ns()
        for _ in range(n):
            body = await answer(read(blob), None)
        t = time.thread_time_ns() - t0
        assert isinstance(body, bytes)
        return t

    async def main() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {name: [] for name in blobs}
        for name in blobs:
            await loop(blobs[name], calls)  # warm-up
        names = list(blobs)
        for rep in range(reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                samples[name].append(await loop(blobs[name], calls) / calls)
        return samples

    return asyncio.run(main())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--quick", action="store_true", help=f"batches {QUICK_BATCHES}, 4 short passes")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: the usable CPUs)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help=f"batch sizes (default {BATCHES})")
    p.add_argument("--reps", type=int, default=None, help="passes (default 8, quick 4)")
    p.add_argument("--sample-ms", type=float, default=None, help="one sample's length (default 20, quick 10)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    threads = default_n_threads() if args.threads is None else max(1, args.threads)
    batches = tuple(args.batches or (QUICK_BATCHES if args.quick else BATCHES))
    reps = args.reps or (4 if args.quick else 8)
    sample_ns = (args.sample_ms or (10.0 if args.quick else 20.0)) * 1e6
    print("# scorewire explanations benchmark")
    print()
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"machine: {cpu_model()}, nproc {os.cpu_count()}; kernel threads {threads}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print(f"- timing: {reps} passes, in each one sample of ~{sample_ns / 1e6:.0f} ms per method, "
          "the two methods' order alternating; best sample shown (median in parentheses)")

    rng = np.random.default_rng(0)
    configs = []
    for name in MODELS:
        model = load_model(demo_repository() / name / "1", n_threads=threads)
        sig = model.signature
        d, k = sig.n_features, model.spec.n_decisions
        for batch in batches:
            X = rng.standard_normal((batch, d)) + np.arange(d)
            loops = {m: loop_for(model.predict, X, OUTPUTS[m]) for m in METHODS}
            counts = {m: calibrate(loops[m], sample_ns) for m in METHODS}
            configs.append((name, d, k, batch, loops, counts, {m: [] for m in METHODS}))
    orders = balanced_orders(len(METHODS))
    gc.collect()
    gc.disable()
    try:
        for rep in range(reps):
            for i, (*_, loops, counts, samples) in enumerate(configs):
                for m in orders[(rep + i) % len(orders)]:
                    method = METHODS[m]
                    samples[method].append(loops[method](counts[method]) / counts[method])
    finally:
        gc.enable()

    rows, verdicts = [], []
    for name, d, k, batch, _, _, samples in configs:
        best = {m: min(samples[m]) for m in METHODS}
        med = {m: statistics.median(samples[m]) for m in METHODS}
        ratio, ratio_med = best["explain"] / best["score"], med["explain"] / med["score"]
        rows.append([
            name, str(d), str(k), str(batch), fmt_time(best["score"]), fmt_time(best["explain"]),
            f"{best['score'] / batch:.1f}", f"{best['explain'] / batch:.1f}", f"{ratio:.2f} ({ratio_med:.2f})",
        ])  # fmt: skip
        if batch >= BULK_MIN_ROWS:
            ok = ratio <= BULK_MAX_RATIO
            verdicts.append(f"- {'PASS' if ok else 'MISS'}  {name} batch {batch}: explain / score per row "
                            f"{ratio:.2f} (median {ratio_med:.2f}), target ≤ {BULK_MAX_RATIO:.1f}")  # fmt: skip
    print()
    print(table(["model", "d", "k", "batch", "score /call", "explain /call", "score ns/row", "explain ns/row",
                 "explain / score"], rows))  # fmt: skip
    print()
    print("Targets (issue 16; bulk = batches of 1024 rows and more):")
    print("\n".join(verdicts))
    print()
    gc.collect()
    gc.disable()
    try:
        path = request_path(reps=4 * reps, calls=2000 if args.quick else 10000)
    finally:
        gc.enable()
    plain, explained = path["named-1row-c16"], path["explain-1row-c16"]
    ratios = sorted(e / p for p, e in zip(plain, explained, strict=True))
    print()
    print("The request path, in-process (a 1-row v1 Predict to the 30-feature model, bytes to bytes, "
          f"CPU time per request; {len(plain)} samples each, interleaved):")  # fmt: skip
    print()
    print(table(["request", "best", "median"], [
        [name, fmt_time(min(v)), fmt_time(statistics.median(v))] for name, v in path.items()
    ]))  # fmt: skip
    print()
    print(f"- explain-1row-c16 / named-1row-c16, CPU per request: {min(explained) / min(plain):.3f} (best), "
          f"{statistics.median(explained) / statistics.median(plain):.3f} (median), paired samples "
          f"{ratios[0]:.3f}–{ratios[-1]:.3f}; target < 1.2")  # fmt: skip
    print()
    print(f"run took {time.monotonic() - started:.0f} s; load average at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
