"""The ``scorewire`` command.

    scorewire serve   [--repo DIR] [--port 50051] ...   run the gRPC server
    scorewire models  [--repo DIR]                       load a repository, print signatures
    scorewire export  MODEL.joblib --repo DIR --name N   scikit-learn → repository
    scorewire predict --model N [--addr] FILE|-          score a CSV/JSON file via a server
    scorewire explain --model N [--top K] FILE|-         each row's K largest feature contributions
    scorewire evaluate --model N --data F.csv --target C score a labelled file via a server,
                      [--reference M.joblib]             print its metrics (and the parity check)
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
from .types import BASE_VALUE, CONTRIBUTIONS

DEFAULT_ADDR = "127.0.0.1:50051"


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    from .errors import ConfigurationError
    from .grpc.server import check_configuration, serve
    from .settings import settings_from

    try:
        settings = settings_from(args)
        check_configuration(settings)
    except ValueError as exc:
        print(f"scorewire serve: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"scorewire serve: {exc.message}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    if settings.workers > 1:
        from .grpc.workers import run_workers

        return run_workers(settings)
    from .grpc.workers import bind_to_supervisor

    bind_to_supervisor()
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
            for i in sig.inputs:
                print(f"    input  {i.name}: {i.dtype} {list(i.shape)}")
            for o in sig.outputs:
                print(f"    output {o.name}: {o.dtype} {list(o.shape)}")
            if sig.classes is not None:
                print(f"    classes {list(sig.classes)}")
            if sig.explanation_baseline:
                print(f"    explanations from a {sig.explanation_baseline} baseline")
    return 1 if failed else 0


# ------------------------------------------------------------------ export
def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_file

    result = export_file(args.model, args.repo, args.name, args.version, args.reference_data, args.target)
    for member in result.members:  # an ensemble's: its members first
        print(f"wrote {member.artifact} ({member.backend} backend)")
        if member.reference:
            print(f"wrote {member.reference}")
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


def _feature_names(served: Any, d: int) -> list[str]:
    """The model's feature names, or f0, f1, ... when it has none."""
    names = list(served.feature_names)
    return names if len(names) == d else [f"f{j}" for j in range(d)]


def _print_outputs(outputs: dict[str, np.ndarray], fmt: str, served: Any) -> None:
    """One CSV row per input row (or one JSON object): an output's columns are
    ``name_j``, but for the explanations: ``contributions:FEATURE`` (with several
    decision columns ``contributions:CLASS:FEATURE``) and the base value, repeated
    on every row, as ``base_value`` (``base_value:CLASS``)."""
    if fmt == "json":
        print(json.dumps({k: v.tolist() for k, v in outputs.items()}))
        return
    roles = {name: role for role, name in served.roles.items()}
    n = next((len(v) for name, v in outputs.items() if roles.get(name) != BASE_VALUE), 0)
    columns: list[tuple[str, np.ndarray]] = []
    for name, value in outputs.items():
        role = roles.get(name)
        if role == CONTRIBUTIONS:
            features = _feature_names(served, value.shape[-1])
            if value.ndim == 2:
                columns.extend((f"{name}:{f}", value[:, j]) for j, f in enumerate(features))
            else:
                for c, cls in enumerate(_class_names(served, value.shape[1])):
                    columns.extend((f"{name}:{cls}:{f}", value[:, c, j]) for j, f in enumerate(features))
        elif role == BASE_VALUE:
            heads = [name] if value.shape[0] == 1 else [f"{name}:{c}" for c in _class_names(served, value.shape[0])]
            columns.extend((h, np.repeat(value[c], n)) for c, h in enumerate(heads))
        elif value.ndim == 1:
            columns.append((name, value))
        else:
            columns.extend((f"{name}_{j}", value[:, j]) for j in range(value.shape[1]))
    writer = csv.writer(sys.stdout)
    writer.writerow([c for c, _ in columns])
    for i in range(n):
        writer.writerow([_fmt(col[i]) for _, col in columns])


def _class_names(served: Any, k: int) -> list[str]:
    """The classes of k decision columns, or 0, 1, ... when the model states none."""
    classes = [str(c) for c in served.classes]
    return classes if len(classes) == k else [str(c) for c in range(k)]


