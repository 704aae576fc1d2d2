"""charts/actiontrain values: lint, a matrix of renders valid for Kubernetes 1.33, and the values refused."""

from __future__ import annotations

import json

import pytest
import yaml
from kube import CHART_DIR, HelmFailure, lint_chart, render_chart, validate

from actiontrain.data.layouts import FORMATS
from actiontrain.recipe import RECIPES_DIR, shipped_recipes

# End-to-end: the chart is rendered by Helm's Go library in a worker process.
pytestmark = pytest.mark.e2e

BASE = {"data": "s3://datasets/ucf101", "output": "s3://runs/x3d"}

MATRIX = {
    "defaults": BASE,
    "gpu-multinode": BASE
    | {
        "nodes": {"min": 2, "max": 4},
        "gpusPerNode": 8,
        "resources": {"requests": {"cpu": "64", "memory": "512Gi"}, "limits": {"memory": "512Gi"}},
        "shm": {"sizeLimit": "64Gi"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "priorityClassName": "training",
    },
    "pytorchjob": BASE | {"backend": "pytorchjob", "nodes": {"min": 1, "max": 3}, "gpusPerNode": 1},
    "kueue": BASE | {"nodes": {"min": 2, "max": 8}, "kueue": {"queueName": "team-vision"}},
    "kueue-elastic": BASE | {"nodes": {"min": 2, "max": 8}, "kueue": {"queueName": "team-vision", "elastic": True}},
    "pytorchjob-kueue": BASE | {"backend": "pytorchjob", "kueue": {"queueName": "team-vision"}},
    "network-policy": BASE
    | {"networkPolicy": {"enabled": True, "s3": {"ports": [443, 9000], "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}}},
    "existing-secret": BASE
    | {
        "s3": {
            "existingSecret": "s3-credentials",
            "sessionTokenKey": "AWS_SESSION_TOKEN",
            "endpointUrl": "http://minio:9000",
        }
    },
    "service-account-irsa": BASE
    | {
        "serviceAccount": {
            "create": True,
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/train"},
        }
    },
    "existing-service-account": BASE | {"serviceAccount": {"create": False, "name": "trainer"}},
    "custom-recipe": BASE
    | {"recipe": {"model": {"variant": "xs"}, "train": {"epochs": 2}}, "overrides": ["train.batch_size=2"]},
    "cpu-smoke": BASE
    | {"recipe": "cpu_smoke", "nodes": {"min": 2, "max": 2}, "nprocPerNode": 2, "activeDeadlineSeconds": 3600},
    "extras": BASE
    | {
        "extraEnv": [{"name": "NCCL_DEBUG", "value": "INFO"}],
        "imagePullSecrets": [{"name": "regcred"}],
        "ttlSecondsAfterFinished": 600,
    },
}
# The example values files that ship with the chart (chart-testing's ci/ convention).
MATRIX |= {
    f"ci/{path.name}": yaml.safe_load(path.read_text()) for path in sorted((CHART_DIR / "ci").glob("*-values.yaml"))
}


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_chart_lints_clean(name):
    report = lint_chart(MATRIX[name], strict=True, kube_version="v1.33.0")
    assert report["errors"] == []
    # What may remain is informational, such as "icon is recommended".
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_renders_objects_valid_for_kubernetes_1_33(name):
    rendered = render_chart(MATRIX[name])
    assert rendered.objects
    for obj in rendered.objects:
        validate(obj)


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_renders_the_same_labels_on_every_object(name):
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    for obj in render_chart(MATRIX[name]).objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "actiontrain"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/version"] == chart["appVersion"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"] == "trainer"
        assert labels["helm.sh/chart"] == f"actiontrain-{chart['version']}"


def test_renders_names_within_dns_limits_for_a_long_release_name():
    rendered = render_chart(BASE, name="a" * 53)
    job = rendered.one("Job")
    assert len(job["metadata"]["name"]) <= 52  # hostnames <job>-<index> stay within 63 characters
    for obj in rendered.objects:
        assert len(obj["metadata"]["name"]) <= 63
        validate(obj)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"s3": {"accessKey": "AKIA..."}}, "additional properties 'accessKey' not allowed"),
        ({"s3": {"secretAccessKey": "..."}}, "additional properties 'secretAccessKey' not allowed"),
        ({"awsAccessKeyId": "AKIA..."}, "additional properties 'awsAccessKeyId' not allowed"),
        ({"nodes": {"min": 0, "max": 1}}, "/nodes/min': minimum: got 0, want 1"),
        ({"nodes": {"min": 1, "max": "4"}}, "/nodes/max': got string, want integer"),
        ({"backend": "slurm"}, "value must be one of 'job', 'pytorchjob'"),
        ({"recipe": "x3d_m"}, "value must be one of 'x3d_s', 'cpu_small', 'cpu_smoke'"),
        ({"recipe": {"trian": {"epochs": 1}}}, "additional properties 'trian' not allowed"),
        ({"overrides": ["epochs=3"]}, "/overrides/0"),
        ({"gpusPerNode": -1}, "/gpusPerNode': minimum: got -1, want 0"),
        ({"format": "avi"}, "/format': value must be one of"),
        ({"split": 4}, "/split': maximum: got 4, want 3"),
        ({"rendezvous": {"port": 80}}, "/rendezvous/port': minimum: got 80"),
        ({"image": {"digest": "latest"}}, "/image/digest'"),
        ({"pytorchjob": {"cleanPodPolicy": "Never"}}, "value must be one of 'None', 'Running', 'All'"),
        ({"kueue": {"queueName": "Team A"}}, "/kueue/queueName'"),
        (
            {"kueue": {"queueName": "team-a", "elastic": True, "partialAdmission": True}},
            "/kueue/partialAdmission'",
        ),
        ({"kueue": {"elastic": "yes"}}, "/kueue/elastic': got string, want boolean"),
        ({"rendezvous": {"rejoinAttempts": -1}}, "/rendezvous/rejoinAttempts': minimum: got -1, want 0"),
        ({"shm": {"sizeLimit": "lots"}}, "/shm/sizeLimit'"),
    ],
)
def test_schema_refuses_bad_values_naming_the_key(values, message):
    with pytest.raises(HelmFailure) as caught:
        render_chart(BASE | values)
    assert caught.value.kind == "HelmValuesError" and message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"nodes": {"min": 3, "max": 2}},
            "nodes.min must be <= nodes.max, got min 3 and max 2; e.g. --set nodes.min=2",
        ),
        ({"data": ""}, "data is required: the dataset root URL, e.g. --set data=s3://"),
        ({"output": ""}, "output is required"),
        (
            {"gpusPerNode": 4, "nprocPerNode": 8},
            "nprocPerNode must be <= gpusPerNode (each process drives its own GPU), got nprocPerNode 8",
        ),
        (
            {"nodes": {"min": 1, "max": 2}, "job": {"maxFailedIndexes": 3}},
            "job.maxFailedIndexes must be <= nodes.max (2), got 3",
        ),
        (
            {"extraEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]},
            "extraEnv AWS_SECRET_ACCESS_KEY has a plain value",
        ),
        ({"image": {"tag": "latest"}}, "image.tag must not be latest"),
        (
            {"networkPolicy": {"enabled": True, "collectivePorts": {"start": 40000, "end": 30000}}},
            "networkPolicy.collectivePorts.start must be <= end, got 40000 and 30000",
        ),
        ({"backend": "pytorchjob", "nodes": {"min": 4, "max": 1}}, "nodes.min must be <= nodes.max"),
        ({"kueue": {"elastic": True}}, "kueue.elastic needs kueue.queueName"),
        (
            {"backend": "pytorchjob", "kueue": {"queueName": "q", "elastic": True}},
            "kueue.elastic needs backend job (Kueue resizes only a batch/v1 Job in place), got backend pytorchjob",
        ),
        (
            {"nodes": {"min": 1, "max": 4}, "job": {"maxFailedIndexes": 2}, "kueue": {"queueName": "q", "elastic": True}},
            "job.maxFailedIndexes must be <= nodes.min (1) with kueue.elastic",
        ),
    ],
)
def test_templates_fail_with_a_clear_message_on_what_the_schema_cannot_express(values, message):
    with pytest.raises(HelmFailure) as caught:
        render_chart(BASE | values)
    assert caught.value.kind == "HelmRenderError" and message in str(caught.value)


