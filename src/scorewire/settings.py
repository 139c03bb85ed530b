"""The server's settings: one typed object, from flags and ``SCOREWIRE_*`` variables.

Every field is a command-line flag (``--max-message-mb``) and an environment
variable (``SCOREWIRE_MAX_MESSAGE_MB``); a flag wins over the variable, the variable
over the default. This module is the only place that reads ``os.environ`` (besides
OpenTelemetry's own ``OTEL_*`` variables).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "SCOREWIRE_"


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Settings:
    """What ``scorewire serve`` runs with. Each field's ``help`` is its documentation."""

    repo: Path | None = field(
        default=None,
        metadata={"help": "model repository directory (default: the bundled demo repository)"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on ('0.0.0.0' or '[::]' for all)"})
    port: int = field(default=50051, metadata={"help": "gRPC port (0 picks a free one)"})
    max_message_mb: int = field(
        default=64, metadata={"help": "largest request or response message, MiB (larger: RESOURCE_EXHAUSTED)"}
    )
    max_batch_rows: int = field(
        default=1_000_000, metadata={"help": "most rows in one request (more: RESOURCE_EXHAUSTED); model.toml may lower it"}
    )
    max_model_mb: int = field(
        default=256,
        metadata={"help": "largest file of a model directory, and the most a model's declared weights and "
                          "tensors may take, MiB (more: that model fails to load)"},
    )  # fmt: skip
    max_concurrent_rpcs: int = field(
        default=256,
        metadata={"help": "RPCs in flight at once; above it new calls get RESOURCE_EXHAUSTED at once"},
    )
    shutdown_grace_s: float = field(
        default=10.0, metadata={"help": "on SIGTERM: how long in-flight RPCs may take to finish"}
    )
    drain_delay_s: float = field(
        default=1.0,
        metadata={"help": "on SIGTERM: how long to keep serving every RPC after health turns NOT_SERVING, "
                          "so load balancers stop routing here and requests already sent arrive"},
    )  # fmt: skip
    reflection: bool = field(default=True, metadata={"help": "serve gRPC server reflection"})
    n_threads: int = field(
        default=0, metadata={"help": "threads for one large batch (0: the CPUs this process may use)"}
    )
    offload_min_values: int = field(
        default=16384,
        metadata={"help": "requests with at least this many input values are scored on a worker thread, "
                          "so large batches do not stall the event loop"},
    )  # fmt: skip
    simd: bool = field(
        default=True,
        metadata={"help": "let the kernel use its AVX2+FMA paths when the CPU has them (--no-simd: its "
                          "portable loops everywhere, e.g. to compare; scores agree to rounding)"},
    )  # fmt: skip
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    workers: int = field(
        default=1,
        metadata={"help": "server processes sharing the port (SO_REUSEPORT); a parent restarts any that dies"},
    )
    reuse_port: bool = field(
        default=False, metadata={"help": "listen with SO_REUSEPORT (set for each worker by --workers)"}
    )
    metrics_port: int = field(
        default=0,
        metadata={"help": "serve Prometheus metrics over HTTP at /metrics on this port (0: off; "
                          "with --workers the supervisor serves the sum of all workers)"},
    )  # fmt: skip
    serve_metrics: bool = field(
        default=True,
        metadata={"help": "serve /metrics from this process (--workers turns it off in each worker, "
                          "whose metrics the supervisor serves)"},
    )  # fmt: skip
    monitor_interval_s: float = field(
        default=15.0,
        metadata={"help": "with --metrics-port: how often the drift (PSI) and feedback gauges are "
                          "recomputed, seconds"},
    )  # fmt: skip
    trace: bool = field(
        default=False,
        metadata={"help": "trace requests with OpenTelemetry: exporter, endpoint, service name and "
                          "sampler from the standard OTEL_* variables (default: OTLP/gRPC, parent-based "
                          "1%% sampling)"},
    )  # fmt: skip

    def env_name(self, name: str) -> str:
        return ENV_PREFIX + name.upper()

    def validate(self) -> Settings:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append("port must be 0..65535")
        if not 0 <= self.metrics_port <= 65535:
            problems.append("metrics_port must be 0..65535")
        elif self.metrics_port and self.metrics_port == self.port:
            problems.append("metrics_port must differ from port")
        if self.max_message_mb < 1 or self.max_message_mb > 2047:
            problems.append("max_message_mb must be 1..2047")
        if self.max_batch_rows < 1:
            problems.append("max_batch_rows must be positive")
        if self.max_model_mb < 1:
            problems.append("max_model_mb must be positive")
        if self.max_concurrent_rpcs < 1:
            problems.append("max_concurrent_rpcs must be positive")
        if self.monitor_interval_s <= 0:
            problems.append("monitor_interval_s must be positive")
        if self.shutdown_grace_s < 0 or self.drain_delay_s < 0:
            problems.append("shutdown_grace_s and drain_delay_s must not be negative")
        if not 1 <= self.workers <= 256:
            problems.append("workers must be 1..256")
        if self.n_threads < 0:
            problems.append("n_threads must not be negative")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append("log_level must be DEBUG, INFO, WARNING or ERROR")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def to_environ(settings: Settings) -> dict[str, str]:
    """The SCOREWIRE_* variables that reproduce ``settings`` (for worker processes)."""
    env = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        env[ENV_PREFIX + f.name.upper()] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env


def _parse(tp: Any, text: str) -> Any:
    if tp in (bool, "bool"):
        return _bool(text)
    if tp in (int, "int"):
        return int(text)
    if tp in (float, "float"):
        return float(text)
    if tp in ("Path | None",):
        return Path(text) if text else None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field (defaults left to :func:`settings_from`)."""
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {ENV_PREFIX}{f.name.upper()}; default {f.default}]"
        if f.type in (bool, "bool"):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, type=functools.partial(_parse, f.type), help=help_text)


def settings_from(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags (when given), then SCOREWIRE_* variables, then defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = flag_value
            continue
        text = env.get(ENV_PREFIX + f.name.upper())
        if text is not None:
            try:
                values[f.name] = _parse(f.type, text)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}: cannot parse {text[:40]!r}") from None
    return Settings(**values).validate()