def _fmt(v: Any) -> str:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def cmd_predict(args: argparse.Namespace) -> int:
    from .grpc.client import ClientError, NotReady

    X = read_rows(args.file)
    with connect(args) as client:
        try:
            served = client.served(args.model, args.version)
            outputs = client.predict(
                args.model, X.astype(served.input_dtype), version=args.version, outputs=tuple(args.outputs or ())
            ).outputs
        except NotReady as exc:
            print(f"scorewire predict: {exc} is not ready", file=sys.stderr)
            return 1
        except ClientError as err:
            print(f"scorewire predict: {err}", file=sys.stderr)
            return 1
    order = served.outputs  # the model's own output order
    names = sorted(outputs, key=lambda n: order.index(n) if n in order else len(order))
    _print_outputs({name: outputs[name] for name in names}, args.format, served)
    return 0


# ----------------------------------------------------------------- explain
def explain_rows(
    contributions: np.ndarray, base_value: np.ndarray, columns: np.ndarray, top: int
) -> list[tuple[float, float, list[tuple[int, float]], float]]:
    """Per row: (decision, base value, the ``top`` (feature, contribution) pairs of
    largest magnitude, largest first, and the sum of the other contributions) of
    decision column ``columns[i]``. ``contributions`` is (rows, features) or (rows,
    columns, features); the decision is their sum plus the base value."""
    if contributions.ndim == 2:
        contributions = contributions[:, None, :]
    out = []
    for i, c in enumerate(columns):
        row = contributions[i, c].astype(np.float64)
        order = np.argsort(-np.abs(row), kind="stable")[:top]
        rest = float(row.sum() - row[order].sum())
        base = float(base_value[c])
        out.append((float(row.sum()) + base, base, [(int(j), float(row[j])) for j in order], rest))
    return out


def cmd_explain(args: argparse.Namespace) -> int:
    from .grpc.client import ClientError, NotReady

    if args.top < 1:
        raise ValueError("--top must be at least 1")
    X = read_rows(args.file)
    with connect(args) as client:
        try:
            served = client.served(args.model, args.version)
            if not served.explanation_baseline:
                print(f"scorewire explain: model {args.model!r} has no explanations "
                      f"({served.backend} backend; they are available for native models)", file=sys.stderr)  # fmt: skip
                return 1
            contrib_name, base_name = served.roles[CONTRIBUTIONS], served.roles[BASE_VALUE]
            label_name = served.roles.get("label")
            wanted = (contrib_name, base_name, *((label_name,) if label_name else ()))
            outputs = client.predict(
                args.model, X.astype(served.input_dtype), version=args.version, outputs=wanted
            ).outputs
        except NotReady as exc:
            print(f"scorewire explain: {exc} is not ready", file=sys.stderr)
            return 1
        except ClientError as err:
            print(f"scorewire explain: {err}", file=sys.stderr)
            return 1
    contributions, base = outputs[contrib_name], outputs[base_name]
    k = base.shape[0]
    classes = _class_names(served, k)
    if k == 1:
        columns = np.zeros(len(contributions), dtype=np.int64)
    elif label_name and len(served.classes) == k:
        # the column of the predicted class (the server's label rule, read off its labels)
        columns = np.asarray([classes.index(str(v)) for v in outputs[label_name]], dtype=np.int64)
    else:
        columns = (contributions.sum(axis=-1) + base).argmax(axis=1)
    features = _feature_names(served, contributions.shape[-1])
    rows = explain_rows(contributions, base, columns, args.top)
    print(f"model {args.model} version {served.version}: decision = base value + the contributions "
          f"of {len(features)} features, measured from a {served.explanation_baseline} baseline")  # fmt: skip
    width = max(len(f) for f in features)
    labels = [str(v) for v in outputs[label_name]] if label_name else None
    for i, (decision, base_value, top, rest) in enumerate(rows):
        label = f", class {labels[i] if labels is not None else classes[columns[i]]}" if labels or k > 1 else ""
        print(f"row {i}: decision {decision:.6g}{label} (base value {base_value:.6g})")
        for j, value in top:
            print(f"  {features[j]:<{width}}  {value:+.6g}")
        if len(top) < len(features):
            print(f"  {f'({len(features) - len(top)} other features)':<{width}}  {rest:+.6g}")
    return 0


# ---------------------------------------------------------------- evaluate
def read_labelled_csv(path: str, target: str) -> tuple[list[str], np.ndarray, list[str]]:
    """A CSV with a header → (feature column names, float64 features, target column as text)."""
    with open(path, newline="", encoding="utf-8") as fh:
        records = [r for r in csv.reader(fh) if r]
    if not records:
        raise ValueError(f"{path}: empty CSV file")
    header = [h.strip() for h in records[0]]
    if target not in header:
        raise ValueError(f"{path}: no column {target!r} (the header has {len(header)} columns)")
    t = header.index(target)
    names = [h for i, h in enumerate(header) if i != t]
    X = np.empty((len(records) - 1, len(names)))
    y = []
    for i, row in enumerate(records[1:]):
        if len(row) != len(header):
            raise ValueError(f"{path}:{i + 2}: {len(row)} fields, the header has {len(header)}")
        try:
            X[i] = [float(v) for j, v in enumerate(row) if j != t]
        except ValueError:
            raise ValueError(f"{path}:{i + 2}: a feature value is not a number") from None
        y.append(row[t].strip())
    return names, X, y


