"""What telemetry costs per request, in-process (a micro-benchmark, not a test).

    .venv/bin/python tests/observability/overhead.py [--calls 20000] [--rounds 7]

Calls the v1 servicer's ``Predict`` (decode → ScoringService → encode, with the
error mapping of ``@unary``) directly on one event loop, without a network, for a
1-row typed request to the demo's breast-cancer (30 float64 features; native
kernel) and to iris-forest (onnxruntime, batched), in these configurations:

  off          metrics off, tracing off (the default)
  metrics      --metrics-port set: Prometheus histograms and counters
  trace-1%     metrics + --trace as configured from the environment by default
               (parent-based 1%), spans to a BatchSpanProcessor whose exporter drops
               them; the client sends no traceparent
  trace-1%-tp  the same, the client sends a traceparent that is not sampled
  trace-1%-sdk the same sampler without scorewire's fast sampling decision (the
               SDK's own path, what any other sampler configuration takes)
  trace-100%   metrics + --trace with OTEL_TRACES_SAMPLER_ARG=1 (every request)

Configurations are interleaved round by round; each cell is the median (and the
best) of the rounds' mean µs per call (CPU time of this process, all its threads,
``time.process_time``). On a shared machine the whole-request numbers are noisy;
the second table times only what telemetry adds per request, in tight loops
(``timeit``, best of several repeats), which is steadier.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import timeit
from collections.abc import Sequence

import numpy as np
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import scorewire
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._predict import SERVICE, PredictServicer
from scorewire.grpc._telemetry import RpcTelemetry
from scorewire.observability import tracing as _tracing
from scorewire.observability.metrics import version_metrics
from scorewire.repository import ModelRepository
from scorewire.service import ScoringService


class DropExporter(SpanExporter):
    def export(self, spans: Sequence) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Context:
    """The parts of grpc.aio.ServicerContext the servicer uses."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def time_remaining(self) -> None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")


BASE_METADATA = (("user-agent", "grpc-c++/1.51.1 grpc-c/29.0.0 (linux; chttp2)"),)
UNSAMPLED = (*BASE_METADATA, ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"))


def provider(ratio: float, fast: bool = True) -> tuple[TracerProvider, int | None]:
    """scorewire's own provider for --trace, exporting to nowhere."""
    os.environ["OTEL_TRACES_EXPORTER"] = "none"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(ratio)
    os.environ.pop("OTEL_TRACES_SAMPLER", None)
    p, bound = _tracing.provider_from_environ()
    p.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=100000))
    return p, bound if fast else None


CONFIGS = {
    # name: (metrics, (tracer provider, fast bound), metadata)
    "off": (False, (None, None), BASE_METADATA),
    "metrics": (True, (None, None), BASE_METADATA),
    "trace-1%": (True, provider(0.01), BASE_METADATA),
    "trace-1%-tp": (True, provider(0.01), UNSAMPLED),
    "trace-1%-sdk": (True, provider(0.01, fast=False), BASE_METADATA),
    "trace-100%": (True, provider(1.0), BASE_METADATA),
}


async def run(servicer: PredictServicer, request: pb.PredictRequest, context: Context, calls: int) -> float:
    data = request.SerializeToString()  # Predict reads its request from the bytes grpc received
    started = time.process_time()
    for _ in range(calls):
        await servicer.Predict(data, context)
    return (time.process_time() - started) / calls * 1e6


def parts(repo: ModelRepository) -> None:
    """What telemetry adds per request, its parts timed alone."""
    t = RpcTelemetry(SERVICE, "Predict", ScoringService(repo, metrics=True))
    context = Context(BASE_METADATA)
    attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": "Predict"}

    def metrics() -> None:  # what the edge and the core add with --metrics-port
        started = t.begin()
        version_metrics("breast-cancer", 1).scored(0.00001, 1)
        t.ok("breast-cancer", 1, started, None)

    def decision(metadata):
        def run() -> None:
            span = _tracing.server_span("x", metadata, attributes)
            if span is not None:
                span.end()

        return run

    cases = {  # name: (what is timed, the tracer provider and fast-path bound it runs with)
        "metrics (6 metric calls)": (metrics, (None, None)),
        "metadata scan, trace off": (lambda: t.server_span(context), (None, None)),
        "trace decision, 1%": (decision(BASE_METADATA), CONFIGS["trace-1%"][1]),
        "trace decision, 1%, tp": (decision(UNSAMPLED), CONFIGS["trace-1%-tp"][1]),
        "trace decision, 1%, SDK": (decision(BASE_METADATA), CONFIGS["trace-1%-sdk"][1]),
    }
    print("\nwhat telemetry adds per request, timed alone (µs, best of 7 × 20000)")
    for name, (fn, tp) in cases.items():
        _tracing.use(*tp)
        best = min(timeit.repeat(fn, number=20000, repeat=7)) / 20000 * 1e6
        print(f"  {name:<26} {best:6.2f}")
    _tracing.use(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    repo = ModelRepository(scorewire.demo_repository(), n_threads=1)
    repo.load_all()
    loop = asyncio.new_event_loop()
    models = {"breast-cancer (native)": ("breast-cancer", 30, "float64"), "iris-forest (onnx, batched)": ("iris-forest", 4, "float32")}
    for title, (model, features, dtype) in models.items():
        X = np.random.default_rng(0).normal(size=(1, features)).astype(dtype)
        request = pb.PredictRequest(model=model, input=array_to_tensor(X, raw=False))
        servicers = {}
        for name, (metrics, _, _) in CONFIGS.items():
            servicers[name] = PredictServicer(ScoringService(repo, metrics=metrics))
        results: dict[str, list[float]] = {name: [] for name in CONFIGS}
        calls = args.calls if "native" in title else args.calls // 4
        for name, (_, tp, md) in CONFIGS.items():  # warm up
            _tracing.use(*tp)
            loop.run_until_complete(run(servicers[name], request, Context(md), calls // 10))
        for _ in range(args.rounds):
            for name, (_, tp, md) in CONFIGS.items():
                _tracing.use(*tp)
                results[name].append(loop.run_until_complete(run(servicers[name], request, Context(md), calls)))
        _tracing.use(None)
        base = statistics.median(results["off"])
        print(f"\n{title}: µs of CPU per 1-row Predict in the servicer ({args.rounds} rounds × {calls} calls)")
        print(f"  {'config':<13} {'median':>8} {'min':>8} {'vs off':>8}")
        for name, values in results.items():
            med = statistics.median(values)
            print(f"  {name:<13} {med:8.2f} {min(values):8.2f} {med - base:+8.2f}")
        for servicer in servicers.values():  # their batchers answer nothing more
            loop.run_until_complete(servicer.service.aclose())
    parts(repo)
    for _, (tp, _), _ in CONFIGS.values():
        if tp is not None:
            tp.shutdown()


if __name__ == "__main__":
    main()
