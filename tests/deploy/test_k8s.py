"""deploy/k8s against the program, without a cluster.

The kustomization is rendered by a small renderer here (only the fields the manifests use; any
other field fails the test rather than being silently ignored), each built-in object is
validated against the Kubernetes schemas, and the whole is cross-checked with the code: setting
names and values with `pipeline.settings`, commands with `pipeline.cli`, ports, probes, grace
periods, autoscaler bounds and selectors. When `kubectl` is installed, its `kustomize` must
render the same objects; without it that one extra check is skipped, never the others.

The HPA alternative (`deploy/k8s/hpa`, a kustomize Component) is rendered through a temporary
overlay of the base plus the Component, as a user would enable it.
"""

from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.settings import Settings, env_name, is_secret, load
from tests.conftest import ROOT

BASE = ROOT / "deploy" / "k8s"
HPA_COMPONENT = BASE / "hpa"

Obj = dict[str, Any]

K8S_VERSION = "1.30.0"
BUILTIN_KINDS = {
    "Namespace",
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "Job",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
}
KEDA_KINDS = {"ScaledObject"}
# Objects without a namespace; kustomize's namespace transformer leaves them alone.
CLUSTER_SCOPED = {"Namespace"}
# Kinds whose pod template (at spec.template) the renderer knows: labels, images.
WORKLOAD_KINDS = {"Deployment", "Job"}

KUSTOMIZE_API = {
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}
SUPPORTED_FIELDS = {
    "Kustomization": {
        "apiVersion", "kind", "namespace", "labels", "images", "resources", "components",
        "patches",
    },
    "Component": {"apiVersion", "kind", "namespace", "labels", "resources", "patches"},
}  # fmt: skip

# What each workload (by its app.kubernetes.io/component label) must run.
COMMAND_OF_COMPONENT = {"consumer": "run", "api": "api", "migrate": "migrate", "topics": "topics"}

