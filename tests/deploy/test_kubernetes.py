"""deploy/kubernetes: every overlay renders, validates strictly against Kubernetes
1.28 to 1.37, and says what the server does (probes, ports, sizes, shutdown).

kubernetes-validate comes with the test extra (``make test`` installs it); kubectl
renders the kustomizations and needs no cluster.
"""

from __future__ import annotations

import argparse
import os
import textwrap

import kubernetes_validate
import pytest
from kubernetes_validate import utils

from scorewire.grpc.server import LIVENESS
from scorewire.settings import add_arguments, settings_from

from .manifests import (
    KUBERNETES,
    OVERLAYS,
    SERVICEMONITOR,
    Container,
    cpus,
    kustomize,
    one,
    overlay,
    seconds_of_sleep,
)

#: the Kubernetes releases the manifests must validate against
VERSIONS = [f"1.{minor}" for minor in range(28, 38)]

#: what the server needs beyond the drain delay and the grace period to exit: answering
#: what the batchers hold, the scoring threads, the metrics port, the span exporter
EXIT_MARGIN_S = 2


def settings_of(container: Container):
    """The server's settings for exactly this container's command line and environment."""
    argv = container.argv
    assert argv[:2] == ["scorewire", "serve"], argv
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(argv[2:]), container.env)


def test_the_overlays_are_there():
    assert {"small", "large"} <= set(OVERLAYS)


@pytest.mark.parametrize("name", OVERLAYS)
def test_an_overlay_renders_the_whole_fleet(name):
    objects = overlay(name)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("Deployment", "scorewire"),
        ("HorizontalPodAutoscaler", "scorewire"),
        ("PodDisruptionBudget", "scorewire"),
        ("Service", "scorewire"),
        ("Service", "scorewire-headless"),
    ]


