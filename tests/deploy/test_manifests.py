"""Kubernetes and KServe manifests, validated offline and checked against the code they deploy."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from tests.deploy.container import ROOT

# The oldest Kubernetes we promise to run on; kubernetes-validate bundles its schemas (no network).
KUBERNETES_VERSION = "1.30.0"
KUBERNETES = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve"
SETTINGS = {f"TINYSERVE_{name.upper()}" for name in Settings.model_fields}


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _all(folder: Path) -> list[dict]:
    return [doc for path in sorted(folder.glob("*.yaml")) for doc in _docs(path)]


def _by_kind(kind: str) -> list[dict]:
    return [doc for doc in _all(KUBERNETES) + _all(KSERVE) if doc["kind"] == kind]


def _containers() -> list[dict]:
    """Every serving container: Deployment, custom-predictor InferenceService, ServingRuntime."""
    found = [c for d in _by_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]]
    found += [c for i in _by_kind("InferenceService") for c in i["spec"]["predictor"].get("containers", [])]
    found += [c for r in _by_kind("ServingRuntime") for c in r["spec"]["containers"]]
    return found


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_the_expected_resources_are_there():
    assert sorted(d["kind"] for d in _all(KUBERNETES)) == ["Deployment", "HorizontalPodAutoscaler",
                                                            "PodDisruptionBudget", "Service"]
    assert len(_by_kind("InferenceService")) == 2 and len(_by_kind("ServingRuntime")) == 1


@pytest.mark.parametrize("path", sorted(KUBERNETES.glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_validate_strictly(path):
    for doc in _docs(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_validation_is_not_a_rubber_stamp():
    deployment = copy.deepcopy(_by_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_deployment_is_production_shaped():
    deployment = _by_kind("Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert _env(container)["PYTHONDONTWRITEBYTECODE"] == "1"
    drain = float(_env(container).get("TINYSERVE_GRACEFUL_SHUTDOWN_SECONDS",
                                      Settings.model_fields["graceful_shutdown_seconds"].default))
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][1])  # new requests still come meanwhile
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep" and pause >= 3
    assert pause + drain < pod.get("terminationGracePeriodSeconds", 30), "pause and drain must end before SIGKILL"
    # A Service named like the settings' prefix would otherwise set TINYSERVE_PORT=tcp://...
    assert pod["enableServiceLinks"] is False
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    service = _by_kind("Service")[0]
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_hpa_scales_the_deployment_on_cpu():
    hpa = _by_kind("HorizontalPodAutoscaler")[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", _by_kind("Deployment")[0]["metadata"]["name"])
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Utilization is a share of the request: without a CPU request the HPA cannot act.
    assert _by_kind("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]


def test_replicas_are_the_hpas_and_a_disruption_takes_one_at_a_time():
    deployment, hpa = _by_kind("Deployment")[0], _by_kind("HorizontalPodAutoscaler")[0]
    assert "replicas" not in deployment["spec"]  # `kubectl apply` would reset what the HPA scaled to
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (pdb,) = _by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1 < hpa["spec"]["minReplicas"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"][0]["labelSelector"] == deployment["spec"]["selector"]


def test_tokens_come_from_an_optional_secret_and_startup_is_given_time():
    (container,) = _by_kind("Deployment")[0]["spec"]["template"]["spec"]["containers"]
    (tokens,) = [e for e in container["env"] if e["name"] == "TINYSERVE_API_TOKENS"]
    assert tokens["valueFrom"]["secretKeyRef"]["optional"] is True and "value" not in tokens
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == container["livenessProbe"]["httpGet"]["path"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # models load before the server listens
    assert "initialDelaySeconds" not in container["livenessProbe"]


def test_kserve_custom_predictor_has_what_kserve_needs():
    isvc = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc["metadata"]["name"]
    container = isvc["spec"]["predictor"]["containers"][0]
    assert container["name"] == "kserve-container" and container["image"]
    env = _env(container)
    # A custom predictor gives KServe its storageUri and protocol version as these two variables.
    assert env["STORAGE_URI"].split("://")[0] in {"gs", "s3", "pvc", "https", "hf", "oci"}
    assert env["PROTOCOL"] == "v2"
    assert env["TINYSERVE_MODEL_ROOT"] == "/mnt/models"
    assert [p["containerPort"] for p in container["ports"]] == [8080] == [int(env["TINYSERVE_PORT"])]
    assert env["TINYSERVE_HOST"] == "0.0.0.0"


def test_kserve_runtime_form_names_storage_uri_and_protocol_version():
    (runtime,) = _by_kind("ServingRuntime")
    (isvc,) = [i for i in _by_kind("InferenceService") if "model" in i["spec"]["predictor"]]
    model = isvc["spec"]["predictor"]["model"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["spec"]["protocolVersions"] == ["v2"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] == "v2" and "://" in model["storageUri"]
    container = runtime["spec"]["containers"][0]
    env = _env(container)
    assert container["image"] and env["TINYSERVE_MODEL_ROOT"] == "/mnt/models"
    assert [p["containerPort"] for p in container["ports"]] == [8080] == [int(env["TINYSERVE_PORT"])]


@pytest.mark.parametrize("container", _containers(), ids=lambda c: c["name"])
def test_container_env_names_are_settings(container):
    names = {name for name in _env(container) if name.startswith("TINYSERVE_")}
    assert names and names <= SETTINGS, f"not a Settings field: {sorted(names - SETTINGS)}"
    Settings(**{name.removeprefix("TINYSERVE_").lower(): value for name, value in _env(container).items()
                if name in SETTINGS})  # and each value parses


@pytest.mark.parametrize("container", _containers(), ids=lambda c: c["name"])
def test_container_ports_and_probes_match(container):
    port = int(_env(container).get("TINYSERVE_PORT", Settings.model_fields["port"].default))
    assert container["ports"][0]["containerPort"] == port
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in (port, container["ports"][0].get("name"))
        # Answered on the event loop that decodes requests: a busy worker takes longer than 1 s, the default.
        assert container[probe]["timeoutSeconds"] >= 5


def test_read_only_containers_mount_a_writable_tmp():
    # Several workers share their metrics through files in a temporary directory: without a
    # writable /tmp on a read-only root, raising TINYSERVE_WORKERS stops start-up.
    pods = [d["spec"]["template"]["spec"] for d in _by_kind("Deployment")]
    pods += [i["spec"]["predictor"] for i in _by_kind("InferenceService") if "containers" in i["spec"]["predictor"]]
    pods += [r["spec"] for r in _by_kind("ServingRuntime")]
    assert len(pods) == 3
    for pod in pods:
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            (volume,) = [v for v in pod.get("volumes", []) if v["name"] == mount["name"]]
            assert "emptyDir" in volume


def test_probe_paths_answer_200_in_the_app(monkeypatch):
    for key in [k for k in os.environ if k.startswith("TINYSERVE_")]:
        monkeypatch.delenv(key)  # a developer's settings must not change what the app serves
    paths = {c[p]["httpGet"]["path"] for c in _containers() for p in ("livenessProbe", "readinessProbe", "startupProbe")
             if p in c}
    app = create_app(Settings(model_root=ROOT / "models"))
    routes = set(app.openapi()["paths"])
    assert paths <= routes, f"no such route: {sorted(paths - routes)}"
    with TestClient(app) as client:
        for path in sorted(paths):
            assert client.get(path).status_code == 200, path