# A Kubernetes quantity, as far as these manifests write them: 500m, 512Mi, 1Gi, 2.
QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?\Z")
QUANTITY_SCALE = {
    "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip

SETTING_ENV_NAMES = {env_name(f.name): f.name for f in dataclasses.fields(Settings)}


# -- the renderer ----------------------------------------------------------------------------


def read_kustomization(directory: Path, kind: str) -> Obj:
    """The kustomization of a directory; fails on a field this renderer does not implement."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(spec, dict), f"{directory}: kustomization.yaml is not a mapping"
    assert spec.get("kind") == kind, f"{directory}: expected kind {kind}, got {spec.get('kind')}"
    assert spec.get("apiVersion") == KUSTOMIZE_API[kind], f"{directory}: apiVersion"
    unsupported = set(spec) - SUPPORTED_FIELDS[kind]
    assert not unsupported, (
        f"{directory}/kustomization.yaml uses {sorted(unsupported)}, "
        "which tests/deploy/test_k8s.py does not render: teach the renderer first, "
        "so the checks see what kubectl applies"
    )
    return spec


def load_resource(directory: Path, entry: object) -> list[Obj]:
    assert isinstance(entry, str), f"{directory}: resource {entry!r}"
    assert "://" not in entry, f"{directory}: remote resources are not rendered: {entry}"
    path = (directory / entry).resolve()
    if path.is_dir():
        return render(path)
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs), f"{path}: a document is not a mapping"
    return docs


def render(directory: Path) -> list[Obj]:
    """Resources, then components (each transforms all so far), then our own transformers:
    the order kustomize uses."""
    spec = read_kustomization(directory, "Kustomization")
    objects = [
        obj for entry in spec.get("resources", []) for obj in load_resource(directory, entry)
    ]
    for entry in spec.get("components", []):
        component = (directory / entry).resolve()
        component_spec = read_kustomization(component, "Component")
        for resource in component_spec.get("resources", []):
            objects += load_resource(component, resource)
        objects = transform(objects, component_spec, component)
    return transform(objects, spec, directory)


def transform(objects: list[Obj], spec: Obj, directory: Path) -> list[Obj]:
    objects = [copy.deepcopy(obj) for obj in objects]
    for patch in spec.get("patches", []):
        objects = apply_delete_patch(objects, patch, directory)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    for entry in spec.get("labels", []):
        apply_labels(objects, entry, directory)
    for image in spec.get("images", []):
        apply_image(objects, image, directory)
    return objects


def apply_delete_patch(objects: list[Obj], patch: object, directory: Path) -> list[Obj]:
    """Only `$patch: delete` of one object, the one patch the manifests use."""
    assert isinstance(patch, dict), f"{directory}: patch {patch}"
    assert set(patch) == {"patch"}, f"{directory}: only inline `patch:` is rendered"
    body = yaml.safe_load(patch["patch"])
    assert body.get("$patch") == "delete", f"{directory}: only `$patch: delete` is rendered"
    target = (body["apiVersion"], body["kind"], body["metadata"]["name"])
    kept = [obj for obj in objects if identity(obj) != target]
    assert len(kept) == len(objects) - 1, f"{directory}: the delete patch matched no {target}"
    return kept


def identity(obj: Obj) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def apply_labels(objects: list[Obj], entry: object, directory: Path) -> None:
    assert isinstance(entry, dict), f"{directory}: labels entry {entry}"
    unknown = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
    assert not unknown, f"{directory}: labels fields {sorted(unknown)} are not rendered"
    # Selectors are immutable in a cluster; the renderer refuses to touch them at all.
    assert entry.get("includeSelectors", False) is False, f"{directory}: includeSelectors"
    pairs: dict[str, str] = entry["pairs"]
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates", False):
            template = pod_template(obj)
            if template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def pod_template(obj: Obj) -> Obj | None:
    if obj["kind"] in WORKLOAD_KINDS:
        template: Obj = obj["spec"]["template"]
        return template
    # A StatefulSet, CronJob... would need labels and images put where the renderer does not.
    spec = obj.get("spec", {})
    assert "template" not in spec, f"{obj['kind']}: a pod template the renderer does not know"
    assert "jobTemplate" not in spec, f"{obj['kind']}: a job template the renderer does not know"
    return None


def template_of(workload: Obj) -> Obj:
    template = pod_template(workload)
    assert template is not None, f"{workload['kind']} is not a workload"
    return template


def apply_image(objects: list[Obj], image: object, directory: Path) -> None:
    """`name` or `name:tag` becomes `newName:newTag`; each new part defaults to the old."""
    assert isinstance(image, dict), f"{directory}: images entry {image}"
    unknown = set(image) - {"name", "newName", "newTag"}
    assert not unknown, f"{directory}: images fields {sorted(unknown)} are not rendered"
    name: str = image["name"]
    for container in all_containers(objects):
        repository, _, tag = container["image"].partition(":")
        assert "@" not in container["image"], "digests are not rendered"
        if repository == name:
            tag = image.get("newTag", tag)
            container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")


# -- reading the rendering -------------------------------------------------------------------


def all_containers(objects: list[Obj]) -> Iterator[Obj]:
    for obj in objects:
        template = pod_template(obj)
        if template is not None:
            spec = template["spec"]
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Obj], kind: str) -> Obj:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} is referenced but not rendered"
    return found[0]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def secret_values(secret: Obj) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    return values


def container_env(container: Obj, objects: list[Obj]) -> dict[str, str]:
    """The environment a container starts with: envFrom sources, then env entries (which win)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) <= {"configMapRef", "secretRef"}, f"envFrom {source}"
        if "configMapRef" in source:
            env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(secret_values(named(objects, "Secret", source["secretRef"]["name"])))
    for entry in container.get("env", []):
        env[entry["name"]] = env_value(entry, objects)
    return env


def env_value(entry: Obj, objects: list[Obj]) -> str:
    if "value" in entry:
        return str(entry["value"])
    ref = entry["valueFrom"]
    if "secretKeyRef" in ref:
        key = ref["secretKeyRef"]
        return secret_values(named(objects, "Secret", key["name"]))[key["key"]]
    assert "configMapKeyRef" in ref, f"env {entry['name']}: only values and key refs are checked"
    key = ref["configMapKeyRef"]
    value: str = named(objects, "ConfigMap", key["name"])["data"][key["key"]]
    return value


def container_settings(container: Obj, objects: list[Obj]) -> Settings:
    """The settings `tailpipe` builds in this container (defaults for what is not set)."""
    return load(environ=container_env(container, objects))


def container_command(container: Obj) -> argparse.Namespace:
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:1] == ["tailpipe"], f"container {container['name']} runs {argv}, not tailpipe"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"container {container['name']}: `{' '.join(argv)}` does not parse")


