"""The Kubernetes manifests in deploy/k8s: the kustomize base and the dev and prod overlays,
each rendered with ``kubectl kustomize`` and validated object by object, offline:

- built-in kinds against the Kubernetes 1.30 schemas in strict mode (``kubernetes-validate``);
- Strimzi and CloudNativePG resources against the JSON Schemas in deploy/k8s/crd-schemas;
- Prometheus Operator resources against the models of ``cloudcoil-models-prometheus-operator``,
  made strict (an unknown field fails);
- any other kind fails.

Then what no schema sees: probes, pod security, resources, secrets handling (only Secrets that
exist in the variant), the services it runs, the Kafka topics (= services/kit/topics.py
ALL_TOPICS), the ACLs of every KafkaUser (= the topics in the services' SPECs) and how each pod
logs in to Kafka (SASL_SSL as its KafkaUser with the cluster CA; PLAINTEXT in dev), the network
policies, the autoscalers and disruption budgets of prod, and the generated copies of the alert
rules and the dashboard.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

from services.audit.projections import FOLLOWED_TOPICS
from services.cli.processes import MALLOC_TUNING, SERVICES
from services.kit.runtime import create_faust_app
from services.kit.settings import Settings
from services.kit.topics import ALL_TOPICS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VARIANTS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
CRD_SCHEMAS = K8S / "crd-schemas"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "refund-ledger.json"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.30"
NAMESPACE = "refund-ledger"
CONFIG_MAP = "refund-ledger-config"
SECRET = "refund-ledger-secrets"
DATABASE_CLUSTER = "refund-ledger-db"
KAFKA_CLUSTER = "refund-ledger"
IMAGE = "refund-ledger"
KAFKA_CA_SECRET = f"{KAFKA_CLUSTER}-cluster-ca-cert"
#: Environment variables that may only come from a Secret, by secretKeyRef: variable -> (Secret, key);
#: ``{service}`` in a Secret name stands for the service the pod runs.
SECRET_ENV = {
    "DATABASE_URL": (f"{DATABASE_CLUSTER}-app", "uri"),   # written by CloudNativePG for the owner role
    "AUDIT_API_SECRET": (SECRET, "AUDIT_API_SECRET"),     # created outside the repository
    "KAFKA_SASL_PASSWORD": ("refund-ledger-{service}", "password"),  # written by Strimzi for its KafkaUser
    "CIPHER_KEY": (SECRET, "CIPHER_KEY"),                 # AES key of the stored events (prod)
    "BANK_SIGNING_KEYS": (SECRET, "BANK_SIGNING_KEYS"),   # the banks' signing keys (refunds verifies)
    "SMTP_PASSWORD": (SECRET, "SMTP_PASSWORD"),           # the notifier's channels
    "SMS_GATEWAY_TOKEN": (SECRET, "SMS_GATEWAY_TOKEN"),
    "WEBHOOK_SIGNING_KEY": (SECRET, "WEBHOOK_SIGNING_KEY"),
}
#: The services with an event store (encrypted in prod) and the one that verifies bank signatures.
EVENT_STORE_SERVICES = ("payments", "visas", "refunds", "notifier")
#: The services that get CIPHER_KEY: the event stores, and the audit read model (its IBANs, services/kit/pii.py).
CIPHER_KEY_SERVICES = (*EVENT_STORE_SERVICES, "audit")
#: The variables each service gets from Secrets in base and prod...
SECRET_ENV_BY_SERVICE = {service: {"DATABASE_URL", "KAFKA_SASL_PASSWORD"} for service in SERVICES} | {
    "audit": {"DATABASE_URL", "KAFKA_SASL_PASSWORD", "AUDIT_API_SECRET"},
}
SECRET_ENV_BY_SERVICE["refunds"] = SECRET_ENV_BY_SERVICE["refunds"] | {"BANK_SIGNING_KEYS"}
SECRET_ENV_BY_SERVICE["notifier"] = SECRET_ENV_BY_SERVICE["notifier"] | {"SMTP_PASSWORD", "SMS_GATEWAY_TOKEN",
                                                                          "WEBHOOK_SIGNING_KEY"}
for _service in CIPHER_KEY_SERVICES:
    SECRET_ENV_BY_SERVICE[_service] = SECRET_ENV_BY_SERVICE[_service] | {"CIPHER_KEY"}
#: ...except these, by variant: dev's Kafka has no authentication, so no KafkaUsers and no passwords.
SECRET_ENV_NOT_IN = {"dev": {"KAFKA_SASL_PASSWORD", "CIPHER_KEY"}, "base": {"CIPHER_KEY"}}  # encrypted in prod
#: Secrets no manifest here makes (deploy/k8s/README.md "Prerequisites"): name -> the keys they hold.
EXTERNAL_SECRETS = {SECRET: {"AUDIT_API_SECRET", "CIPHER_KEY", "BANK_SIGNING_KEYS", "SMTP_PASSWORD",
                              "SMS_GATEWAY_TOKEN", "WEBHOOK_SIGNING_KEY"}}
SECRET_LOOKING_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN(?!_TTL)|CREDENTIAL|PRIVATE|API_?KEY|DATABASE_URL", re.I)
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
COMMON_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of")
BUILTIN_KINDS = {"Namespace", "ConfigMap", "Deployment", "Service", "NetworkPolicy"}
CUSTOM_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster", "ServiceMonitor", "PrometheusRule"}
KINDS = {
    "base": BUILTIN_KINDS | CUSTOM_KINDS,
    "dev": BUILTIN_KINDS | CUSTOM_KINDS - {"KafkaUser"},
    "prod": BUILTIN_KINDS | CUSTOM_KINDS | {"HorizontalPodAutoscaler", "PodDisruptionBudget"},
}
#: Namespaces (by kubernetes.io/metadata.name) whose named pods may reach pods here, and why.
TRUSTED_NAMESPACES = {"monitoring": "Prometheus scrapes /metrics", "cnpg-system": "the CloudNativePG operator"}
#: Connections one replica may hold: psycopg pool 5 + overflow 5 (settings.postgres_env), asyncpg 10 (audit).
CONNECTIONS_PER_REPLICA = 10


# --- rendering and validation ------------------------------------------------------------------------


@functools.cache
def render(variant: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("the kubectl binary is not on PATH: cannot render deploy/k8s with `kubectl kustomize`")
    path = VARIANTS[variant]
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _strict(schema: Any) -> Any:
    """Forbid unknown fields in every object schema that lists its properties."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


