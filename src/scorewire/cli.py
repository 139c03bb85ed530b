"""The ``scorewire`` command.

    scorewire serve   [--repo DIR] [--port 50051] ...   run the gRPC server
    scorewire models  [--repo DIR]                       load a repository, print signatures
    scorewire export  MODEL.joblib --repo DIR --name N   scikit-learn → repository
    scorewire predict --model N [--addr] FILE|-          score a CSV/JSON file via a server
    scorewire health  [--addr] [--service S]             exit 0 only when SERVING
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import sys
from typing import Any

import numpy as np

from . import __version__
from .errors import ScorewireError

DEFAULT_ADDR = "127.0.0.1:50051"


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    from .grpc.server import serve
    from .settings import settings_from

    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"scorewire serve: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    if settings.workers > 1:
        from ._workers import run_workers

        return run_workers(settings)
    return asyncio.run(serve(settings))


# ------------------------------------------------------------------ models
def cmd_models(args: argparse.Namespace) -> int:
    from . import demo_repository
    from .repository import ModelRepository

    repo = ModelRepository(args.repo or demo_repository())
    repo.load_all()
    failed = 0
    for entry in sorted(repo.entries(), key=lambda e: e.name):
        print(f"{entry.name}: {entry.state.value}" + (f" ({entry.error})" if entry.error else ""))
        for v in sorted(entry.versions):
            mv = entry.versions[v]
            if mv.model is None:
                failed += 1
                print(f"  version {v}: {mv.state.value}: {mv.error}")
                continue
            sig = mv.model.signature
            print(f"  version {v}: {mv.model.backend}, {sig.task}")
            print(f"    input  {sig.input.name}: {sig.input.dtype} {list(sig.input.shape)}")
            for o in sig.outputs:
                print(f"    output {o.name}: {o.dtype} {list(o.shape)}")
            if sig.classes is not None:
                print(f"    classes {list(sig.classes)}")
    return 1 if failed else 0


# ------------------------------------------------------------------ export
def cmd_export(args: argparse.Namespace) -> int:
    from ._export import export_file

    result = export_file(args.model, args.repo, args.name, args.version, args.reference_data, args.target)
    print(f"wrote {result.artifact} ({result.backend} backend)")
    if result.reference:
        print(f"wrote {result.reference}")
    return 0


# ----------------------------------------------------------------- predict
def read_rows(path: str) -> np.ndarray:
    """Rows from a CSV (an optional header row is skipped) or JSON file, or '-'."""
    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        doc = json.loads(text)
        rows = doc.get("inputs", doc.get("rows")) if isinstance(doc, dict) else doc
        return np.asarray(rows, dtype=np.float64)
    records = [r for r in csv.reader(io.StringIO(text)) if r]
    if records:
        try:
            [float(v) for v in records[0]]
        except ValueError:
            records = records[1:]  # a header
    return np.asarray([[float(v) for v in r] for r in records], dtype=np.float64)


def _print_outputs(outputs: dict[str, np.ndarray], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps({k: v.tolist() for k, v in outputs.items()}))
        return
    columns: list[tuple[str, np.ndarray]] = []
    for name, value in outputs.items():
        if value.ndim == 1:
            columns.append((name, value))
        else:
            columns.extend((f"{name}_{j}", value[:, j]) for j in range(value.shape[1]))
    writer = csv.writer(sys.stdout)
    writer.writerow([c for c, _ in columns])
    n = len(columns[0][1]) if columns else 0
    for i in range(n):
        writer.writerow([_fmt(col[i]) for _, col in columns])


def _fmt(v: Any) -> str:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def cmd_predict(args: argparse.Namespace) -> int:
    import grpc

    from .grpc._codec import array_to_tensor
    from .grpc._gen.scorewire.v1 import scorewire_pb2 as pb
    from .grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

    X = read_rows(args.file)
    with grpc.insecure_channel(args.addr) as channel:
        models = pb_grpc.ModelServiceStub(channel)
        predict = pb_grpc.PredictServiceStub(channel)
        try:
            info = models.GetModel(pb.GetModelRequest(name=args.model), timeout=args.timeout)
            ready = [v for v in info.versions if v.state == pb.READY and args.version in (0, v.version)]
            if not ready:
                what = f"version {args.version} of {args.model!r}" if args.version else repr(args.model)
                print(f"scorewire predict: {what} is not ready", file=sys.stderr)
                return 1
            dtype = "float32" if ready[-1].signature.input.dtype == pb.FLOAT32 else "float64"
            request = pb.PredictRequest(
                model=args.model,
                version=args.version or 0,
                input=array_to_tensor(X.astype(dtype), raw=True),
                outputs=args.outputs or [],
            )
            response = predict.Predict(request, timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"scorewire predict: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    order = [o.name for o in ready[-1].signature.outputs]  # the model's own output order
    names = sorted(response.outputs, key=lambda n: order.index(n) if n in order else len(order))
    outputs = {name: tensor_to_array_any(response.outputs[name]) for name in names}
    _print_outputs(outputs, args.format)
    return 0


def tensor_to_array_any(t: Any) -> np.ndarray:
    """Decode any output tensor, strings included."""
    from .grpc._codec import tensor_to_array
    from .grpc._gen.scorewire.v1 import scorewire_pb2 as pb

    if t.dtype == pb.STRING:
        return np.asarray(list(t.string_values), dtype=object).reshape(tuple(t.shape))
    return tensor_to_array(t)


# ------------------------------------------------------------------ health
def cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


# -------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from .settings import add_arguments

    parser = argparse.ArgumentParser(prog="scorewire", description="A gRPC model server for tabular models.")
    parser.add_argument("--version", action="version", version=f"scorewire {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC server")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="load a repository and print each model's signature")
    p.add_argument("--repo", help="model repository (default: the bundled demo repository)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "export",
        help="convert a fitted scikit-learn estimator into a repository artifact",
        description="Convert a fitted scikit-learn estimator or pipeline (a joblib file) into "
        "model.json (linear models, scalers folded in) or model.onnx (everything else), "
        "plus reference statistics for drift monitoring. WARNING: this UNPICKLES the "
        "file, which runs code from it: export only files you trust (your own). The "
        "server never loads pickles.",
    )
    p.add_argument("model", help="a joblib file with a fitted estimator (trusted: it is unpickled)")
    p.add_argument("--repo", required=True, help="model repository directory")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.add_argument("--reference-data", help="CSV with a header: training-like rows for drift statistics")
    p.add_argument("--target", help="a column of the reference CSV to leave out (the label)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="score a CSV or JSON file through a running server")
    p.add_argument("file", help="CSV (header optional), JSON (a list of rows), or - for stdin")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--addr", default=DEFAULT_ADDR)
    p.add_argument("--outputs", nargs="*", help="output names (default: all)")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("health", help="check a server's health; exit 0 only when SERVING")
    p.add_argument("--addr", default=DEFAULT_ADDR)
    p.add_argument("--service", default="", help='"" (the server), a service name, or model/<name>')
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ScorewireError as exc:
        print(f"scorewire {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"scorewire {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