def test_renders_secret_env_from_a_secret_reference():
    values = BASE | {
        "extraEnv": [{"name": "AWS_SESSION_TOKEN", "valueFrom": {"secretKeyRef": {"name": "sts", "key": "token"}}}]
    }
    validate(render_chart(values).one("Job"))


def _values_yaml_keys(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("resources", "podSecurityContext", "securityContext"):
            keys |= _values_yaml_keys(value, dotted + ".")
        else:
            keys.add(dotted)
    return keys


def test_every_value_has_a_doc_comment():
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    documented = set()
    path: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0]
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, key))
        # A "# --" comment block right above the key documents it.
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#") and not lines[above].strip().startswith("# --"):
            above -= 1
        if above >= 0 and lines[above].strip().startswith("# --"):
            documented.add(".".join(k for _, k in path))
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    missing = sorted(key for key in _values_yaml_keys(values) if key not in documented)
    assert missing == []


def test_schema_describes_every_value_in_values_yaml():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

    def walk(node: dict, props: dict, prefix: str) -> list[str]:
        missing = []
        for key, value in node.items():
            if key not in props:
                missing.append(prefix + key)
            elif isinstance(value, dict) and "properties" in props[key]:
                missing += walk(value, props[key]["properties"], f"{prefix}{key}.")
        return missing

    assert walk(values, schema["properties"], "") == []
    assert schema["additionalProperties"] is False


def test_schema_enums_match_the_package():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert set(schema["properties"]["format"]["enum"]) == {"", *FORMATS}
    assert set(schema["properties"]["recipe"]["oneOf"][0]["enum"]) == set(shipped_recipes())


@pytest.mark.parametrize("name", shipped_recipes())
def test_chart_ships_the_package_recipes_verbatim(name):
    assert (CHART_DIR / "files" / "recipes" / f"{name}.yaml").read_text() == (RECIPES_DIR / f"{name}.yaml").read_text()


def test_helms_go_runtime_stays_out_of_the_test_process():
    render_chart(BASE)
    with open("/proc/self/maps", encoding="utf-8") as maps:
        assert "libhelm" not in maps.read()