def _score_file(args: argparse.Namespace, X: np.ndarray, names: list[str]) -> tuple[Any, int, dict[str, np.ndarray], np.ndarray]:
    """Score X through the server in batches: (the served model, the version that
    answered, outputs by name, X in model column order)."""
    from .grpc.client import NotReady

    with connect(args, max_message_mb=256) as client:
        try:
            served = client.served(args.model, args.version)
        except NotReady as exc:
            raise ValueError(f"{exc} is not ready") from None
        n_features = served.n_features or X.shape[1]
        if served.feature_names and set(served.feature_names) <= set(names):
            X = X[:, [names.index(n) for n in served.feature_names]]  # the model's column order
        elif X.shape[1] != n_features:
            raise ValueError(f"{args.data} has {X.shape[1]} feature columns, the model takes {n_features}")
        wanted = tuple(n for n in (served.roles.get(r) for r in ("label", "probabilities", "value")) if n)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
        version = 0
        for start in range(0, max(len(X), 1), args.batch_rows):
            chunk = np.ascontiguousarray(X[start : start + args.batch_rows], dtype=served.input_dtype)
            answer = client.predict(args.model, chunk, version=args.version or 0, outputs=wanted)
            version, outputs = answer.version, answer.outputs
            for n in wanted:
                parts[n].append(outputs[n])
    return served, version, {n: np.concatenate(v) for n, v in parts.items()}, X


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import evaluate as ev
    from .grpc.client import ClientError

    names, X, y_text = read_labelled_csv(args.data, args.target)
    try:
        sig, version, outputs, X = _score_file(args, X, names)
    except ClientError as err:
        print(f"scorewire evaluate: {err}", file=sys.stderr)
        return 1
    label, proba, value = (sig.roles.get(r) for r in ("label", "probabilities", "value"))
    print(f"model {args.model} version {version}, {len(y_text)} rows of {args.data}")
    report: ev.ClassificationReport | ev.RegressionReport
    if sig.task != "classification":
        if value is None:
            raise ValueError(f"model {args.model!r} has no float output to evaluate")
        try:
            y = np.asarray([float(v) for v in y_text])
        except ValueError:
            raise ValueError(f"{args.data}: a {args.target!r} value is not a number") from None
        report = ev.regression_report(y, outputs[value])
        parity = {"values": outputs[value]}
    else:
        p = outputs.get(proba) if proba else None
        labels = outputs.get(label) if label else None
        classes = _classes_of(sig, labels, y_text)
        if labels is None:
            if p is None:
                raise ValueError(f"model {args.model!r} has no label or probabilities output to evaluate")
            # the first maximum, as the kernel's label rule (_label_row in ext/_kernel.pyx)
            labels = np.asarray(classes, dtype=object)[p.argmax(axis=1)]
        if p is not None and p.shape[1] != len(classes):
            print(f"note: {p.shape[1]} probability columns for {len(classes)} classes: no ROC AUC or log-loss",
                  file=sys.stderr)  # fmt: skip
            p = None
        report = ev.classification_report(y_text, labels, classes, p)
        parity = {"labels": outputs[label]} if label else {}
        if p is not None:
            parity["probabilities"] = p
    print(ev.format_report(report))
    if args.reference:
        import joblib

        estimator = joblib.load(args.reference)  # NOTE: unpickling runs code: the user's own file only
        print(ev.reference_parity(estimator, X, **parity).format())
    return 0


def _classes_of(sig: Any, labels: np.ndarray | None, y_text: list[str]) -> tuple[Any, ...]:
    """The model's classes in probability-column order, typed like its labels.

    A model that does not state its classes (some ONNX graphs) is taken to order
    them as scikit-learn does: sorted.
    """
    numeric = labels is not None and labels.dtype.kind in "iu"
    if sig.classes:
        return tuple(int(c) for c in sig.classes) if numeric else tuple(sig.classes)
    print("note: the model does not state its classes; assuming the sorted labels are its columns", file=sys.stderr)
    seen = set(labels.tolist()) if labels is not None else set()
    if numeric:
        from .evaluate import parse_number

        seen |= {v for v in (parse_number(t) for t in y_text) if isinstance(v, int)}
    else:
        seen |= set(y_text)
    return tuple(sorted(seen))


