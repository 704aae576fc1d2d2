"""charts/actiontrain templates/service.yaml: the headless Service that names the Job's pods."""

from __future__ import annotations

import pytest

from kube import pod_template, render_chart

# End-to-end: the chart is rendered by Helm's Go library in a worker process.
pytestmark = pytest.mark.e2e

BASE = {"data": "s3://datasets/ucf101", "output": "s3://runs/x3d"}


def test_renders_a_headless_service_that_publishes_pods_before_they_are_ready():
    spec = render_chart(BASE).one("Service")["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert spec["ports"] == [{"name": "rendezvous", "port": 29400, "targetPort": "rendezvous", "protocol": "TCP"}]


def test_renders_a_selector_that_matches_exactly_the_job_pods():
    rendered = render_chart(BASE | {"podLabels": {"team": "vision"}})
    selector = rendered.one("Service")["spec"]["selector"]
    template = pod_template(rendered.one("Job"))
    assert selector.items() <= template["metadata"]["labels"].items()
    other = render_chart(BASE, name="other").one("Service")["spec"]["selector"]
    assert not other.items() <= template["metadata"]["labels"].items()
    (container,) = template["spec"]["containers"]
    assert {"name": "rendezvous", "containerPort": 29400, "protocol": "TCP"} in container["ports"]


def test_renders_the_rendezvous_port_from_the_values():
    rendered = render_chart(BASE | {"rendezvous": {"port": 29500}})
    assert rendered.one("Service")["spec"]["ports"][0]["port"] == 29500
    env = {e["name"]: e.get("value") for e in pod_template(rendered.one("Job"))["spec"]["containers"][0]["env"]}
    assert env["ACTIONTRAIN_RDZV_ENDPOINT"].endswith(".svc:29500")


def test_renders_no_service_for_the_pytorchjob_backend():
    # The training operator creates one Service per worker itself.
    assert not render_chart(BASE | {"backend": "pytorchjob"}).has("Service")
