"""Render the manifests in deploy/ and run what their containers run.

Nothing here is copied from the manifests by hand: a test reads the rendered
objects (``kubectl kustomize``) and takes the command line, environment, ports,
volumes and probe requests from them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..servers import ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "kserve"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
SERVICEMONITOR = KUBERNETES / "components" / "servicemonitor"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

#: the most any one step (a start, a stop, a render) may take before the test fails
PATIENCE_S = 120


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path is not None, (
        "kubectl is not installed: these tests render deploy/kubernetes with `kubectl kustomize` "
        "(kubectl comes with the machine's image; `make test` does not install it)"
    )
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY``: the rendered objects (needs no cluster)."""
    return copy.deepcopy(list(_kustomize(str(directory))))


@functools.cache
def _kustomize(directory: str) -> tuple[dict[str, Any], ...]:
    r = subprocess.run([kubectl(), "kustomize", directory], capture_output=True, text=True, timeout=PATIENCE_S)
    assert r.returncode == 0, f"kubectl kustomize {directory}:\n{r.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(r.stdout) if doc)


def overlay(name: str) -> list[dict[str, Any]]:
    return kustomize(KUBERNETES / "overlays" / name)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} named {name}"
    return found[0]


def cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "500m") in CPUs."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def seconds_of_sleep(command: list[str]) -> float:
    """The seconds of an exec hook that is a ``sleep N``."""
    assert len(command) == 2 and command[0] == "sleep", f"not a plain sleep: {command}"
    return float(command[1])


@dataclass
class Container:
    """One container of a pod template (a Deployment's, or a ServingRuntime's)."""

    spec: dict[str, Any]
    volumes: dict[str, dict[str, Any]]  # the pod's volumes by name

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Container:
        pod = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
        (container,) = pod["containers"]
        return cls(container, {v["name"]: v for v in pod.get("volumes", [])})

    @property
    def argv(self) -> list[str]:
        return [*self.spec["command"], *self.spec.get("args", [])]

    @property
    def env(self) -> dict[str, str]:
        return {e["name"]: e["value"] for e in self.spec.get("env", [])}

    def port(self, name: str) -> int:
        (port,) = [p["containerPort"] for p in self.spec["ports"] if p["name"] == name]
        return int(port)

    def probe_service(self, probe: str) -> str:
        """The health service a probe asks (grpc probes only: that is the design)."""
        action = self.spec[probe]["grpc"]
        return str(action.get("service", ""))

    def mounts(self, kind: str) -> dict[str, dict[str, Any]]:
        """{mountPath: mount} of the mounts whose volume is of ``kind`` (emptyDir, ...)."""
        return {m["mountPath"]: m for m in self.spec.get("volumeMounts", []) if kind in self.volumes[m["name"]]}


def substitute(argv: list[str], env: Mapping[str, str], mapping: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` and ``env`` with each value in ``mapping`` replaced: a whole word, the
    value of a ``--flag=value``, or (for a path) a path below it."""

    def one_value(value: str) -> str:
        prefix, rest = "", value
        if value.startswith("--") and "=" in value:
            flag, rest = value.split("=", 1)
            prefix = flag + "="
        for old, new in mapping.items():
            if rest == old or (old.startswith("/") and rest.startswith(old + "/")):
                return prefix + new + rest[len(old) :]
        return value

    return [one_value(a) for a in argv], {k: one_value(v) for k, v in env.items()}


def host_environ(container_env: Mapping[str, str]) -> dict[str, str]:
    """The environment a server started on this host gets: the container's, over what
    a process here needs (PATH with this venv first; OPENBLAS_* and SCOREWIRE_SIMD as
    the test run has them), and no other SCOREWIRE_* variable of the test run."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SCOREWIRE_", "PYTHON", "VIRTUAL_ENV"))}
    if "SCOREWIRE_SIMD" in os.environ:  # `SCOREWIRE_SIMD=0 make test` reaches every server
        keep["SCOREWIRE_SIMD"] = os.environ["SCOREWIRE_SIMD"]
    bin_dir = str(Path(sys.executable).parent)
    keep["PATH"] = os.pathsep.join([bin_dir, keep.get("PATH", "/usr/bin:/bin")])
    return {**keep, **container_env}


def check(addr: str, service: str, timeout: float = 10.0) -> int:
    """One health Check, as the kubelet's grpc probe sends it; the status it got."""
    with grpc.insecure_channel(addr) as channel:
        r = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return int(r.status)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = PATIENCE_S) -> None:
    """Poll until ``predicate()`` holds (a generous bound turns a hang into a failure)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)


def wait_status(addr: str, service: str, status: int, timeout: float = PATIENCE_S) -> None:
    """Until a health Check of ``service`` answers ``status``."""

    def answered() -> bool:
        try:
            return check(addr, service, timeout=2.0) == status
        except grpc.RpcError:
            return False

    wait_until(answered, f"health of {service!r} at {addr} to be {status}", timeout)


def free_port() -> int:
    """A port that was free a moment ago (for a flag that takes no 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    proc: subprocess.Popen[str]
    port: int  # the gRPC port it listens on
    output: list[str]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGTERM, as the kubelet sends it after the preStop hook; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=PATIENCE_S)


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> Iterator[Running]:
    """Start exactly ``argv`` with exactly ``env``; yield once it listens (the port
    read from the line it prints). Whatever is left of its session is killed after."""
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    listening = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "serving on" in line:
                listening.set()
        listening.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert listening.wait(PATIENCE_S), f"{argv} did not listen:\n{''.join(lines)[-4000:]}"
        m = next((re.search(r"serving on \S+:(\d+)", x) for x in list(lines) if "serving on" in x), None)
        assert m is not None, f"{argv} exited with {proc.wait(10)}:\n{''.join(lines)[-4000:]}"
        yield Running(proc, int(m.group(1)), lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        reader.join(timeout=10)
        if proc.stdout is not None and not reader.is_alive():
            proc.stdout.close()


def watch_serving(channel: grpc.Channel, service: str):
    """A health Watch of ``service``, read until it says SERVING. Under --workers each
    connection reaches one worker, which may still be loading when another is ready:
    the stream to follow is this one."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service), timeout=PATIENCE_S)
    for r in watch:
        if r.status == SERVING:
            return watch
    raise AssertionError(f"the Watch of {service!r} ended before SERVING")