@functools.cache
def custom_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator, for every custom resource kind the manifests may use."""
    validators = {}
    for path in sorted(CRD_SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
        validators[key] = jsonschema.Draft7Validator(schema)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        model = getattr(prometheus_operator, kind)
        schema = _strict(model.model_json_schema(by_alias=True, mode="validation"))
        validators[("monitoring.coreos.com/v1", kind)] = jsonschema.Draft202012Validator(schema)
    return validators


def validate(doc: dict[str, Any]) -> str:
    """Validate one object: built-in kinds against Kubernetes 1.30 (strict), custom resources
    against their schemas; a kind with neither fails."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    custom = custom_validators().get((doc.get("apiVersion"), doc.get("kind")))
    if custom is not None:
        errors = sorted(custom.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            details = "\n".join(f"  {'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:10])
            pytest.fail(f"{name}: invalid against its CRD schema:\n{details}")
        return "crd"
    try:
        return kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as error:
        pytest.fail(f"{name}: no schema, so not validated ({error.message}); "
                    "custom resources need a schema in deploy/k8s/crd-schemas")
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        pytest.fail(f"{name}: invalid against Kubernetes {error.version} (strict): {path}: {error.message}")


def of_kind(docs, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind: str, name: str) -> dict[str, Any]:
    [only] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return only


@pytest.fixture(params=list(VARIANTS), scope="module")
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def docs(variant) -> tuple[dict[str, Any], ...]:
    return render(variant)


@pytest.fixture(scope="module")
def deployments(docs) -> dict[str, dict[str, Any]]:
    """The Deployments by the SERVICE their command runs."""
    found: dict[str, dict[str, Any]] = {}
    for doc in of_kind(docs, "Deployment"):
        service = run_command_service(doc)
        assert service not in found, f"two Deployments run {service}"
        found[service] = doc
    return found


@pytest.fixture(scope="module")
def config(docs) -> dict[str, str]:
    return named(docs, "ConfigMap", CONFIG_MAP)["data"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def run_command_service(deployment: dict[str, Any]) -> str:
    command = container(deployment).get("command", []) + container(deployment).get("args", [])
    name = deployment["metadata"]["name"]
    assert command[:2] == ["refund-ledger", "run"] and len(command) == 3, \
        f"{name}: command {command} is not `refund-ledger run SERVICE`"
    return command[2]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches ``labels`` (an empty selector matches all)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# --- schema validation -------------------------------------------------------------------------------


def test_every_rendered_object_is_valid_against_its_schema(docs, variant):
    assert docs, "kubectl kustomize rendered nothing"
    kinds = set()
    for doc in docs:
        assert validate(doc) in {KUBERNETES_VERSION, "crd"}
        kinds.add(doc["kind"])
    assert kinds == KINDS[variant]


def test_the_validator_is_really_strict_and_refuses_unknown_kinds():
    """Guards the guard: a misspelt field, a wrong type and a kind without a schema must all fail."""
    docs = render("prod")
    deployment = of_kind(docs, "Deployment")[0]
    misspelt = yaml.safe_load(yaml.safe_dump(deployment))
    container(misspelt)["readinessProbes"] = container(misspelt).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(pytest.fail.Exception, match="no schema"):
        validate(unknown)

    def broken(kind: str, change) -> None:
        doc = yaml.safe_load(yaml.safe_dump(of_kind(docs, kind)[0]))
        change(doc)
        with pytest.raises(pytest.fail.Exception, match="CRD schema"):
            validate(doc)

    broken("KafkaTopic", lambda d: d["spec"].update(partition=12))
    broken("KafkaTopic", lambda d: d["metadata"]["labels"].pop("strimzi.io/cluster"))
    broken("KafkaUser", lambda d: d["spec"]["authorization"]["acls"][0].update(operations=["Reed"]))
    broken("Kafka", lambda d: d["spec"]["kafka"]["listeners"][0].update(type="internel"))
    broken("KafkaNodePool", lambda d: d["spec"].update(replica=3))
    broken("Cluster", lambda d: d["spec"]["postgresql"]["parameters"].update(max_connections=400))
    broken("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(intervall="30s"))
    broken("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(expression="up"))


def test_every_crd_schema_is_used():
    used = {(d["apiVersion"], d["kind"]) for variant in VARIANTS for d in render(variant)}
    for path in CRD_SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
        assert key in used, f"{path.name}: no rendered object uses it"


# --- layout ------------------------------------------------------------------------------------------


def test_every_service_is_deployed_once_with_a_known_service_name(deployments):
    assert set(deployments) <= set(SERVICES), f"unknown services: {set(deployments) - set(SERVICES)}"
    assert set(deployments) == set(SERVICES), f"not deployed: {set(SERVICES) - set(deployments)}"


def test_everything_is_in_the_refund_ledger_namespace(docs):
    namespaces = of_kind(docs, "Namespace")
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


def test_the_image_is_the_dockerfile_image_pinned_in_prod(deployments, variant):
    expected = {"base": f"{IMAGE}:latest", "dev": f"{IMAGE}:dev"}
    for service, deployment in deployments.items():
        image = container(deployment)["image"]
        repository = image.split("@")[0].rsplit(":", 1)[0]
        assert repository.endswith(IMAGE), f"{service}: {image} is not the refund-ledger image"
        if variant in expected:
            assert image == expected[variant], service
        else:
            assert not image.endswith(":latest") and re.search(r":\d+\.\d+\.\d+$|@sha256:[0-9a-f]{64}$", image), \
                f"{service}: prod runs {image}, not a release tag or digest"


def test_the_dockerfile_builds_that_image_pinned_and_non_root():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base, "the base image is one ARG, so CI can pin its digest"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1)), base.group(1)
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert len(stages) >= 2 and all(image == "${PYTHON_IMAGE}" for image, _ in stages), "multi-stage, one pinned base"
    runtime = text.split(f"FROM {stages[-1][0]} AS {stages[-1][1]}")[-1]
    assert re.search(r"^USER 10001(:10001)?$", runtime, re.M), "the image runs as UID 10001 (the pods' runAsUser)"
    assert re.search(r'^ENTRYPOINT \["refund-ledger"\]$', runtime, re.M)
    assert "pip install ." in text and "/opt/venv" in text
    for key, value in MALLOC_TUNING.items():  # the pods run with the malloc settings `up` gives its children
        assert re.search(rf"^\s+{key}={value}\b", runtime, re.M), f"{key}={value} in the runtime stage's ENV"
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ignored[0] == "*" and {"!services/", "!schemas/", "!pyproject.toml"} <= set(ignored)


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


def test_the_config_map_holds_only_settings_the_services_read(config, docs):
    known = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', inspect.getsource(Settings.from_env)))
    assert set(config) <= known, f"settings no service reads: {set(config) - known}"
    assert not set(config) & set(SECRET_ENV)
    settings = Settings.from_env(config)
    assert settings.kafka_profile == "cluster"
    assert settings.web_host == settings.audit_api_host == "0.0.0.0"
    assert settings.shutdown_grace < 30, "SHUTDOWN_GRACE must end before terminationGracePeriodSeconds"
    # The services reach the Kafka cluster of these manifests, on its one listener...
    kafka = named(docs, "Kafka", KAFKA_CLUSTER)
    [listener] = kafka["spec"]["kafka"]["listeners"]
    assert settings.kafka_bootstrap_servers == f"{KAFKA_CLUSTER}-kafka-bootstrap:{listener['port']}"
    # ...and declare topics as the KafkaTopics do (in case one is missing).
    topics = of_kind(docs, "KafkaTopic")
    assert {(t["spec"]["partitions"], t["spec"]["replicas"]) for t in topics} == \
        {(settings.topic_partitions, settings.topic_replication)}


def test_no_secret_is_defined_in_the_repository(docs, config):
    secrets = of_kind(docs, "Secret")
    assert not [s for s in secrets if s.get("data") or s.get("stringData")], "a Secret with values"
    assert not secrets, "Secrets come from CloudNativePG, Strimzi or outside the repository, only referenced"
    for key, value in config.items():
        assert not SECRET_LOOKING_NAME.search(key), f"ConfigMap key {key} looks secret"
        assert not CREDENTIALS_IN_URL.search(value), f"ConfigMap {key} holds credentials"


def test_secrets_reach_pods_only_by_secret_key_ref(deployments, docs, variant):
    assert named(docs, "Cluster", DATABASE_CLUSTER), "DATABASE_URL comes from this CloudNativePG cluster's Secret"
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
                secret, key = SECRET_ENV[name]
                assert (ref["name"], ref["key"]) == (secret.format(service=service), key), f"{service}: {name} -> {ref}"
                from_secret.add(name)
        assert from_secret == SECRET_ENV_BY_SERVICE[service] - SECRET_ENV_NOT_IN.get(variant, set()), service


def provided_secrets(docs) -> dict[str, set[str]]:
    """Every Secret a pod of these manifests may count on -> the keys it holds: the external ones
    and those the operators write for the objects rendered here."""
    provided = {name: set(keys) for name, keys in EXTERNAL_SECRETS.items()}
    for cluster in of_kind(docs, "Cluster"):  # CloudNativePG: the owner role of bootstrap.initdb
        assert "initdb" in cluster["spec"]["bootstrap"], "only initdb makes CloudNativePG write the -app Secret"
        provided[f"{cluster['metadata']['name']}-app"] = {"username", "password", "host", "port", "dbname", "uri",
                                                          "jdbc-uri", "pgpass"}
    for kafka in of_kind(docs, "Kafka"):      # Strimzi: the cluster CA, for every cluster (TLS or not)
        provided[f"{kafka['metadata']['name']}-cluster-ca-cert"] = {"ca.crt", "ca.p12", "ca.password"}
    for user in of_kind(docs, "KafkaUser"):   # Strimzi's User Operator: the SCRAM credentials
        assert user["spec"]["authentication"]["type"] == "scram-sha-512", user["metadata"]["name"]
        provided[user["metadata"]["name"]] = {"password", "sasl.jaas.config"}
    return provided


def secret_references(deployment: dict[str, Any]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(Secret, key or None for every key, the reference) for each way the pod uses a Secret."""
    pod = deployment["spec"]["template"]["spec"]
    found = [(s["name"], None, s) for s in pod.get("imagePullSecrets", [])]
    for main in pod["containers"] + pod.get("initContainers", []):
        for source in main.get("envFrom", []):
            if "secretRef" in source:
                found.append((source["secretRef"]["name"], None, source["secretRef"]))
        for env in main.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                found.append((ref["name"], ref["key"], ref))
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            sources = [{"name": volume["secret"]["secretName"], **volume["secret"]}]
        else:
            sources = [s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]
        for source in sources:
            keys = [item["key"] for item in source.get("items", [])] or [None]
            found.extend((source["name"], key, source) for key in keys)
    return found


def test_prod_requires_the_cipher_key_of_every_event_store(deployments, variant):
    for service in CIPHER_KEY_SERVICES:
        env = {e["name"]: e for e in container(deployments[service]).get("env", [])}
        required = env.get("CIPHER_REQUIRED", {}).get("value")
        assert (required == "true") == (variant == "prod"), f"{service} in {variant}: CIPHER_REQUIRED={required}"


def test_pods_reference_only_secrets_that_exist_and_never_optionally(deployments, docs, variant):
    """A pod of a variant uses only Secrets that variant has someone write (e.g. no KafkaUser
    Secret in dev, which has no KafkaUsers), and no reference is optional: a missing Secret keeps
    the pod from starting instead of starting it without credentials."""
    provided = provided_secrets(docs)
    for service, deployment in deployments.items():
        for secret, key, ref in secret_references(deployment):
            assert secret in provided, f"{service}: Secret {secret} is not made in {variant}"
            assert key is None or key in provided[secret], f"{service}: Secret {secret} has no key {key}"
            assert not ref.get("optional"), f"{service}: an optional reference to Secret {secret}"


# --- services and monitoring -------------------------------------------------------------------------


def test_every_service_has_a_service_on_its_pods_and_only_audit_a_routable_one(docs, deployments):
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    assert set(services) == {f"refund-ledger-{service}" for service in SERVICES}
    for service, deployment in deployments.items():
        spec = services[f"refund-ledger-{service}"]["spec"]
        assert spec["selector"] == deployment["spec"]["selector"]["matchLabels"], service
        [port] = spec["ports"]
        assert port["targetPort"] in {p["name"] for p in container(deployment)["ports"]}, service
        if service == "audit":
            assert spec["type"] == "ClusterIP" and spec.get("clusterIP") != "None"
        else:
            assert spec["clusterIP"] == "None", f"{service}: no traffic goes to a worker: headless, for metrics"


def test_a_service_monitor_scrapes_every_service_on_its_metrics_port(docs):
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    monitors = of_kind(docs, "ServiceMonitor")
    scraped = set()
    for monitor in monitors:
        matched = [s for s in services.values() if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert len(matched) == 1, f"{monitor['metadata']['name']} selects {[s['metadata']['name'] for s in matched]}"
        [service] = matched
        # The scrape job is named after the Service: alerts.yaml and the dashboard rely on it.
        assert "jobLabel" not in monitor["spec"]
        port_names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names and endpoint.get("path", "/metrics") == "/metrics"
        scraped.add(service["metadata"]["name"])
    assert scraped == set(services)
    jobs = set(re.findall(r'job="(refund-ledger-[a-z]+)"', ALERTS.read_text()))
    assert jobs == scraped, "the alerts name the scrape jobs the ServiceMonitors create"


def test_the_prometheus_rule_is_the_alert_rules_and_the_dashboard_is_provisioned(docs):
    [rule] = of_kind(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], \
        "run `.venv/bin/python deploy/sync_k8s.py`"
    [dashboard] = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert dashboard["data"] == {"refund-ledger.json": DASHBOARD.read_text()}, \
        "run `.venv/bin/python deploy/sync_k8s.py`"


# --- Kafka -------------------------------------------------------------------------------------------


def test_the_kafka_topics_are_exactly_all_topics(docs, variant):
    topics = of_kind(docs, "KafkaTopic")
    names = [t["spec"].get("topicName", t["metadata"]["name"]) for t in topics]
    assert sorted(names) == sorted(ALL_TOPICS), \
        f"missing {set(ALL_TOPICS) - set(names)}, extra {set(names) - set(ALL_TOPICS)}"
    expected = (12, 1, 1) if variant == "dev" else (12, 3, 2)
    for topic in topics:
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == KAFKA_CLUSTER
        spec = topic["spec"]
        actual = (spec["partitions"], spec["replicas"], int(spec["config"]["min.insync.replicas"]))
        assert actual == expected, f"{topic['metadata']['name']}: partitions, replicas, min ISR = {actual}"


def test_the_kafka_cluster_can_hold_its_topics(docs):
    kafka = named(docs, "Kafka", KAFKA_CLUSTER)
    pools = [p for p in of_kind(docs, "KafkaNodePool")
             if p["metadata"]["labels"]["strimzi.io/cluster"] == KAFKA_CLUSTER]
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert controllers % 2 == 1, "KRaft needs an odd number of controllers"
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    for topic in of_kind(docs, "KafkaTopic"):
        replicas, min_isr = topic["spec"]["replicas"], int(topic["spec"]["config"]["min.insync.replicas"])
        assert replicas <= brokers, f"{topic['metadata']['name']}: {replicas} replicas on {brokers} brokers"
        assert min_isr < replicas or replicas == 1, f"{topic['metadata']['name']}: one broker down stops writes"


@functools.cache
def service_topics() -> dict[str, tuple[set[str], set[str], str]]:
    """SERVICE -> (topics it reads, topics it writes, its consumer group), from the code."""
    found = {}
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(kafka_bootstrap_servers="kafka:9093", data_dir=data_dir)
        for service in SERVICES:
            if service == "audit":
                reads, writes = set(FOLLOWED_TOPICS), {"refund-decisions"}  # staff decisions (audit/service.py)
            else:
                spec = importlib.import_module(f"services.{service}.service").SPEC
                reads, writes = set(spec.inbound_topics), set(spec.outbound_topics)
            # The consumer group is the Faust app id.
            found[service] = (reads, writes, create_faust_app(service, settings).conf.id)
    return found


def test_the_audit_service_really_publishes_refund_decisions():
    source = inspect.getsource(importlib.import_module("services.audit.service"))
    assert 'Record("refund-decisions"' in source


def test_every_service_has_a_kafka_user_with_exactly_its_acls(docs, variant):
    kafka = named(docs, "Kafka", KAFKA_CLUSTER)
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    if "authorization" not in kafka["spec"]["kafka"]:
        assert variant == "dev", "only dev runs Kafka without authorization"
        assert not users, "KafkaUsers without authorization would give a false sense of ACLs"
        return
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    [listener] = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"
    assert set(users) == {f"refund-ledger-{service}" for service in SERVICES}
    topic_names = {t["spec"].get("topicName", t["metadata"]["name"]) for t in of_kind(docs, "KafkaTopic")}
    for service, (reads, writes, group) in service_topics().items():
        user = users[f"refund-ledger-{service}"]
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == KAFKA_CLUSTER
        assert user["spec"]["authentication"]["type"] == listener["authentication"]["type"]
        granted: dict[tuple[str, str], set[str]] = {}
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            assert resource.get("patternType", "literal") == "literal", f"{service}: no prefix or wildcard ACLs"
            assert acl.get("type", "allow") == "allow" and acl.get("host", "*") == "*"
            granted.setdefault((resource["type"], resource["name"]), set()).update(acl["operations"])
        expected = {("topic", t): {"Read"} for t in reads} | {("group", group): {"Read"}}
        for topic in writes:
            expected.setdefault(("topic", topic), set()).add("Write")
        assert granted == expected, f"{service}: ACLs differ from its SPEC\n granted  {granted}\n expected {expected}"
        assert {name for kind, name in granted if kind == "topic"} <= topic_names, service


def test_every_pod_connects_to_kafka_as_the_listener_requires(docs, deployments, config, variant):
    """base and prod: SASL_SSL as the service's KafkaUser (SCRAM-SHA-512, the password from the
    Secret Strimzi writes for it), trusting the cluster CA mounted read-only; dev: PLAINTEXT, with
    neither credentials nor CA."""
    [listener] = named(docs, "Kafka", KAFKA_CLUSTER)["spec"]["kafka"]["listeners"]
    authentication = listener.get("authentication", {}).get("type")
    assert authentication in {None, "scram-sha-512"}, f"the services cannot log in with {authentication}"
    protocol = ("SASL_" if authentication else "") + ("SSL" if listener["tls"] else "PLAINTEXT")
    assert protocol == ("PLAINTEXT" if variant == "dev" else "SASL_SSL")
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    for service, deployment in deployments.items():
        main, pod = container(deployment), deployment["spec"]["template"]["spec"]
        env = {e["name"]: e for e in main.get("env", [])}
        literals = {name: e["value"] for name, e in env.items() if "value" in e}
        from_secrets = {name: "{}" if name == "BANK_SIGNING_KEYS" else "from-a-secret"  # JSON, validated
                        for name, e in env.items() if "valueFrom" in e}
        settings = Settings.from_env(config | literals | from_secrets)
        assert settings.kafka_security_protocol == protocol, service
        password = env.get("KAFKA_SASL_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
        if authentication:
            user = f"refund-ledger-{service}"
            assert settings.kafka_sasl_username == user and user in users, f"{service}: logs in as its KafkaUser"
            assert settings.kafka_sasl_mechanism == authentication.upper() == "SCRAM-SHA-512", service
            assert password == {"name": user, "key": "password"}, f"{service}: KAFKA_SASL_PASSWORD -> {password}"
        else:
            assert not {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} & set(env), f"{service}: no SASL without it"
            assert not [key for key in config if key.startswith("KAFKA_SASL_")]
        ca_volumes = {v["name"]: v["secret"] for v in pod["volumes"]
                      if v.get("secret", {}).get("secretName") == KAFKA_CA_SECRET}
        ca_mounts = [m for m in main.get("volumeMounts", []) if m["name"] in ca_volumes]
        if listener["tls"]:
            [mount] = ca_mounts
            assert mount.get("readOnly") is True and "subPath" not in mount, f"{service}: the CA mount"
            files = {item["path"]: item["key"] for item in ca_volumes[mount["name"]].get("items", [])}
            cafile = Path(settings.kafka_ssl_cafile)
            assert cafile.parent == Path(mount["mountPath"]) and files == {cafile.name: "ca.crt"}, \
                f"{service}: KAFKA_SSL_CAFILE={cafile} is not the ca.crt of {KAFKA_CA_SECRET} alone"
        else:
            assert not ca_volumes and not ca_mounts, f"{service}: a CA for a listener without TLS"
            assert not settings.kafka_ssl_cafile, service


# --- PostgreSQL --------------------------------------------------------------------------------------


def test_the_database_cluster_is_sized_for_the_replicas(docs, deployments, variant):
    cluster = named(docs, "Cluster", DATABASE_CLUSTER)
    assert cluster["spec"]["instances"] == (1 if variant == "dev" else 3)
    max_connections = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    autoscalers = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")}
    replicas = 0
    for deployment in deployments.values():
        autoscaler = autoscalers.get(deployment["metadata"]["name"])
        replicas += autoscaler["spec"]["maxReplicas"] if autoscaler else deployment["spec"]["replicas"]
    assert replicas * CONNECTIONS_PER_REPLICA <= max_connections - 20, \
        f"{replicas} replicas may open {replicas * CONNECTIONS_PER_REPLICA} connections, " \
        f"max_connections={max_connections}"


# --- network -----------------------------------------------------------------------------------------


def _ingress_rules(docs, labels: dict[str, str]) -> tuple[bool, list[dict[str, Any]]]:
    """Whether some policy isolates pods with ``labels`` for ingress, and every rule that admits traffic."""
    isolated, rules = False, []
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        if "Ingress" in spec.get("policyTypes", ["Ingress"]) and selects(spec["podSelector"], labels):
            isolated = True
            rules.extend(spec.get("ingress", []))
    return isolated, rules


def _outside_peers(rule: dict[str, Any]) -> list[dict[str, Any] | None]:
    """The peers of a rule that lie outside the namespace (None: anyone, anywhere)."""
    if not rule.get("from"):
        return [None]
    return [peer for peer in rule["from"] if "namespaceSelector" in peer or "ipBlock" in peer]


def test_only_the_audit_service_accepts_traffic_from_outside_the_namespace(docs, deployments):
    for service, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        isolated, rules = _ingress_rules(docs, labels)
        assert isolated, f"{service}: no NetworkPolicy isolates its pods, so anything may connect"
        ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
        for rule in rules:
            rule_ports = {p["port"] for p in rule.get("ports", [])}
            assert rule_ports, f"{service}: a rule open on every port"
            assert rule_ports <= set(ports) | set(ports.values()), f"{service}: rule on ports it does not serve"
            for peer in _outside_peers(rule):
                if service == "audit":
                    continue
                assert peer is not None and "ipBlock" not in peer, f"{service}: reachable from anywhere: {rule}"
                namespace = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
                assert namespace == "monitoring" and peer.get("podSelector", {}).get("matchLabels"), \
                    f"{service}: reachable from outside the namespace: {peer}"
                assert rule_ports == {"http-metrics"}, f"{service}: Prometheus may reach more than /metrics"
    _, audit_rules = _ingress_rules(docs, deployments["audit"]["spec"]["template"]["metadata"]["labels"])
    assert any(None in _outside_peers(r) and {p["port"] for p in r["ports"]} == {"http"} for r in audit_rules), \
        "the audit API must be reachable from outside the namespace on its http port"


def test_the_backing_services_accept_only_this_namespace_and_their_operators(docs):
    kafka = named(docs, "Kafka", KAFKA_CLUSTER)
    for listener in kafka["spec"]["kafka"]["listeners"]:
        peers = listener.get("networkPolicyPeers")
        assert peers, f"listener {listener['name']}: Strimzi would allow every pod of the cluster"
        for peer in peers:
            assert set(peer) == {"podSelector"}, f"listener {listener['name']}: peers outside the namespace"
            assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "refund-ledger"}
    database_pods = {"cnpg.io/cluster": DATABASE_CLUSTER}
    isolated, rules = _ingress_rules(docs, database_pods)
    assert isolated, "no NetworkPolicy isolates the database pods"
    for rule in rules:
        for peer in _outside_peers(rule):
            assert peer is not None and "ipBlock" not in peer, f"database reachable from anywhere: {rule}"
            namespace = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
            assert namespace in TRUSTED_NAMESPACES and peer.get("podSelector", {}).get("matchLabels"), peer


# --- scaling -----------------------------------------------------------------------------------------


def test_prod_autoscales_and_protects_every_consuming_service(docs, deployments, variant):
    autoscalers = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")}
    budgets = of_kind(docs, "PodDisruptionBudget")
    if variant != "prod":
        assert not autoscalers and not budgets
        assert all(d["spec"]["replicas"] == 1 for d in deployments.values())
        return
    partitions = min(t["spec"]["partitions"] for t in of_kind(docs, "KafkaTopic"))
    assert len(autoscalers) == len(budgets) == len(deployments)
    for service, deployment in deployments.items():
        name = deployment["metadata"]["name"]
        autoscaler = autoscalers[name]["spec"]
        assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 2 <= autoscaler["minReplicas"] == deployment["spec"]["replicas"], \
            f"{service}: replicas must equal minReplicas (at least 2)"
        assert autoscaler["maxReplicas"] <= partitions, f"{service}: more consumers than partitions sit idle"
        assert autoscaler["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300, \
            f"{service}: every scale step rebalances the consumer group"
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        [budget] = [b for b in budgets if selects(b["spec"]["selector"], pod_labels)]
        assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert budget["spec"].get("maxUnavailable") == 1, service
        resources = container(deployment)["resources"]
        assert resources["requests"]["cpu"], f"{service}: the CPU autoscaler needs a CPU request"