# ------------------------------------------------------------------ health
def cmd_health(args: argparse.Namespace) -> int:
    from .grpc.client import ClientError

    with connect(args) as client:
        try:
            status = client.health(args.service)
        except ClientError as err:
            print(str(err), file=sys.stderr)
            return 1
    print(status)
    return 0 if status == "SERVING" else 1


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
        help="convert a fitted scikit-learn estimator or a Keras model into a repository artifact",
        description="Convert a fitted scikit-learn estimator or pipeline (a joblib file) into "
        "model.json (linear models, scalers folded in) or model.onnx (everything else), or a "
        "saved Keras model (.keras, or legacy .h5) whose network is linear into model.json, "
        "plus reference statistics for drift monitoring. A VotingClassifier, VotingRegressor, "
        "StackingClassifier or StackingRegressor becomes an ensemble over one member model per "
        "estimator, named NAME-<estimator name>. WARNING: a joblib file this UNPICKLES, "
        "which runs code from it: export only files you trust (your own). A Keras file is "
        "read, never run. The server never loads pickles.",
    )
    p.add_argument(
        "model",
        help="a joblib file with a fitted estimator (trusted: it is unpickled), or a .keras/.h5 Keras model",
    )
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
    p.add_argument("--outputs", nargs="*", help="output names (default: all)")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    add_connection_arguments(p, timeout=30.0)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "explain",
        help="print each row's largest feature contributions, from a running server",
        description="Score a CSV or JSON file through a running server, asking a native model for its "
        "explanations, and print for each row its decision, the base value and the --top features "
        "that moved it most (by absolute contribution; the decision is the base value plus all "
        "contributions). For a model with several decision columns, the predicted class's column.",
    )
    p.add_argument("file", help="CSV (header optional), JSON (a list of rows), or - for stdin")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--top", type=int, default=5, help="features per row (default 5)")
    add_connection_arguments(p, timeout=30.0)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "evaluate",
        help="score a labelled CSV file through a running server and print its metrics",
        description="Score a labelled CSV file (a header; --target names the label column; the "
        "other columns are the features, matched to the model's feature names when it has "
        "them) through a running server and print accuracy, ROC AUC, log-loss and the "
        "confusion matrix (classifiers) or RMSE, MAE and R² (regressors). With --reference, "
        "also the largest difference from the scikit-learn estimator's own predictions "
        "(the deployment parity check). WARNING: --reference UNPICKLES the file, which runs "
        "code from it: give only files you trust (your own).",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="CSV file with a header row")
    p.add_argument("--target", required=True, help="the column with the true label or value")
    p.add_argument("--version", type=int, default=0, help="0 (default): the newest ready version")
    p.add_argument("--reference", help="the fitted estimator (joblib; trusted: it is unpickled) to compare with")
    p.add_argument("--batch-rows", type=int, default=10_000, help="rows per request")
    add_connection_arguments(p, timeout=60.0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("health", help="check a server's health; exit 0 only when SERVING")
    p.add_argument("--service", default="", help='"" (the server), a service name, or model/<name>')
    add_connection_arguments(p, timeout=5.0)
    p.set_defaults(func=cmd_health)
    return parser


def add_connection_arguments(p: argparse.ArgumentParser, timeout: float) -> None:
    """How a client command reaches the server: address, TLS, token, deadline."""
    p.add_argument("--addr", default=DEFAULT_ADDR)
    p.add_argument("--ca", help="TLS: the CA (PEM) that signed the server's certificate; without it, plaintext")
    p.add_argument("--cert", help="mutual TLS: this client's certificate (PEM)")
    p.add_argument("--key", help="mutual TLS: the private key of --cert (PEM)")
    p.add_argument("--token-file", help="a file holding a bearer token for a server with --auth-tokens "
                   "(a file, not the token itself: command lines are visible to other users)")
    p.add_argument("--timeout", type=float, default=timeout)


def connect(args: argparse.Namespace, max_message_mb: int | None = None) -> Any:
    """A :class:`scorewire.Client` for the connection arguments."""
    from .grpc.client import Client

    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as fh:
            token = fh.readline().strip() or None
    return Client(args.addr, timeout=args.timeout, max_message_mb=max_message_mb,
                  ca=args.ca, cert=args.cert, key=args.key, token=token)  # fmt: skip


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
