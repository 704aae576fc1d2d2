"""k8s/: the kustomize base and overlays build, validate for Kubernetes 1.33 and run the chart's command."""

from __future__ import annotations

import pytest
import yaml
from kube import (
    K8S_DIR,
    build_kustomization,
    container_argv,
    container_environment,
    pod_template,
    render_chart,
    validate,
)

from actiontrain.distributed import SHARED_STORE_SWITCH
from actiontrain.recipe import RECIPES_DIR

# End-to-end: kubectl kustomize, hadolint and Helm run as processes.
pytestmark = pytest.mark.e2e

KUSTOMIZATIONS = {
    "base": (K8S_DIR / "base", "x3d_s", (1, 1), 1, None),
    "cpu-smoke": (K8S_DIR / "overlays" / "cpu-smoke", "cpu_smoke", (2, 2), 2, None),
    "gpu-multinode": (K8S_DIR / "overlays" / "gpu-multinode", "x3d_s", (2, 4), 8, 8),
}
FIELDS = {
    "metadata.namespace": "actiontrain",
    "metadata.annotations['batch.kubernetes.io/job-completion-index']": "1",
    "metadata.labels['batch.kubernetes.io/controller-uid']": "uid-1",
}
SECRETS = {("actiontrain-s3", key): "placeholder" for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def built(request) -> tuple[str, list[dict]]:
    path = KUSTOMIZATIONS[request.param][0]
    return request.param, build_kustomization(path)


def _one(objects: list[dict], kind: str) -> dict:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[obj['kind'] for obj in objects]}"
    return found[0]


def _container(objects: list[dict]) -> dict:
    (container,) = pod_template(_one(objects, "Job"))["spec"]["containers"]
    return container


def test_builds_objects_valid_for_kubernetes_1_33(built):
    _, objects = built
    assert sorted(obj["kind"] for obj in objects) == ["ConfigMap", "Job", "Namespace", "Service", "ServiceAccount"]
    for obj in objects:
        validate(obj)


def test_builds_the_recipe_configmap_from_the_package_recipe(built):
    name, objects = built
    recipe = KUSTOMIZATIONS[name][1]
    configmap = _one(objects, "ConfigMap")
    assert configmap["data"]["recipe.yaml"] == (RECIPES_DIR / f"{recipe}.yaml").read_text()
    volume = next(v for v in pod_template(_one(objects, "Job"))["spec"]["volumes"] if v["name"] == "recipe")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]  # with kustomize's hash suffix


def test_builds_a_job_whose_size_matches_its_nnodes(built):
    name, objects = built
    (minimum, maximum), nproc, gpus = KUSTOMIZATIONS[name][2:]
    job = _one(objects, "Job")
    env = container_environment(_container(objects), fields=FIELDS, secrets=SECRETS)
    assert env["ACTIONTRAIN_NNODES"] == f"{minimum}:{maximum}"
    assert env["ACTIONTRAIN_NPROC_PER_NODE"] == str(nproc)
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == maximum
    assert job["spec"]["maxFailedIndexes"] == maximum - minimum
    resources = _container(objects)["resources"]
    if gpus:
        assert (
            resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == str(gpus) == str(nproc)
        )
    else:
        assert "nvidia.com/gpu" not in str(resources)


def test_builds_the_chart_command_and_failure_policy(built):
    _, objects = built
    chart_job = render_chart({"data": "s3://d", "output": "s3://o"}).one("Job")
    chart_container = pod_template(chart_job)["spec"]["containers"][0]
    container = _container(objects)
    assert container["command"] == chart_container["command"]
    assert container["args"] == chart_container["args"]
    job = _one(objects, "Job")
    for key in ("completionMode", "successPolicy", "podFailurePolicy", "podReplacementPolicy", "backoffLimitPerIndex"):
        assert job["spec"][key] == chart_job["spec"][key], key
    chart_spec, spec = pod_template(chart_job)["spec"], pod_template(job)["spec"]
    for key in ("restartPolicy", "securityContext", "automountServiceAccountToken", "enableServiceLinks"):
        assert spec[key] == chart_spec[key], key
    assert container["securityContext"] == chart_container["securityContext"]
    assert {"name": SHARED_STORE_SWITCH, "value": "1"} in container["env"]
    # Every variable the chart sets (values aside) is set here too.
    assert {e["name"] for e in chart_container["env"]} <= {e["name"] for e in container["env"]}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {
        m["mountPath"] for m in chart_container["volumeMounts"]
    }


