"""k8s/serving/: OpenVINO Model Server and KServe serve the repository that ``export --serving-repository`` writes.

Core objects are validated against Kubernetes 1.33 (kubernetes-validate, strict); the
InferenceService, a custom resource with no schema offline, is checked against the structure of
KServe's v1beta1 types written in ``kube.py``, its pod and container parts as a core Pod.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from kube import K8S_DIR, build_kustomization, container_environment, validate

from actiontrain.export.repository import model_url

SERVING = K8S_DIR / "serving"
REPOSITORY = "s3://actiontrain/models"
"""The repository the examples point at (``export --serving-repository s3://actiontrain/models``)."""
SECRETS = {("actiontrain-s3", key): "placeholder" for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def load(path: str) -> dict:
    return yaml.safe_load((SERVING / path).read_text())


def ovms_models() -> list[dict]:
    return [entry["config"] for entry in json.loads((SERVING / "ovms" / "config.json").read_text())["model_config_list"]]


def ovms_container() -> dict:
    (container,) = load("ovms/deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return container


def test_ovms_reads_model_folders_of_the_repository_in_f32():
    (model,) = ovms_models()
    # A model folder holding the numbered versions, exactly where `export --name x3d` puts them.
    assert model["base_path"] == model_url(REPOSITORY, model["name"]) == "s3://actiontrain/models/x3d"
    assert model["plugin_config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert model["model_version_policy"] == {"latest": {"num_versions": 1}}


def test_ovms_serves_kserve_v2_rest_where_model_apis_adapter_looks():
    container = ovms_container()
    (model,) = ovms_models()
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert (int(args["rest_port"]), int(args["port"])) == (ports["http"], ports["grpc"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert args["config_path"] == f"{mount['mountPath']}/config.json"
    assert container["readinessProbe"]["httpGet"] == {"path": f"/v2/models/{model['name']}/ready", "port": "http"}
    service = load("ovms/service.yaml")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"grpc": "grpc", "http": "http"}
    pod_labels = load("ovms/deployment.yaml")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == pod_labels


def test_ovms_takes_s3_credentials_from_the_secret_and_s3_endpoint_not_aws_endpoint_url():
    container = ovms_container()
    env = {item["name"]: item for item in container["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "actiontrain-s3", "key": name}
    # OVMS reads S3_ENDPOINT (host:port); AWS_ENDPOINT_URL* would be ignored. Absent for AWS S3.
    assert env["S3_ENDPOINT"]["valueFrom"]["secretKeyRef"] == {"name": "actiontrain-s3", "key": "S3_ENDPOINT", "optional": True}
    assert not any(name.startswith("AWS_ENDPOINT_URL") for name in env)
    assert container_environment(container, fields={}, secrets={**SECRETS, ("actiontrain-s3", "S3_ENDPOINT"): "minio:9000"})


def test_ovms_pod_meets_the_restricted_pod_security_standard():
    spec = load("ovms/deployment.yaml")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert spec["automountServiceAccountToken"] is False
    security = ovms_container()["securityContext"]
    assert security == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    writable = {m["mountPath"] for m in ovms_container()["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp"}  # where OVMS copies a version from S3 before loading it


def test_kserve_serves_the_model_folder_with_the_openvino_runtime():
    service = load("kserve/inferenceservice.yaml")
    validate(service)
    model = service["spec"]["predictor"]["model"]
    assert (model["runtime"], model["modelFormat"]) == ("kserve-openvino", {"name": "openvino"})
    assert model["protocolVersion"] == "v2"  # what OVMSAdapter speaks; v1 matches no v2-only runtime
    # The runtime serves under the InferenceService's name; the folder ends in "/" (prefix copy).
    assert model["storageUri"] == model_url(REPOSITORY, service["metadata"]["name"]) + "/"
    account = load("kserve/serviceaccount.yaml")
    validate(account)
    assert service["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]
    assert account["secrets"] == [{"name": load("kserve/s3-credentials.example.yaml")["metadata"]["name"]}]


def test_the_inference_service_check_catches_what_kserve_would_refuse():
    service = load("kserve/inferenceservice.yaml")
    for mutate, message in (
        (lambda s: s["spec"]["predictor"]["model"].pop("modelFormat"), "'modelFormat' is a required property"),
        (lambda s: s["spec"]["predictor"].update(replicas=2), "Additional properties are not allowed"),
        (lambda s: s["spec"]["predictor"]["model"].update(storageUri="bucket/models/x3d/"), "does not match"),
        (lambda s: s["metadata"].update(name="X3D"), "does not match"),
        (lambda s: s["spec"]["predictor"]["model"]["resources"].update(limits={"cpu": []}), "cpu"),
    ):
        broken = copy.deepcopy(service)
        mutate(broken)
        with pytest.raises(AssertionError, match=message):
            validate(broken)


def test_kserve_example_secret_says_where_the_store_is_and_holds_placeholders():
    secret = load("kserve/s3-credentials.example.yaml")
    validate(secret)
    annotations = secret["metadata"]["annotations"]
    assert "://" not in annotations["serving.kserve.io/s3-endpoint"]
    assert annotations["serving.kserve.io/s3-usehttps"] in ("0", "1")
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(value.startswith("REPLACE-WITH-") for value in secret["stringData"].values())
    assert "s3-credentials.example.yaml" not in load("kserve/kustomization.yaml")["resources"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("folder", "kinds"),
    [
        ("ovms", ["ConfigMap", "Deployment", "Service", "ServiceAccount"]),
        ("kserve", ["InferenceService", "ServiceAccount"]),
        ("kserve-openvino-ir", ["InferenceService", "ServiceAccount"]),
    ],
)
def test_kustomizations_build_valid_labelled_objects(folder, kinds):
    objects = build_kustomization(SERVING / folder)
    assert sorted(obj["kind"] for obj in objects) == kinds
    for obj in objects:
        validate(obj)
        assert obj["metadata"]["namespace"] == "actiontrain"
        labels = obj["metadata"]["labels"]
        assert (labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"]) == ("actiontrain", "model-server")
        assert labels["app.kubernetes.io/managed-by"] == "kustomize"
    if folder == "ovms":
        configmap = next(obj for obj in objects if obj["kind"] == "ConfigMap")
        deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]  # with kustomize's hash suffix
        assert json.loads(configmap["data"]["config.json"])["model_config_list"][0]["config"] == ovms_models()[0]
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()


@pytest.mark.e2e
def test_openvino_ir_variant_changes_only_the_format_and_lets_kserve_pick_the_runtime():
    objects = {obj["kind"]: obj for obj in build_kustomization(SERVING / "kserve-openvino-ir")}
    upstream = {obj["kind"]: obj for obj in build_kustomization(SERVING / "kserve")}
    model = objects["InferenceService"]["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "openvino_ir"} and "runtime" not in model
    expected = copy.deepcopy(upstream["InferenceService"])
    del expected["spec"]["predictor"]["model"]["runtime"]
    expected["spec"]["predictor"]["model"]["modelFormat"] = {"name": "openvino_ir"}
    assert objects["InferenceService"] == expected
    assert objects["ServiceAccount"] == upstream["ServiceAccount"]
