"""The Kubernetes base in deploy/k8s: rendered with ``kubectl kustomize`` and
validated, document by document, against the Kubernetes 1.30 schemas in
strict mode (``kubernetes-validate``), then checked for what the schemas
cannot see: probes, the pod security settings, resources, secrets handling
and the services it runs.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.cli.processes import SERVICES
from services.kit.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
NAMESPACE = "refund-ledger"
CONFIG_MAP = "refund-ledger-config"
SECRET = "refund-ledger-secrets"
#: Environment variables that may only come from the Secret, by secretKeyRef.
SECRET_ENV = {"DATABASE_URL", "AUDIT_API_SECRET"}
SECRET_ENV_BY_SERVICE = {service: {"DATABASE_URL"} for service in SERVICES} | {
    "audit": {"DATABASE_URL", "AUDIT_API_SECRET"},
}
SECRET_LOOKING_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN(?!_TTL)|CREDENTIAL|PRIVATE|API_?KEY|DATABASE_URL", re.I)
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
COMMON_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of")


def render() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("the kubectl binary is not on PATH: cannot render deploy/k8s with `kubectl kustomize`")
    result = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"kubectl kustomize {BASE} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate_strict(doc: dict[str, Any]) -> str:
    """Validate one object against Kubernetes 1.30 in strict mode; an unknown kind fails."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    try:
        return kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as error:
        pytest.fail(f"{name}: no schema, so not validated ({error.message}); "
                    "custom resources need their own schema and test")
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        pytest.fail(f"{name}: invalid against Kubernetes {error.version} (strict): {path}: {error.message}")


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def deployments(docs) -> dict[str, dict[str, Any]]:
    """The Deployments by the SERVICE their command runs."""
    found: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            service = run_command_service(doc)
            assert service not in found, f"two Deployments run {service}"
            found[service] = doc
    return found


