"""deploy/container/Containerfile: `make image` builds it with podman, and what it
builds runs the Deployment's container as a pod would.

No image registry is reached: the base is Debian's minimal bookworm with Python,
made by debootstrap from the mirror apt uses here (`make test` makes the tarball,
`make image-base`) and imported into podman storage of this checkout's own (under
.venv/image). Containers cannot be started on this machine (the runtime may not
set rlimits in its sandbox), so a test lays the image's file system out as a
runtime would (podman create + mount), then, in a mount namespace of its own, makes
the root read-only, mounts /proc, a minimal /dev and the pod's volumes, and runs
the command under chroot as the pod's user, on this host's network. Then the
Kubernetes probes' own health requests, the preStop hook, and a SIGTERM.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import scorewire

from ..servers import ROOT
from .manifests import (
    NOT_SERVING,
    OVERLAYS,
    PATIENCE_S,
    SERVING,
    Container,
    check,
    free_port,
    one,
    overlay,
    running,
    substitute,
    wait_status,
    watch_serving,
)
from .test_kubernetes import settings_of

IMAGE_DIR = ROOT / ".venv" / "image"
BASE_TAR = IMAGE_DIR / "bookworm-python3.tar"
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
#: podman storage of this checkout's own (absolute paths: podman records them)
STORAGE = ["--root", str(IMAGE_DIR / "storage"), "--runroot", str(IMAGE_DIR / "run")]
#: the device nodes a container runtime gives a container
DEVICES = ("null", "zero", "full", "random", "urandom")

pytestmark = pytest.mark.slow


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed: `make test` installs podman and debootstrap with apt-get"
    return path


def podman(*args: str, timeout: float = 600) -> str:
    r = subprocess.run([tool("podman"), *STORAGE, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"podman {' '.join(args)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout.strip()


def base_image() -> str:
    """The Debian base in this checkout's podman storage, imported from the tarball
    once (its tag names the tarball's digest, so a new tarball is imported anew)."""
    assert BASE_TAR.is_file(), f"{BASE_TAR} is missing: `make test` makes it with debootstrap (`make image-base`)"
    stat = BASE_TAR.stat()
    tag = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    ref = f"localhost/scorewire-base:bookworm-{tag}"
    if subprocess.run([tool("podman"), *STORAGE, "image", "exists", ref]).returncode != 0:
        podman("import", str(BASE_TAR), ref)
    return ref


@contextlib.contextmanager
def root_file_system(image: str) -> Iterator[Path]:
    """The image's file system as a runtime lays it out for a container (its own
    writable layer, where the runtime makes mount points); removed after."""
    container = podman("create", "--pull=never", "--entrypoint=/bin/true", image)  # never started
    try:
        yield Path(podman("mount", container))
    finally:
        podman("umount", container)
        podman("rm", "--force", container)


def python_version(root: Path) -> str:
    r = subprocess.run(
        [tool("chroot"), str(root), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@dataclass
class Image:
    ref: str
    config: dict  # the image's Config: Entrypoint, Env, User, ExposedPorts, ...

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config.get("Env", []))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    """`make image` from this checkout: wheels from the wheelhouse `make test` filled
    (no network), on the Debian base; the image named as the manifests name it."""
    deployment = Container.of(one(overlay("small"), "Deployment"))
    ref = deployment.spec["image"]
    assert ref == f"scorewire:{scorewire.__version__}", "the manifests name another version than the package's"
    base = base_image()
    with root_file_system(base) as root:
        version = python_version(root)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert version == here, f"the base runs Python {version}; the wheels are built here, for Python {here}"
    assert (WHEELHOUSE / ".stamp").is_file(), f"{WHEELHOUSE} is missing: `make test` fetches it"
    context = tmp_path_factory.mktemp("context")
    shutil.rmtree(context)
    r = subprocess.run(
        [
            "make", "-o", ".venv/.stamp-run", "image",
            f"IMAGE={ref}", f"IMAGE_FROM={base}", f"IMAGE_CONTEXT={context}",
            f"PODMAN={shlex.join([tool('podman'), *STORAGE])}",
            "PODMAN_BUILD_FLAGS=--isolation=chroot --pull=never",
            f"WHEEL_FLAGS=--no-index --find-links {WHEELHOUSE}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )  # fmt: skip
    assert r.returncode == 0, f"make image:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    podman("image", "prune", "--force")  # the install stage's layers
    (inspected,) = json.loads(podman("image", "inspect", ref))
    return Image(ref, inspected["Config"])


def in_pod(root: Path, argv: list[str], user: str, mounts: list[tuple[str, str, bool]]) -> list[str]:
    """A command line that runs ``argv`` in ``root`` as a runtime runs a container
    with a read-only root file system: a mount namespace of its own, the root bound
    read-only, /proc, a /dev with the usual devices, each (host path, mount path,
    read-only) of ``mounts``, then chroot as ``user``. The same process all the way
    (exec), so a signal to it reaches the server."""
    lines = [
        "set -e",
        'mount --bind "$ROOT" "$ROOT"',
        'mount -o remount,bind,ro "$ROOT"',
        'mount -t proc proc "$ROOT/proc"',
        'mount -t tmpfs -o mode=755 tmpfs "$ROOT/dev"',
    ]
    for device in DEVICES:
        lines += [f'touch "$ROOT/dev/{device}"', f'mount --bind /dev/{device} "$ROOT/dev/{device}"']
    for host, path, read_only in mounts:
        lines.append(f'mount --bind {shlex.quote(host)} "$ROOT"{shlex.quote(path)}')
        if read_only:
            lines.append(f'mount -o remount,bind,ro "$ROOT"{shlex.quote(path)}')
    lines.append(f'exec {tool("chroot")} --userspec={user} "$ROOT" "$@"')
    return [tool("unshare"), "--mount", "sh", "-c", "\n".join(lines), "sh", *argv]


def test_the_image_is_what_the_manifests_expect(image):
    """Entrypoint `scorewire serve --host 0.0.0.0`, the pods' numeric user, their
    ports exposed, no HEALTHCHECK (the orchestrator probes), the kernel inside."""
    deployment = one(overlay("small"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = Container.of(deployment)
    assert image.config["Entrypoint"] == ["scorewire", "serve", "--host", "0.0.0.0"]
    assert image.config["User"] == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert {f"{p['containerPort']}/tcp" for p in container.spec["ports"]} <= set(image.config["ExposedPorts"])
    assert "Healthcheck" not in image.config
    with root_file_system(image.ref) as root:
        site = next((root / "opt" / "scorewire" / "lib").glob("python3*/site-packages"))
        assert list((site / "scorewire" / "backends").glob("_kernel*.so")), "no compiled kernel in the image"
        assert not (root / "opt" / "scorewire" / "bin" / "pip").exists(), "pip stays out of the image"
        assert not (root / "wheels").exists()


def test_the_entrypoint_serves_the_demo_repository(image):
    """The image as `podman run IMAGE --port P` would run it: the bundled demo
    repository, the probes' requests answered."""
    container = Container.of(one(overlay("small"), "Deployment"))
    with root_file_system(image.ref) as root:
        argv = in_pod(root, [*image.config["Entrypoint"], "--port", "0"], image.config["User"], [])
        with running(argv, {**image.env, "ROOT": str(root)}) as server:
            wait_status(server.addr, container.probe_service("readinessProbe"), SERVING)
            assert check(server.addr, container.probe_service("livenessProbe")) == SERVING
            assert "/site-packages/scorewire/demo" in "".join(server.output)
            assert server.stop() == 0, "".join(server.output)[-4000:]


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_deployment_container_runs_in_the_image(name, image, tmp_path):
    """
    1. The Deployment's exact command line and environment (over the image's), its
       user, its volumes at their mount paths (the demo repository, read-only, for
       the claim; a fresh world-writable directory for each emptyDir) on a read-only
       root; only the ports are replaced by free ones.
    2. The readiness and liveness probes' requests answer SERVING; /metrics answers;
       with --workers, the supervisor's directory is on the emptyDir.
    3. The preStop hook runs in the image and exits 0, the server still SERVING; then
       SIGTERM: NOT_SERVING, and exit code 0.
    """
    deployment = one(overlay(name), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = Container.of(deployment)
    settings = settings_of(container)
    metrics_port = free_port()
    argv, env = substitute(container.argv, container.env, {str(settings.port): "0", str(settings.metrics_port): str(metrics_port)})
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    mounts, empty_dirs = [], {}
    for mount in container.spec["volumeMounts"]:
        volume = container.volumes[mount["name"]]
        if "emptyDir" in volume:
            here = tmp_path / mount["name"]
            here.mkdir()
            here.chmod(0o777)
            empty_dirs[mount["mountPath"]] = here
            mounts.append((str(here), mount["mountPath"], False))
        else:
            assert "persistentVolumeClaim" in volume, volume
            mounts.append((str(scorewire.demo_repository()), mount["mountPath"], bool(mount.get("readOnly"))))
    with root_file_system(image.ref) as root:
        for _, path, _ in mounts:  # the runtime makes the mount points
            (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        with running(in_pod(root, argv, user, mounts), {**image.env, **env, "ROOT": str(root)}) as server:
            readiness, liveness = container.probe_service("readinessProbe"), container.probe_service("livenessProbe")
            wait_status(server.addr, readiness, SERVING)
            assert check(server.addr, liveness) == SERVING
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
                assert "scorewire_model_state" in r.read().decode()
            if settings.workers > 1:
                assert list(empty_dirs[env["TMPDIR"]].glob("scorewire-metrics-*")), "no metrics directory on the emptyDir"
            pre_stop = container.spec["lifecycle"]["preStop"]["exec"]["command"]
            hook = subprocess.run(
                in_pod(root, pre_stop, user, []), env={**image.env, **env, "ROOT": str(root)},
                capture_output=True, text=True, timeout=PATIENCE_S,
            )  # fmt: skip
            assert hook.returncode == 0, hook.stderr
            assert check(server.addr, readiness) == SERVING
            with grpc.insecure_channel(server.addr) as channel:
                watch = watch_serving(channel, readiness)
                server.proc.send_signal(signal.SIGTERM)
                assert next(watch).status == NOT_SERVING
                watch.cancel()
            assert server.proc.wait(timeout=PATIENCE_S) == 0, "".join(server.output)[-4000:]
