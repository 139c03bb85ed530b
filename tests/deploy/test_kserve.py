"""deploy/kserve: the ServingRuntime and the InferenceService load into the KServe
SDK's models with no unknown field, and say what scorewire serves.

The SDK pins protobuf and more than the test environment can take, so it lives in a
virtual environment of its own, which ``make test`` makes (``make kserve-sdk``); its
Python runs ``kserve_load.py``. (The runtime's container is run by
test_container_command.py.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes_validate
import yaml

from ..servers import ROOT
from .manifests import KSERVE, PATIENCE_S, Container, kubectl, kustomize, one
from .test_kubernetes import VERSIONS, settings_of

KSERVE_PYTHON = ROOT / ".venv" / "kserve" / "bin" / "python"
LOADER = Path(__file__).with_name("kserve_load.py")


def test_the_kserve_objects_load_into_the_sdk_with_no_unknown_field():
    assert KSERVE_PYTHON.is_file(), (
        f"{KSERVE_PYTHON} is missing: `make test` makes the KServe SDK's environment (`make kserve-sdk`)"
    )
    rendered = subprocess.run([kubectl(), "kustomize", str(KSERVE)], capture_output=True, text=True, check=True).stdout
    r = subprocess.run(
        [str(KSERVE_PYTHON), str(LOADER)], input=rendered, capture_output=True, text=True, timeout=PATIENCE_S
    )
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout)["objects"]
    assert sorted((o["kind"], o["class"]) for o in loaded) == [
        ("InferenceService", "V1beta1InferenceService"),
        ("ServingRuntime", "V1alpha1ServingRuntime"),
    ], loaded
    problems = [f"{o['kind']}/{o['name']}: {p}" for o in loaded for p in o["problems"]]
    assert not problems, "\n".join(problems)


def test_the_loader_does_refuse_an_unknown_field():
    """So that the test above cannot pass by accepting anything."""
    runtime = one(kustomize(KSERVE), "ServingRuntime")
    runtime["spec"]["supportedModelFormats"][0]["autoselect"] = True  # a typo of autoSelect
    r = subprocess.run(
        [str(KSERVE_PYTHON), str(LOADER)], input=yaml.safe_dump(runtime), capture_output=True, text=True,
        timeout=PATIENCE_S,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (loaded,) = json.loads(r.stdout)["objects"]
    assert loaded["problems"] == ["ServingRuntime.spec.supportedModelFormats[0].autoselect: unknown field of V1alpha1SupportedModelFormat"]


def test_the_runtime_serves_scorewire_onnx_and_pmml_over_grpc_v2_from_the_model_mount():
    objects = kustomize(KSERVE)
    runtime, service = one(objects, "ServingRuntime"), one(objects, "InferenceService")
    spec = runtime["spec"]
    formats = {f["name"]: f for f in spec["supportedModelFormats"]}
    assert set(formats) == {"scorewire", "onnx", "pmml"}
    assert formats["scorewire"]["autoSelect"] is True
    assert spec["protocolVersions"] == ["grpc-v2"]  # gRPC only: scorewire serves no REST
    container = Container.of(runtime)
    assert container.spec["name"] == "kserve-container"  # the name KServe merges an InferenceService into
    settings = settings_of(container)
    assert str(settings.repo) == "/mnt/models"  # where the storage initializer puts storageUri
    (port,) = container.spec["ports"]  # Knative allows one
    assert port["name"] == "h2c" and port["containerPort"] == settings.port  # h2c: HTTP/2 through Knative
    assert container.probe_service("readinessProbe") == ""
    assert container.probe_service("livenessProbe") == "liveness"
    assert int(spec["annotations"]["prometheus.kserve.io/port"]) == settings.metrics_port
    assert settings.workers * settings.n_threads == float(container.spec["resources"]["limits"]["cpu"])
    assert container.env["TMPDIR"] in container.mounts("emptyDir")
    assert container.spec["securityContext"]["readOnlyRootFilesystem"] is True
    # the container is a plain Kubernetes container: it validates as one, strictly
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": spec["containers"], "volumes": spec["volumes"]}}  # fmt: skip
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert model["resources"] == container.spec["resources"], "the runtime's env sizes the threads for these"