def test_kubernetes_validate_knows_every_version():
    known = {utils.major_minor(v) for v in utils.all_versions()}
    assert set(VERSIONS) <= known, "upgrade kubernetes-validate (the test extra in pyproject.toml)"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_object_validates_strictly_on_every_version(name):
    """Strict: an unknown or misplaced field is an error, as the API server's field
    validation makes it."""
    failures = []
    for obj in overlay(name):
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                failures.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {err.message} at {list(err.path)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_probes_ask_the_health_entries_that_mean_what_they_probe(name):
    """Readiness asks "" (SERVING once loaded, NOT_SERVING from SIGTERM on); liveness
    and startup ask the liveness entry (SERVING from the bind to the exit), all on
    the port the server listens on."""
    container = Container.of(one(overlay(name), "Deployment"))
    settings = settings_of(container)
    assert container.probe_service("readinessProbe") == ""
    assert container.probe_service("livenessProbe") == LIVENESS
    assert container.probe_service("startupProbe") == LIVENESS
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container.spec[probe]["grpc"]["port"] == container.port("grpc") == settings.port, probe
    # a liveness probe gives a busy server time: several periods, each with a timeout,
    # and outlasts the grace period, in which the server refuses new calls, checks too
    liveness = container.spec["livenessProbe"]
    assert liveness.get("failureThreshold", 3) >= 3 and liveness.get("timeoutSeconds", 1) >= 2
    assert liveness.get("failureThreshold", 3) * liveness.get("periodSeconds", 10) > settings.shutdown_grace_s
    assert settings.host == "0.0.0.0"


@pytest.mark.parametrize("name", OVERLAYS)
def test_termination_grace_covers_prestop_drain_and_grace(name):
    """From the deletion the kubelet runs preStop, sends SIGTERM, and kills at
    terminationGracePeriodSeconds; the server needs its drain delay and grace period
    (its own defaults unless the manifest sets them) and a moment to exit."""
    deployment = one(overlay(name), "Deployment")
    container = Container.of(deployment)
    settings = settings_of(container)
    pre_stop = seconds_of_sleep(container.spec["lifecycle"]["preStop"]["exec"]["command"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop >= 1, "the endpoints' removal needs time to reach the balancers"
    assert grace >= pre_stop + settings.drain_delay_s + settings.shutdown_grace_s + EXIT_MARGIN_S, (
        f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain {settings.drain_delay_s}"
        f" + grace {settings.shutdown_grace_s} + {EXIT_MARGIN_S}"
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_workers_and_threads_come_from_the_cpu_limit(name):
    container = Container.of(one(overlay(name), "Deployment"))
    settings = settings_of(container)
    resources = container.spec["resources"]
    limit = cpus(resources["limits"]["cpu"])
    assert cpus(resources["requests"]["cpu"]) == limit, "requests = limits: a guaranteed CPU share"
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert settings.workers * settings.n_threads == limit, (settings.workers, settings.n_threads, limit)


def test_the_overlays_differ_in_size():
    sizes = {name: settings_of(Container.of(one(overlay(name), "Deployment"))).workers for name in OVERLAYS}
    assert sizes["small"] == 1 and sizes["large"] > 1


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_pod_runs_unprivileged_on_a_read_only_root(name):
    deployment = one(overlay(name), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = Container.of(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0 and pod["securityContext"]["runAsGroup"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container.spec["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_repository_is_a_read_only_volume_and_temporary_files_an_empty_dir(name):
    """The root file system is read-only: what the server writes (the --workers
    supervisor's metrics directory, under TMPDIR) must land on a writable volume."""
    container = Container.of(one(overlay(name), "Deployment"))
    settings = settings_of(container)
    mounts = {m["mountPath"]: m for m in container.spec["volumeMounts"]}
    assert settings.repo is not None and str(settings.repo) in mounts
    repo = mounts[str(settings.repo)]
    assert repo["readOnly"] is True and "persistentVolumeClaim" in container.volumes[repo["name"]]
    assert container.env["TMPDIR"] in container.mounts("emptyDir")


@pytest.mark.parametrize("name", OVERLAYS)
def test_services_reach_the_grpc_port_as_http2_and_select_the_pods(name):
    objects = overlay(name)
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = Container.of(deployment)
    cluster, headless = one(objects, "Service", "scorewire"), one(objects, "Service", "scorewire-headless")
    assert cluster["spec"].get("type", "ClusterIP") == "ClusterIP" and "clusterIP" not in cluster["spec"]
    assert headless["spec"]["clusterIP"] == "None"
    for service in (cluster, headless):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        (grpc_port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_port["appProtocol"] == "grpc" and grpc_port["targetPort"] == "grpc"
    container.port("grpc")  # the named target exists
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("name", OVERLAYS)
def test_autoscaler_disruption_budget_and_scrape_annotations(name):
    objects = overlay(name)
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scorewire"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    container = Container.of(deployment)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container.port("metrics") == settings_of(container).metrics_port


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_servicemonitor_component_scrapes_each_pod_once(name, tmp_path):
    """The ServiceMonitor (a CRD, so not in the base) composes with every overlay; the
    built-in objects still validate strictly; it selects one Service, whose metrics
    port leads to the container's."""
    (tmp_path / "kustomization.yaml").write_text(
        textwrap.dedent(f"""\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources:
              - {os.path.relpath(KUBERNETES / "overlays" / name, tmp_path)}
            components:
              - {os.path.relpath(SERVICEMONITOR, tmp_path)}
        """)
    )  # fmt: skip
    objects = kustomize(tmp_path)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    for obj in objects:
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = [
        s for s in objects
        if s["kind"] == "Service" and selector.items() <= s["metadata"]["labels"].items()
        and any(p["name"] == endpoint["port"] for p in s["spec"]["ports"])
    ]  # fmt: skip
    assert [s["metadata"]["name"] for s in scraped] == ["scorewire"], "one Service, or Prometheus scrapes a pod twice"
    (port,) = [p for p in scraped[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    container = Container.of(one(objects, "Deployment"))
    assert container.port(port["targetPort"]) == settings_of(container).metrics_port
    assert endpoint["path"] == "/metrics"
