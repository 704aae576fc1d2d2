"""charts/actiontrain templates/pytorchjob.yaml: the Kubeflow PyTorchJob backend."""

from __future__ import annotations

import pytest

from kube import (
    container_argv,
    container_environment,
    pod_template,
    render_chart,
    validate,
)

# End-to-end: the chart is rendered by Helm's Go library in a worker process.
pytestmark = pytest.mark.e2e

BASE = {"data": "s3://datasets/ucf101", "output": "s3://runs/x3d", "backend": "pytorchjob"}
ELASTIC = BASE | {"nodes": {"min": 2, "max": 4}, "gpusPerNode": 8, "maxRestarts": 6}


def test_renders_a_pytorchjob_with_an_elastic_policy_instead_of_a_job():
    rendered = render_chart(ELASTIC)
    assert not rendered.has("Job")
    job = rendered.one("PyTorchJob")
    validate(job)
    assert job["apiVersion"] == "kubeflow.org/v1"
    assert job["spec"]["elasticPolicy"] == {
        "rdzvBackend": "c10d",
        "rdzvPort": 29400,
        "minReplicas": 2,
        "maxReplicas": 4,
        "maxRestarts": 6,
    }
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Worker"]
    assert (worker["replicas"], worker["restartPolicy"]) == (4, "OnFailure")
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 6}


def test_renders_the_same_command_as_the_job_backend():
    job_pod = pod_template(render_chart(ELASTIC | {"backend": "job"}).one("Job"))["spec"]["containers"][0]
    worker = pod_template(render_chart(ELASTIC).one("PyTorchJob"))["spec"]["containers"][0]
    assert worker["command"] == job_pod["command"]
    assert worker["args"] == job_pod["args"]
    # The operator finds its port and container by these names.
    assert worker["name"] == "pytorch"
    assert worker["ports"][0]["name"] == "pytorchjob-port"


def test_renders_the_rendezvous_at_worker_zero_from_the_operator_labels():
    container = pod_template(render_chart(ELASTIC).one("PyTorchJob"))["spec"]["containers"][0]
    fields = {
        "metadata.namespace": "ml",
        "metadata.labels['training.kubeflow.org/replica-index']": "1",
        "metadata.labels['training.kubeflow.org/job-name']": "demo-actiontrain",
    }
    env = container_environment(container, fields=fields)
    assert env["ACTIONTRAIN_NODE_INDEX"] == "1"
    argv = container_argv(container, env)
    assert "--rdzv-endpoint=demo-actiontrain-worker-0.ml.svc:29400" in argv
    assert "--rdzv-id=demo-actiontrain" in argv
    assert "--nnodes=2:4" in argv and "--nproc-per-node=8" in argv


def test_renders_the_kueue_label_and_a_suspended_run_policy_when_queued():
    job = render_chart(BASE | {"kueue": {"queueName": "team-a"}, "activeDeadlineSeconds": 7200}).one("PyTorchJob")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["runPolicy"]["suspend"] is True
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 7200


def test_renders_no_job_only_fields_into_the_worker_pods():
    spec = pod_template(render_chart(BASE).one("PyTorchJob"))["spec"]
    # The operator sets restartPolicy from the replica spec and names pods itself.
    assert "restartPolicy" not in spec and "subdomain" not in spec