def test_builds_torchrun_arguments_that_reach_node_zero_through_the_service(built):
    _, objects = built
    service, job = _one(objects, "Service"), _one(objects, "Job")
    spec = pod_template(job)["spec"]
    assert spec["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= pod_template(job)["metadata"]["labels"].items()
    container = _container(objects)
    argv = container_argv(container, container_environment(container, fields=FIELDS, secrets=SECRETS))
    endpoint = f"{job['metadata']['name']}-0.{service['metadata']['name']}.actiontrain.svc:29400"
    assert f"--rdzv-endpoint={endpoint}" in argv
    assert "--rdzv-id=uid-1" in argv
    assert "--config=/etc/actiontrain/recipe.yaml" in argv


def test_builds_secure_pods_in_a_restricted_namespace(built):
    _, objects = built
    namespace = _one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"} == {
        namespace["metadata"]["name"]
    }
    spec = pod_template(_one(objects, "Job"))["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory" and shm["emptyDir"]["sizeLimit"]


def test_builds_standard_labels_on_every_object(built):
    _, objects = built
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "actiontrain"
        assert labels["app.kubernetes.io/managed-by"] == "kustomize"
        assert labels["app.kubernetes.io/component"] == "trainer"
    assert pod_template(_one(objects, "Job"))["metadata"]["labels"]["app.kubernetes.io/instance"] == "actiontrain"


def test_builds_credentials_only_as_secret_references(built):
    _, objects = built
    assert not any(obj["kind"] == "Secret" for obj in objects)
    env = {item["name"]: item for item in _container(objects)["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "actiontrain-s3", "key": name}


def test_example_secret_holds_placeholders_for_the_keys_the_job_reads():
    secret = yaml.safe_load((K8S_DIR / "base" / "s3-credentials.example.yaml").read_text())
    validate(secret)
    assert secret["metadata"]["name"] == "actiontrain-s3"
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(value.startswith("REPLACE-WITH-") for value in secret["stringData"].values())
    kustomization = yaml.safe_load((K8S_DIR / "base" / "kustomization.yaml").read_text())
    assert "s3-credentials.example.yaml" not in kustomization["resources"]


def test_cpu_smoke_overlay_requests_no_gpu_and_reads_s3_urls_through_its_own_endpoint():
    objects = build_kustomization(KUSTOMIZATIONS["cpu-smoke"][0])
    container, job = _container(objects), _one(objects, "Job")
    env = container_environment(container, fields=FIELDS, secrets=SECRETS)
    argv = container_argv(container, env)
    # CPU only: no GPU requested or tolerated, so train.device=auto resolves to the CPU, and a
    # CPU requested for each of the node's training processes.
    assert "nvidia.com/gpu" not in str(container["resources"]) + str(pod_template(job)["spec"].get("tolerations"))
    assert "train.device=auto" in argv
    assert int(container["resources"]["requests"]["cpu"]) >= int(env["ACTIONTRAIN_NPROC_PER_NODE"])
    # S3 URLs for the data and the output, reached through the in-cluster store's endpoint.
    assert [arg for arg in argv if arg.startswith(("--data=", "--output="))] == [
        "--data=s3://my-bucket/datasets/motion-smoke",
        "--output=s3://my-bucket/runs/cpu-smoke",
    ]
    assert env["AWS_ENDPOINT_URL_S3"].startswith("http://")
    assert job["spec"]["activeDeadlineSeconds"] > 0  # a smoke run that hangs is ended


def test_gpu_overlay_tolerates_gpu_taints_and_sizes_shared_memory():
    objects = build_kustomization(KUSTOMIZATIONS["gpu-multinode"][0])
    spec = pod_template(_one(objects, "Job"))["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