@pytest.fixture(scope="module")
def config(docs) -> dict[str, str]:
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == CONFIG_MAP]
    return config_map["data"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def run_command_service(deployment: dict[str, Any]) -> str:
    command = container(deployment).get("command", []) + container(deployment).get("args", [])
    name = deployment["metadata"]["name"]
    assert command[:2] == ["refund-ledger", "run"] and len(command) == 3, \
        f"{name}: command {command} is not `refund-ledger run SERVICE`"
    return command[2]


# --- schema validation -------------------------------------------------------------------------------


def test_every_rendered_document_is_valid_kubernetes_1_30_in_strict_mode(docs):
    assert docs, "kubectl kustomize rendered nothing"
    kinds = set()
    for doc in docs:
        assert validate_strict(doc) == KUBERNETES_VERSION
        kinds.add(doc["kind"])
    assert kinds == {"Namespace", "ConfigMap", "Deployment", "Service"}


def test_the_validator_is_really_strict_and_refuses_unknown_kinds(docs):
    """Guards the guard: a misspelt field and a kind without a schema must both fail."""
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    misspelt = yaml.safe_load(yaml.safe_dump(deployment))
    container(misspelt)["readinessProbes"] = container(misspelt).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    strimzi = {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic", "metadata": {"name": "t"}}
    with pytest.raises(pytest.fail.Exception, match="no schema"):
        validate_strict(strimzi)


# --- layout ------------------------------------------------------------------------------------------


def test_every_service_is_deployed_once_with_a_known_service_name(deployments):
    assert set(deployments) <= set(SERVICES), f"unknown services: {set(deployments) - set(SERVICES)}"
    assert set(deployments) == set(SERVICES), f"not deployed: {set(SERVICES) - set(deployments)}"


def test_everything_is_in_the_refund_ledger_namespace(docs):
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in namespaces] == [NAMESPACE]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_common_labels_everywhere_and_selectors_hold_only_stable_labels(docs, deployments):
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        for key in COMMON_LABELS:
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks label {key}"
        assert labels["app.kubernetes.io/part-of"] == "refund-ledger"
        if doc["kind"] != "Namespace":
            assert "app.kubernetes.io/component" in labels, doc["metadata"]["name"]
    for service, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        # Selectors are immutable: only name + component, never labels a kustomization adds.
        assert selector == {"app.kubernetes.io/name": "refund-ledger", "app.kubernetes.io/component": service}
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= template_labels.items()
        assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == service
        assert template_labels["app.kubernetes.io/part-of"] == "refund-ledger"


def test_the_image_is_the_kustomize_placeholder(deployments):
    for deployment in deployments.values():
        assert container(deployment)["image"] == "refund-ledger:latest"


# --- pods --------------------------------------------------------------------------------------------


def test_every_deployment_has_liveness_and_readiness_probes_on_a_named_port(deployments, config):
    settings = Settings.from_env(config)
    for service, deployment in deployments.items():
        main = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        if service == "audit":
            assert ports == {"http": settings.audit_api_port}
        else:
            assert ports == {"http-metrics": settings.web_port}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert probe in main, f"{service} has no {probe}"
            assert main[probe]["httpGet"]["path"] == path, f"{service} {probe}"
            assert main[probe]["httpGet"]["port"] in ports, f"{service} {probe} port is not a container port"


def test_every_deployment_runs_locked_down(deployments):
    for service, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        main = container(deployment)
        context = main["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True and context["runAsNonRoot"] is True, service
        assert context["runAsUser"] == 10001, service
        assert context["readOnlyRootFilesystem"] is True, service
        assert context["allowPrivilegeEscalation"] is False, service
        assert context["capabilities"] == {"drop": ["ALL"]}, service
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, service
        assert pod["automountServiceAccountToken"] is False, service
        assert pod["terminationGracePeriodSeconds"] == 30, service


def test_the_read_only_root_gets_writable_empty_dirs_for_data_and_tmp(deployments, config):
    assert config["DATA_DIR"] == "/var/lib/refund-ledger"
    for service, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        for path in (config["DATA_DIR"], "/tmp"):
            assert mounts.get(path) in empty_dirs, f"{service}: {path} is not an emptyDir mount"


def test_every_deployment_sets_requests_and_limits(deployments):
    for service, deployment in deployments.items():
        resources = container(deployment)["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{service} lacks {bound}"


# --- settings and secrets ----------------------------------------------------------------------------


def test_the_config_map_holds_only_settings_the_services_read(config):
    known = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', inspect.getsource(Settings.from_env)))
    assert set(config) <= known, f"settings no service reads: {set(config) - known}"
    assert not set(config) & SECRET_ENV
    settings = Settings.from_env(config)
    assert settings.kafka_profile == "cluster"
    assert settings.kafka_bootstrap_servers == "refund-ledger-kafka-bootstrap:9092"
    assert (settings.topic_partitions, settings.topic_replication) == (12, 3)
    assert settings.web_host == settings.audit_api_host == "0.0.0.0"
    assert settings.shutdown_grace < 30, "SHUTDOWN_GRACE must end before terminationGracePeriodSeconds"


def test_no_secret_is_defined_in_the_repository(docs, config):
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert not [s for s in secrets if s.get("data") or s.get("stringData")], "a Secret with values"
    assert not secrets, "refund-ledger-secrets is created outside the repository, only referenced"
    for key, value in config.items():
        assert not SECRET_LOOKING_NAME.search(key), f"ConfigMap key {key} looks secret"
        assert not CREDENTIALS_IN_URL.search(value), f"ConfigMap {key} holds credentials"


def test_secrets_reach_pods_only_by_secret_key_ref(deployments):
    for service, deployment in deployments.items():
        main = container(deployment)
        for source in main.get("envFrom", []):
            assert "secretRef" not in source, f"{service}: envFrom a Secret exposes every key"
            assert source["configMapRef"]["name"] == CONFIG_MAP
        from_secret = set()
        for env in main.get("env", []):
            name = env["name"]
            if "value" in env:
                assert not SECRET_LOOKING_NAME.search(name), f"{service}: {name} has a literal value"
                assert not CREDENTIALS_IN_URL.search(env["value"]), f"{service}: {name} holds credentials"
                continue
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert name in SECRET_ENV, f"{service}: {name} comes from a Secret but is not a secret setting"
                assert ref == {"name": SECRET, "key": name}, f"{service}: {name} -> {ref}"
                from_secret.add(name)
        assert from_secret == SECRET_ENV_BY_SERVICE[service], service


def test_the_audit_api_has_a_cluster_ip_service_on_its_pods(docs, deployments):
    services = [d for d in docs if d["kind"] == "Service"]
    assert [s["metadata"]["name"] for s in services] == ["refund-ledger-audit"]
    [service] = services
    audit = deployments["audit"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == audit["spec"]["selector"]["matchLabels"]
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container(audit)["ports"]}
