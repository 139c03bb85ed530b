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
        metadata={"help": "calls served at once (from the moment a call's request has arrived); above it "
                          "new calls get RESOURCE_EXHAUSTED at once. Health checks are not counted"},
    )  # fmt: skip
    receive_timeout_s: float = field(
        default=10.0,
        metadata={"help": "a call whose request has not arrived this long after the call began is cancelled "
                          "(clients that send half a request and stall)"},
    )  # fmt: skip
    handshake_timeout_s: float = field(
        default=10.0, metadata={"help": "a connection that has not completed its HTTP/2 handshake by then is closed"}
    )
    keepalive_time_s: float = field(
        default=30.0,
        metadata={"help": "ping a connection that has been quiet this long, to find peers that are gone"},
    )
    keepalive_timeout_s: float = field(
        default=10.0, metadata={"help": "close a connection whose ping is not answered within this long"}
    )
    max_connection_idle_s: float = field(
        default=0.0, metadata={"help": "close a connection without calls for this long (0: never)"}
    )
    max_connection_age_s: float = field(
        default=0.0,
        metadata={"help": "ask clients to reconnect after this long, e.g. to spread them over new replicas "
                          "behind a connection-level balancer (0: never); calls in flight get the grace period"},
    )  # fmt: skip
    max_streams_per_connection: int = field(
        default=100, metadata={"help": "calls one connection may have open at once (HTTP/2 MAX_CONCURRENT_STREAMS)"}
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
    tls_cert: Path | None = field(
        default=None,
        metadata={"help": "serve TLS with this PEM certificate (chain); read again from disk when it changes"},
    )
    tls_key: Path | None = field(default=None, metadata={"help": "the PEM private key of --tls-cert"})
    tls_client_ca: Path | None = field(
        default=None,
        metadata={"help": "require client certificates signed by this PEM CA (mutual TLS); needs --tls-cert"},
    )
    control_plane: str = field(
        default="auto",
        metadata={"help": "serve the control plane (load, unload, repository RPCs) on the gRPC port: auto (only "
                          "when --host is a loopback address), on, or off"},
    )  # fmt: skip
    admin_port: int = field(
        default=0,
        metadata={"help": "serve the control plane on this port of --admin-host (and not on the gRPC port); "
                          "0: no admin port"},
    )  # fmt: skip
    admin_host: str = field(default="127.0.0.1", metadata={"help": "the address --admin-port listens on"})
    auth_tokens: Path | None = field(
        default=None,
        metadata={"help": "access file (TOML): bearer tokens and client-certificate identities, each with the "
                          "groups of RPCs it may call (data, control); read again when it changes"},
    )  # fmt: skip
    health_open: bool = field(
        default=True, metadata={"help": "health checks need no credential when --auth-tokens is set (probes)"}
    )
    metrics_tls: bool = field(
        default=False, metadata={"help": "serve --metrics-port over TLS with --tls-cert and --tls-key"}
    )
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
    poll_interval_s: float = field(
        default=0.0,
        metadata={"help": "watch the repository: every this many seconds, load what changed on disk (a new, "
                          "changed or removed version directory or model.toml, a new or removed model "
                          "directory) once it looks the same in two polls in a row (0: off)"},
    )  # fmt: skip
    peers: str = field(
        default="",
        metadata={"help": "other replicas of this server (their own addresses, not a load balancer's) to "
                          "ask for feedback items this process holds no prediction for: comma-separated "
                          "host:port; a name that resolves to several addresses (a headless service) "
                          "stands for each, re-resolved every 30 s; this replica's own address may be "
                          "among them (it is recognised and skipped). Empty: ask no replica"},
    )  # fmt: skip
    peer_timeout_s: float = field(
        default=1.0,
        metadata={"help": "longest wait for another replica's or worker's answer to forwarded feedback "
                          "(never past the Feedback call's own deadline); items it does not answer in "
                          "time are UNKNOWN_ID"},
    )  # fmt: skip
    sibling_dir: str = field(
        default="",
        metadata={"help": "directory of the private sockets over which the processes of --workers forward "
                          "feedback to each other (set for each worker by --workers)"},
    )  # fmt: skip
    replica_id: str = field(
        default="",
        metadata={"help": "names this replica to its peers, so that feedback forwarded back to it is "
                          "recognised (empty: random at each start; --workers gives its workers one)"},
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
        if self.max_streams_per_connection < 1:
            problems.append("max_streams_per_connection must be positive")
        if min(self.receive_timeout_s, self.handshake_timeout_s, self.keepalive_time_s, self.keepalive_timeout_s) <= 0:
            problems.append("receive_timeout_s, handshake_timeout_s and the keepalive times must be positive")
        if self.max_connection_idle_s < 0 or self.max_connection_age_s < 0:
            problems.append("max_connection_idle_s and max_connection_age_s must not be negative")
        if self.monitor_interval_s <= 0:
            problems.append("monitor_interval_s must be positive")
        if not 0 <= self.poll_interval_s < float("inf"):
            problems.append("poll_interval_s must be 0 (off) or positive")
        if self.shutdown_grace_s < 0 or self.drain_delay_s < 0:
            problems.append("shutdown_grace_s and drain_delay_s must not be negative")
        if not 1 <= self.workers <= 256:
            problems.append("workers must be 1..256")
        if self.n_threads < 0:
            problems.append("n_threads must not be negative")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("tls_client_ca needs tls_cert and tls_key")
        if self.metrics_tls and self.tls_cert is None:
            problems.append("metrics_tls needs tls_cert and tls_key")
        if self.control_plane not in ("auto", "on", "off"):
            problems.append("control_plane must be auto, on or off")
        if not 0 <= self.admin_port <= 65535:
            problems.append("admin_port must be 0..65535")
        elif self.admin_port and self.admin_port in (self.port, self.metrics_port):
            problems.append("admin_port must differ from port and metrics_port")
        if self.peers and (self.tls_cert is not None or self.auth_tokens is not None):
            problems.append("peers cannot be combined with tls_cert or auth_tokens yet: feedback is forwarded "
                            "to peers in plaintext and without a credential")  # fmt: skip
        if not self.peer_timeout_s > 0:
            problems.append("peer_timeout_s must be positive")
        try:
            parse_peers(self.peers)
        except ValueError as exc:
            problems.append(str(exc))
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append("log_level must be DEBUG, INFO, WARNING or ERROR")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def parse_peers(text: str) -> list[tuple[str, int]]:
    """``--peers``: comma-separated ``host:port`` (``[v6 address]:port`` for IPv6) →
    [(host, port)]; ValueError naming the first entry that is not one."""
    peers = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535 or any(c in host for c in "/[] "):
            raise ValueError(f"peers: {entry[:64]!r} is not host:port")
        peers.append((host, int(port)))
    return peers


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