def component(obj: Obj) -> str:
    label: str = obj["metadata"]["labels"]["app.kubernetes.io/component"]
    return label


def the_container(workload: Obj) -> Obj:
    containers = template_of(workload)["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    container: Obj = containers[0]
    return container


def by_command(objects: list[Obj], kind: str, command: str) -> Obj:
    found = [
        obj
        for obj in of_kind(objects, kind)
        if container_command(the_container(obj)).command == command
    ]
    assert len(found) == 1, f"expected one {kind} running `tailpipe {command}`, got {len(found)}"
    return found[0]


def partitions(objects: list[Obj]) -> int:
    """The events topic's partition count: the one place it is written is the topics Job."""
    job = by_command(objects, "Job", "topics")
    count: int = container_command(the_container(job)).partitions
    return count


def port_number(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert len(numbers) == 1, f"container {container['name']} has no port named {port}"
    number: int = numbers[0]
    return number


def quantity(raw: object) -> float:
    """The schemas accept any string here; the API server would not."""
    match = QUANTITY.match(str(raw))
    assert match, f"not a Kubernetes quantity: {raw!r}"
    return float(match[1]) * QUANTITY_SCALE[match[2] or ""]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = template_of(workload)["metadata"]["labels"]
    return labels


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hpa_overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An overlay as a user writes one to enable the HPA Component (paths must be relative)."""
    directory = tmp_path_factory.mktemp("hpa-overlay")
    spec = {
        "apiVersion": KUSTOMIZE_API["Kustomization"],
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, directory)],
        "components": [os.path.relpath(HPA_COMPONENT, directory)],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    return directory


@pytest.fixture(scope="module", params=["base", "hpa"])
def variant(request: pytest.FixtureRequest, hpa_overlay: Path) -> Path:
    return BASE if request.param == "base" else hpa_overlay


@pytest.fixture(scope="module")
def objects(variant: Path) -> list[Obj]:
    return render(variant)


@pytest.fixture(scope="module")
def consumer(objects: list[Obj]) -> Obj:
    return by_command(objects, "Deployment", "run")


@pytest.fixture(scope="module")
def consumer_settings(consumer: Obj, objects: list[Obj]) -> Settings:
    return container_settings(the_container(consumer), objects)


# -- rendering -------------------------------------------------------------------------------


def test_rendering_has_unique_known_objects(objects: list[Obj]) -> None:
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects: {sorted(keys)}"
    # A kind nobody checks would slip past every test below.
    unknown = {o["kind"] for o in objects} - BUILTIN_KINDS - KEDA_KINDS
    assert not unknown, f"kinds this test does not check: {sorted(unknown)}"


def test_exactly_one_autoscaler(variant: Path, objects: list[Obj]) -> None:
    """KEDA in the base, the HPA with its Component: two on one Deployment would fight."""
    kinds = sorted(
        o["kind"] for o in objects if o["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}
    )
    assert kinds == (["ScaledObject"] if variant == BASE else ["HorizontalPodAutoscaler"])


def test_namespace_labels_and_images(objects: list[Obj]) -> None:
    namespace = one(objects, "Namespace")["metadata"]["name"]
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == namespace, where
        assert obj["metadata"]["labels"].get("app.kubernetes.io/part-of") == "tailpipe", where
    for workload in workloads(objects):
        assert pod_labels(workload).get("app.kubernetes.io/part-of") == "tailpipe"
    # The images transformer must have mapped every container to a registry image and tag.
    for container in all_containers(objects):
        assert container["image"] == "ghcr.io/tailpipe/tailpipe:0.1.0", container["name"]


def test_kubectl_kustomize_agrees(variant: Path, objects: list[Obj]) -> None:
    """Extra, when kubectl is installed: the real kustomize renders what the checks saw."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the renderer's output is checked alone")
    done = subprocess.run(
        [kubectl, "kustomize", str(variant)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {variant}: {done.stderr}"
    theirs = [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]

    def kind_names(docs: list[Obj]) -> set[tuple[str, str]]:
        return {(doc["kind"], doc["metadata"]["name"]) for doc in docs}

    assert kind_names(theirs) == kind_names(objects)

    def keyed(docs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
        return {
            (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs
        }

    # Whole objects too: every check here ran on what kubectl would apply.
    mine = keyed(objects)
    for key, obj in keyed(theirs).items():
        assert mine.get(key) == obj, f"{key}: kubectl kustomize renders it differently"


# -- schemas ---------------------------------------------------------------------------------


def test_builtin_objects_are_valid(objects: list[Obj]) -> None:
    assert K8S_VERSION in kubernetes_validate.utils.all_versions()
    for obj in objects:
        if obj["kind"] in BUILTIN_KINDS:
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_scaled_object_shape(objects: list[Obj]) -> None:
    """No schema for KEDA here: check the fields its kafka scaler reads."""
    for scaled in of_kind(objects, "ScaledObject"):
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        # KEDA trigger metadata is a map of strings.
        assert all(isinstance(v, str) for v in meta.values()), meta
        assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(meta)
        assert meta["lagThreshold"].isdigit()
        assert int(meta["lagThreshold"]) > 0
        # The consumer starts a partition without an offset at the earliest message too.
        assert meta["offsetResetPolicy"] == "earliest"
        assert meta["allowIdleConsumers"] == "false"


# -- against the code ------------------------------------------------------------------------


def test_env_names_are_settings(objects: list[Obj]) -> None:
    names = set(one(objects, "ConfigMap")["data"]) | set(secret_values(one(objects, "Secret")))
    for container in all_containers(objects):
        names |= {entry["name"] for entry in container.get("env", [])}
    unknown = {n for n in names if n.startswith("TAILPIPE_")} - set(SETTING_ENV_NAMES)
    assert not unknown, f"not settings of pipeline/settings.py: {sorted(unknown)}"


def test_secrets_only_in_the_secret(objects: list[Obj]) -> None:
    in_config = set(one(objects, "ConfigMap")["data"])
    in_secret = set(secret_values(one(objects, "Secret")))
    # Both hold settings and nothing else.
    unknown = (in_config | in_secret) - set(SETTING_ENV_NAMES)
    assert not unknown, f"not settings: {sorted(unknown)}"
    leaked = {n for n in in_config if is_secret(SETTING_ENV_NAMES[n])}
    assert not leaked, f"secret settings in the ConfigMap: {sorted(leaked)}"
    misplaced = {n for n in in_secret if not is_secret(SETTING_ENV_NAMES[n])}
    assert not misplaced, f"plain settings in the Secret: {sorted(misplaced)}"


def test_settings_load(objects: list[Obj]) -> None:
    """Every value parses; each container's whole environment builds its Settings."""
    environ = {**one(objects, "ConfigMap")["data"], **secret_values(one(objects, "Secret"))}
    load(environ=environ)
    for container in all_containers(objects):
        container_settings(container, objects)


def test_commands_parse(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        args = container_command(the_container(workload))
        assert args.command == COMMAND_OF_COMPONENT[component(workload)], workload["metadata"]


def test_probes(objects: list[Obj]) -> None:
    """Liveness on /healthz only (a PostgreSQL outage must not restart pods), readiness on
    /readyz, both on the port the process listens on."""
    for deployment in of_kind(objects, "Deployment"):
        container = the_container(deployment)
        settings = container_settings(container, objects)
        command = container_command(container).command
        port = {"run": settings.metrics_port, "api": settings.api_port}[command]
        live, ready = container["livenessProbe"], container["readinessProbe"]
        assert live["httpGet"]["path"] == "/healthz"
        assert ready["httpGet"]["path"] == "/readyz"
        assert port_number(container, live["httpGet"]["port"]) == port
        assert port_number(container, ready["httpGet"]["port"]) == port
        # A loop busy with a large batch answers late: allow it most of a minute.
        assert live.get("periodSeconds", 10) * live.get("failureThreshold", 3) >= 30


def test_consumer_pod(consumer: Obj, consumer_settings: Settings) -> None:
    pod = template_of(consumer)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(consumer_settings.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    # The replica flushes for up to the grace on SIGTERM; the kubelet must not kill it sooner.
    assert pod["spec"]["terminationGracePeriodSeconds"] > consumer_settings.shutdown_grace
    # A surge pod would only cause one more rebalance.
    assert consumer["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}


def test_first_phase_of_the_readme(objects: list[Obj]) -> None:
    """deploy/k8s/README.md applies `-l 'app.kubernetes.io/component notin (consumer,api)'`
    first: it must pick the configuration and the Jobs, and no consumer or API object."""
    first = [
        o
        for o in objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component") not in {"consumer", "api"}
    ]
    assert {o["kind"] for o in first} == {"Namespace", "ConfigMap", "Secret", "Job"}
    assert {component(job) for job in of_kind(objects, "Job")} == {"migrate", "topics"}


def test_jobs_are_bounded(objects: list[Obj]) -> None:
    """Retries end, and finished Jobs go away (a Job's template is immutable: the next
    release's apply needs the old one gone)."""
    for job in of_kind(objects, "Job"):
        assert 0 < job["spec"]["backoffLimit"] <= 10
        assert job["spec"]["ttlSecondsAfterFinished"] > 0
        assert job["spec"]["activeDeadlineSeconds"] > 0
        assert template_of(job)["spec"]["restartPolicy"] == "Never"


def test_autoscalers_within_partitions(objects: list[Obj], consumer: Obj) -> None:
    count = partitions(objects)
    # The autoscaler owns the count; a fixed one would be reset by every apply.
    assert "replicas" not in consumer["spec"]
    for scaled in of_kind(objects, "ScaledObject"):
        assert scaled["spec"]["maxReplicaCount"] <= count, "replicas past the partitions idle"
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["maxReplicas"] <= count, "replicas past the partitions idle"


def test_keda_trigger_matches_config(objects: list[Obj], consumer_settings: Settings) -> None:
    for scaled in of_kind(objects, "ScaledObject"):
        meta = scaled["spec"]["triggers"][0]["metadata"]
        assert meta["topic"] == consumer_settings.topic
        assert meta["consumerGroup"] == consumer_settings.group
        assert meta["bootstrapServers"] == consumer_settings.kafka_bootstrap


def test_autoscalers_and_pdb_target_the_consumer(objects: list[Obj], consumer: Obj) -> None:
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": consumer["metadata"]["name"]}
    for scaler in of_kind(objects, "ScaledObject") + of_kind(objects, "HorizontalPodAutoscaler"):
        assert scaler["spec"]["scaleTargetRef"] == target
    pdb = one(objects, "PodDisruptionBudget")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selects(selector, pod_labels(consumer))
    others = [w for w in workloads(objects) if w is not consumer]
    assert not any(selects(selector, pod_labels(w)) for w in others), "the PDB selects others"


def test_selectors_and_service(objects: list[Obj]) -> None:
    for deployment in of_kind(objects, "Deployment"):
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    api = by_command(objects, "Deployment", "api")
    service = one(objects, "Service")
    picked = [w for w in workloads(objects) if selects(service["spec"]["selector"], pod_labels(w))]
    assert picked == [api], "the Service must select the API pods only"
    container = the_container(api)
    api_port = container_settings(container, objects).api_port
    for port in service["spec"]["ports"]:
        assert port_number(container, port["targetPort"]) == api_port


def test_pods_run_locked_down(objects: list[Obj]) -> None:
    """Non-root (uid 10001), read-only root, no capabilities: the restricted Pod Security
    Standard the namespace enforces."""
    for workload in workloads(objects):
        spec = template_of(workload)["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == 10001, "the image's user"
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        scratch = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security.get("runAsUser", 10001) != 0
            # With the root read-only, /tmp is the one writable place; it must be scratch.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in scratch, f"{container['name']}: /tmp is not an emptyDir"


def test_resources(objects: list[Obj]) -> None:
    """Requests to schedule by, a memory limit at or above them, and no CPU limit (throttling
    a replica only stretches its flushes)."""
    for container in all_containers(objects):
        requests = container["resources"]["requests"]
        limits = container["resources"]["limits"]
        assert set(requests) == {"cpu", "memory"}, container["name"]
        assert set(limits) == {"memory"}, container["name"]
        assert quantity(requests["cpu"]) > 0
        assert quantity(limits["memory"]) >= quantity(requests["memory"]) > 0


def _meta(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def test_prometheus_kubernetes_job_keeps_exactly_the_consumer_pods(objects: list[Obj]) -> None:
    """deploy/prometheus/prometheus-kubernetes.yml's relabelling, applied as Prometheus would
    to the discovery labels of each rendered pod: the consumers are kept, at their metrics
    port and path; nothing else is."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-kubernetes.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "tailpipe"]
    [sd] = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    kept = {}
    for workload in workloads(objects):
        template = template_of(workload)
        labels = {
            "__address__": "10.0.0.7",
            "__metrics_path__": "/metrics",
            "__meta_kubernetes_namespace": workload["metadata"]["namespace"],
            "__meta_kubernetes_pod_name": f"{workload['metadata']['name']}-x",
        }
        for key, value in template["metadata"].get("labels", {}).items():
            labels[f"__meta_kubernetes_pod_label_{_meta(key)}"] = value
        for key, value in template["metadata"].get("annotations", {}).items():
            labels[f"__meta_kubernetes_pod_annotation_{_meta(key)}"] = value
        if labels["__meta_kubernetes_namespace"] not in sd["namespaces"]["names"]:
            continue
        if (target := _relabel(job["relabel_configs"], labels)) is not None:
            kept[component(workload)] = target
    port = consumer_settings_of(objects).metrics_port
    assert kept == {"consumer": ("10.0.0.7:" + str(port), "/metrics")}


def _relabel(steps: list[Obj], labels: dict[str, str]) -> tuple[str, str] | None:
    """keep and replace, the two actions the job uses; None when a keep drops the target."""
    for step in steps:
        value = ";".join(labels.get(s, "") for s in step["source_labels"])
        match = re.fullmatch(step.get("regex", "(.*)"), value)
        action = step.get("action", "replace")
        if action == "keep":
            if match is None:
                return None
        elif action == "replace":
            if match is not None:
                replacement = step.get("replacement", "$1")
                labels[step["target_label"]] = re.sub(r"\$(\d)", r"\\\1", replacement)
                labels[step["target_label"]] = match.expand(labels[step["target_label"]])
        else:
            raise AssertionError(f"relabel action {action} not modelled")
    return labels["__address__"], labels["__metrics_path__"]


def consumer_settings_of(objects: list[Obj]) -> Settings:
    workload = by_command(objects, "Deployment", "run")
    return container_settings(the_container(workload), objects)


def test_prometheus_kubernetes_jobs_keep_each_component_at_its_metrics_port(
    objects: list[Obj],
) -> None:
    """One job per process: the API pods as tailpipe-api, at the API's port (its /metrics
    needs no token), and nothing else; collector pods (none in the base) as tailpipe-collect."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-kubernetes.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    api = by_command(objects, "Deployment", "api")
    api_port = container_settings(the_container(api), objects).api_port
    assert port_number(the_container(api), "http") == api_port
    wanted = {
        "tailpipe": {"consumer": ("10.0.0.7:" + str(consumer_settings_of(objects).metrics_port),
                                  "/metrics")},
        "tailpipe-api": {"api": (f"10.0.0.7:{api_port}", "/metrics")},
        "tailpipe-collect": {},
    }  # fmt: skip
    for name, kept in wanted.items():
        assert _kept(jobs[name], objects) == kept, name
    # A collector Deployment labelled and annotated as the others would be kept by its job.
    collector = copy.deepcopy(api)
    template_of(collector)["metadata"]["labels"]["app.kubernetes.io/component"] = "collector"
    template_of(collector)["metadata"]["annotations"]["prometheus.io/port"] = "8081"
    collector["metadata"]["labels"]["app.kubernetes.io/component"] = "collector"
    assert _kept(jobs["tailpipe-collect"], [collector]) == {
        "collector": ("10.0.0.7:8081", "/metrics")
    }


def _kept(job: Obj, objects: list[Obj]) -> dict[str, tuple[str, str]]:
    """The workloads whose pods the job scrapes, with the address and path it scrapes."""
    [sd] = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    kept = {}
    for workload in workloads(objects):
        template = template_of(workload)
        labels = {
            "__address__": "10.0.0.7",
            "__metrics_path__": "/metrics",
            "__meta_kubernetes_namespace": workload["metadata"].get("namespace", "tailpipe"),
            "__meta_kubernetes_pod_name": f"{workload['metadata']['name']}-x",
        }
        for key, value in template["metadata"].get("labels", {}).items():
            labels[f"__meta_kubernetes_pod_label_{_meta(key)}"] = value
        for key, value in template["metadata"].get("annotations", {}).items():
            labels[f"__meta_kubernetes_pod_annotation_{_meta(key)}"] = value
        if labels["__meta_kubernetes_namespace"] not in sd["namespaces"]["names"]:
            continue
        if (target := _relabel(job["relabel_configs"], labels)) is not None:
            kept[component(workload)] = target
    return kept
