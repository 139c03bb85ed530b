"""The manifests' containers, run here: exactly the command line and environment of
each overlay's Deployment and of the KServe ServingRuntime, read from the rendered
objects. Only what a pod provides is replaced: the volumes' mount paths (the model
repository by the demo repository, each emptyDir by a fresh directory) and the
ports (a free one each). Then the probes' own health requests, and a SIGTERM."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import grpc
import pytest

import scorewire

from .manifests import (
    KSERVE,
    NOT_SERVING,
    OVERLAYS,
    PATIENCE_S,
    SERVING,
    Container,
    check,
    free_port,
    host_environ,
    kustomize,
    one,
    overlay,
    running,
    substitute,
    wait_status,
    watch_serving,
)
from .test_kubernetes import settings_of

#: where KServe's storage initializer puts the InferenceService's storageUri
KSERVE_MODEL_MOUNT = "/mnt/models"


def container_of(which: str) -> Container:
    if which == "kserve":
        return Container.of(one(kustomize(KSERVE), "ServingRuntime"))
    return Container.of(one(overlay(which), "Deployment"))


def pod_paths(container: Container, which: str, tmp_path: Path) -> dict[str, str]:
    """{path in the pod: path here}: the repository is the demo, each emptyDir is new
    (world-writable, as the kubelet makes it)."""
    paths = {}
    for mount in container.spec.get("volumeMounts", []):
        volume = container.volumes[mount["name"]]
        if "emptyDir" in volume:
            here = tmp_path / mount["name"]
            here.mkdir()
            here.chmod(0o777)
            paths[mount["mountPath"]] = str(here)
        elif "persistentVolumeClaim" in volume:
            paths[mount["mountPath"]] = str(scorewire.demo_repository())
        else:
            pytest.fail(f"a volume this test cannot stand in for: {volume}")
    if which == "kserve":
        paths[KSERVE_MODEL_MOUNT] = str(scorewire.demo_repository())
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("which", [*OVERLAYS, "kserve"])
def test_the_container_serves_and_answers_its_probes(which, tmp_path):
    """
    1. The container's command line and environment, with the pod's paths and ports
       replaced as above: the server listens.
    2. The readiness probe's request answers SERVING once the models are loaded, the
       liveness probe's SERVING; /metrics answers on the metrics port; with
       --workers, the supervisor's metrics directory is in the emptyDir (TMPDIR).
    3. SIGTERM: readiness turns NOT_SERVING and the server exits 0.
    """
    container = container_of(which)
    settings = settings_of(container)
    metrics_port = free_port()
    paths = pod_paths(container, which, tmp_path)
    argv, env = substitute(
        container.argv, container.env, {**paths, str(settings.port): "0", str(settings.metrics_port): str(metrics_port)}
    )
    assert argv != container.argv, "nothing was replaced: the test no longer follows the manifest"
    with running(argv, host_environ(env)) as server:
        readiness, liveness = container.probe_service("readinessProbe"), container.probe_service("livenessProbe")
        wait_status(server.addr, readiness, SERVING)
        assert check(server.addr, liveness) == SERVING
        assert f"repository {scorewire.demo_repository()}" in "".join(server.output)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
            assert "scorewire_model_state" in r.read().decode()
        temporary = Path(env["TMPDIR"])
        assert str(temporary).startswith(str(tmp_path)), "TMPDIR is not on a mounted volume"
        if settings.workers > 1:
            assert list(temporary.glob("scorewire-metrics-*")), "the supervisor's metrics directory is not in TMPDIR"
        with grpc.insecure_channel(server.addr) as channel:
            watch = watch_serving(channel, readiness)
            server.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            watch.cancel()
        assert server.proc.wait(timeout=PATIENCE_S) == 0, "".join(server.output)[-4000:]
    assert not list(Path(env["TMPDIR"]).glob("scorewire-metrics-*")), "the metrics directory outlived the server"
