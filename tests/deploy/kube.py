"""Rendering the chart and the kustomizations, validating their objects, and what a kubelet would run.

Shared by the deploy tests (and meant for the pod-level e2e test): ``render_chart`` goes through
Helm's Go library (``helm_python``), ``build_kustomization`` through ``kubectl kustomize``,
``validate`` against the Kubernetes 1.33 OpenAPI schemas in strict mode (unknown fields fail), and
``container_argv`` resolves a container's command the way the kubelet does: environment from
values and the downward API, then ``$(VAR)`` expansion in env values, command and args;
``indexed_job_pod`` gives the hostname and downward-API fields the Job controller sets on pod N.
"""

from __future__ import annotations

import multiprocessing
import re
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

__all__ = [
    "CHART_DIR",
    "HelmFailure",
    "K8S_DIR",
    "KUBERNETES_VERSION",
    "REPO_ROOT",
    "Rendered",
    "build_kustomization",
    "container_argv",
    "container_environment",
    "indexed_job_pod",
    "kubelet_expand",
    "pod_template",
    "render_chart",
    "validate",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "actiontrain"
K8S_DIR = REPO_ROOT / "k8s"
KUBERNETES_VERSION = "1.33"
"""The oldest Kubernetes the objects must be valid for (Job successPolicy is GA there)."""

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


@dataclass
class Rendered:
    """The objects a chart render produced, and its NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str

    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    def one(self, kind: str) -> dict[str, Any]:
        """The single object of ``kind``; fails when there is none or several."""
        found = [obj for obj in self.objects if obj["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, rendered {self.kinds()}"
        return found[0]

    def has(self, kind: str) -> bool:
        return any(obj["kind"] == kind for obj in self.objects)


class HelmFailure(Exception):
    """Helm refused the chart or its values: ``kind`` names helm_python's error class."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):
        return type(self), (self.kind, str(self))


# helm_python loads Helm's Go runtime into the process that imports it. A Go runtime in the test
# process took over SIGSEGV and crashed pytest at a later fork (the whole suite died with a bare
# "Segmentation fault"), so Helm lives in one spawned worker process and only results come back.
_HELM_WORKER: ProcessPoolExecutor | None = None


def _helm_worker() -> ProcessPoolExecutor:
    global _HELM_WORKER
    if _HELM_WORKER is None:
        _HELM_WORKER = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _HELM_WORKER


def _in_helm_worker(function: str, *args: Any, **kwargs: Any) -> Any:
    return _helm_worker().submit(_helm_call, function, *args, **kwargs).result()


_CHARTS: dict[Path, Any] = {}


def _helm_call(function: str, *args: Any, **kwargs: Any) -> Any:
    """Runs in the Helm worker: ``render`` or ``lint``; helm errors come back as :class:`HelmFailure`."""
    import helm_python as helm

    try:
        if function == "lint":
            return helm.lint(*args, **kwargs)
        chart_dir, values = args
        if chart_dir not in _CHARTS:
            _CHARTS[chart_dir] = helm.Chart.load(chart_dir)
        return dict(_CHARTS[chart_dir].render(values, **kwargs))
    except helm.HelmError as error:
        raise HelmFailure(type(error).__name__, str(error)) from None


def lint_chart(values: dict[str, Any], **options: Any) -> dict[str, Any]:
    """``helm lint`` of charts/actiontrain with ``values`` (options as helm_python's ``lint``)."""
    return _in_helm_worker("lint", CHART_DIR, values, **options)


def render_chart(values: dict[str, Any] | None = None, *, name: str = "demo", namespace: str = "ml") -> Rendered:
    """Renders charts/actiontrain offline with ``values`` (validated by its values.schema.json).

    Raises:
        HelmFailure: the values fail the schema (kind ``HelmValuesError``) or a template calls
            ``fail`` (kind ``HelmRenderError``).
    """
    manifests = _in_helm_worker("render", CHART_DIR, values or {}, name=name, namespace=namespace)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects.extend(obj for obj in yaml.safe_load_all(text) if obj)
    notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
    return Rendered(objects=objects, notes=notes)


def build_kustomization(path: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize PATH`` builds."""
    result = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {path} failed: {result.stderr}"
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


# Custom resources' metadata whose name must be a DNS-1035 label, as their webhooks check.
_DNS1035_NAMED_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}},
}

# The parts of the Kubeflow training operator's PyTorchJob (kubeflow.org/v1) the chart writes,
# from pkg/apis/kubeflow.org/v1 (pytorch_types.go, common_types.go). kubernetes-validate has no
# schema for custom resources; the pod template inside is checked as a core PodTemplate instead.
_PYTORCHJOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "PyTorchJob"},
        # PyTorchJob names must be DNS-1035 labels (ValidateV1PyTorchJob).
        "metadata": _DNS1035_NAMED_METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["pytorchReplicaSpecs"],
            "properties": {
                "elasticPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 1},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "rdzvBackend": {"enum": ["c10d", "etcd", "etcd-v2"]},
                        "rdzvPort": {"type": "integer"},
                        "rdzvHost": {"type": "string"},
                        "rdzvId": {"type": "string"},
                        "rdzvConf": {"type": "array"},
                        "standalone": {"type": "boolean"},
                        "nProcPerNode": {"type": "integer"},
                        "maxRestarts": {"type": "integer", "minimum": 0},
                        "metrics": {"type": "array"},
                    },
                },
                "runPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "cleanPodPolicy": {"enum": ["All", "Running", "None"]},
                        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                        "backoffLimit": {"type": "integer", "minimum": 0},
                        "schedulingPolicy": {"type": "object"},
                        "suspend": {"type": "boolean"},
                        "managedBy": {"type": "string"},
                    },
                },
                "nprocPerNode": {"type": "string"},
                "pytorchReplicaSpecs": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        kind: {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["template"],
                            "properties": {
                                "replicas": {"type": "integer", "minimum": 1},
                                "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
                                "template": {"type": "object"},
                            },
                        }
                        for kind in ("Master", "Worker")
                    },
                },
            },
        },
    },
}


# The parts of KServe's InferenceService (serving.kserve.io/v1beta1) the serving example writes, from
# pkg/apis/serving/v1beta1 (inference_service.go, predictor.go, component.go: PredictorSpec inlines a
# PodSpec and ComponentExtensionSpec; ModelSpec inlines a Container). kubernetes-validate has no schema
# for custom resources: this checks the structure, and the pod and container parts are validated as a
# core Pod below.
_PREDICTOR_EXTENSION_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
                               "timeout", "canaryTrafficPercent", "labels", "annotations", "deploymentStrategy",
                               "logger", "batcher"}
_PREDICTOR_POD_FIELDS = {"serviceAccountName", "securityContext", "nodeSelector", "tolerations", "affinity",
                         "imagePullSecrets", "volumes", "priorityClassName", "automountServiceAccountToken"}
_MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri", "storage"}
_MODEL_CONTAINER_FIELDS = {"name", "image", "args", "command", "env", "ports", "resources", "securityContext",
                           "volumeMounts", "readinessProbe", "livenessProbe"}
_INFERENCESERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        # Becomes a Service and host name: a DNS-1035 label (the webhook's validation).
        "metadata": _DNS1035_NAMED_METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["model"],
                    "properties": {
                        **{field: {} for field in _PREDICTOR_EXTENSION_FIELDS | _PREDICTOR_POD_FIELDS},
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "serviceAccountName": {"type": "string"},
                        "model": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["modelFormat"],
                            "properties": {
                                **{field: {} for field in _MODEL_CONTAINER_FIELDS},
                                "modelFormat": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                                },
                                "runtime": {"type": "string"},
                                "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
                                "storageUri": {"type": "string", "pattern": r"^(s3|gs|pvc|oci|https?|hdfs|webhdfs|hf)://"},
                                "storage": {"type": "object"},
                            },
                        },
                    },
                },
                "explainer": {"type": "object"},
                "transformer": {"type": "object"},
            },
        },
    },
}


def _validate_inference_service(obj: dict[str, Any], where: str) -> None:
    try:
        jsonschema.validate(obj, _INFERENCESERVICE_SCHEMA)
    except jsonschema.ValidationError as error:
        raise AssertionError(f"{where}: {'.'.join(map(str, error.path))}: {error.message}") from None
    predictor = obj["spec"]["predictor"]
    model = predictor["model"]
    # The predictor's pod fields and the model's container fields, as the pod KServe makes of them.
    container = {"name": "kserve-container", "image": "runtime-image"} | {
        key: value for key, value in model.items() if key in _MODEL_CONTAINER_FIELDS
    }
    pod_spec = {key: value for key, value in predictor.items() if key in _PREDICTOR_POD_FIELDS}
    validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": obj["metadata"]["name"]},
              "spec": {**pod_spec, "containers": [container]}})


def validate(obj: dict[str, Any]) -> None:
    """Validates one object against Kubernetes 1.33 in strict mode (unknown fields are errors).

    Custom resources are checked against the structure written above (PyTorchJob,
    InferenceService), their pod parts as core objects.

    Raises:
        AssertionError: naming the object, the path and what is wrong.
    """
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion") == "serving.kserve.io/v1beta1" and obj.get("kind") == "InferenceService":
        _validate_inference_service(obj, where)
        return
    if obj.get("apiVersion") == "kubeflow.org/v1" and obj.get("kind") == "PyTorchJob":
        try:
            jsonschema.validate(obj, _PYTORCHJOB_SCHEMA)
        except jsonschema.ValidationError as error:
            raise AssertionError(f"{where}: {'.'.join(map(str, error.path))}: {error.message}") from None
        for kind, spec in obj["spec"]["pytorchReplicaSpecs"].items():
            names = [container["name"] for container in spec["template"]["spec"]["containers"]]
            # The operator reads its port and exit codes from the container named "pytorch".
            assert "pytorch" in names, f"{where}: {kind} has no container named pytorch: {names}"
            validate(
                {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": kind.lower()},
                    "template": spec["template"],
                }
            )
        return
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise AssertionError(f"{where}: {'.'.join(map(str, error.path))}: {error.message}") from None


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a Job or of a PyTorchJob's workers."""
    if obj["kind"] == "Job":
        return obj["spec"]["template"]
    if obj["kind"] == "PyTorchJob":
        return obj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    raise AssertionError(f"{obj['kind']} has no pod template")


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` becomes ``$``, the rest stays."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, text)


def container_environment(
    container: dict[str, Any], *, fields: dict[str, str], secrets: dict[tuple[str, str], str] | None = None
) -> dict[str, str]:
    """The environment the kubelet gives ``container`` (its ``env`` only; the image's ENV aside).

    Args:
        container: The container spec.
        fields: Downward API values by fieldPath, e.g. ``{"metadata.namespace": "ml"}``.
        secrets: Secret values by (secret name, key); a referenced one that is missing fails.
    """
    env: dict[str, str] = {}
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            env[name] = kubelet_expand(variable["value"], env)
        elif "fieldRef" in variable["valueFrom"]:
            path = variable["valueFrom"]["fieldRef"]["fieldPath"]
            assert path in fields, f"{name} reads {path}; pass it in fields"
            env[name] = fields[path]
        elif "secretKeyRef" in variable["valueFrom"]:
            ref = variable["valueFrom"]["secretKeyRef"]
            key = (ref["name"], ref["key"])
            assert secrets is not None and key in secrets, f"{name} reads secret {key}; pass it in secrets"
            env[name] = secrets[key]
        else:
            raise AssertionError(f"{name}: unsupported valueFrom {variable['valueFrom']}")
    return env


def indexed_job_pod(job: dict[str, Any], index: int, *, uid: str, namespace: str) -> tuple[str, dict[str, str]]:
    """Pod ``index`` of an Indexed Job as the Job controller makes it: its hostname and downward-API fields.

    Args:
        job: The Job (``completionMode: Indexed``).
        index: The completion index.
        uid: The Job's UID, which the controller puts in every pod's controller-uid label.
        namespace: The namespace the Job runs in.

    Returns:
        The hostname ``<job>-<index>`` and the fields by fieldPath, for ``container_environment``.
    """
    assert job["spec"].get("completionMode") == "Indexed", "only Indexed Jobs give their pods an index"
    assert 0 <= index < job["spec"]["completions"], f"index {index} outside 0..{job['spec']['completions'] - 1}"
    fields = {
        "metadata.namespace": namespace,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']": str(index),
        "metadata.labels['batch.kubernetes.io/job-completion-index']": str(index),
        "metadata.labels['batch.kubernetes.io/controller-uid']": uid,
        "metadata.labels['batch.kubernetes.io/job-name']": job["metadata"]["name"],
    }
    return f"{job['metadata']['name']}-{index}", fields


def container_argv(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The container's command and args after the kubelet's ``$(VAR)`` expansion."""
    return [kubelet_expand(part, env) for part in [*container.get("command", []), *container.get("args", [])]]
