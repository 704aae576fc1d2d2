"""charts/actiontrain templates/serviceaccount.yaml: the pods' identity (IRSA), with no API access."""

from __future__ import annotations

import pytest

from kube import pod_template, render_chart

# End-to-end: the chart is rendered by Helm's Go library in a worker process.
pytestmark = pytest.mark.e2e

BASE = {"data": "s3://datasets/ucf101", "output": "s3://runs/x3d"}
ROLE = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/train"}


def test_renders_a_service_account_with_the_irsa_annotation():
    rendered = render_chart(BASE | {"serviceAccount": {"annotations": ROLE}})
    account = rendered.one("ServiceAccount")
    assert account["metadata"]["annotations"] == ROLE
    assert account["automountServiceAccountToken"] is False
    assert pod_template(rendered.one("Job"))["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_renders_no_rbac():
    kinds = set(render_chart(BASE | {"networkPolicy": {"enabled": True}}).kinds())
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_renders_an_existing_service_account_when_create_is_false():
    rendered = render_chart(BASE | {"serviceAccount": {"create": False, "name": "trainer"}})
    assert not rendered.has("ServiceAccount")
    assert pod_template(rendered.one("Job"))["spec"]["serviceAccountName"] == "trainer"
    rendered = render_chart(BASE | {"serviceAccount": {"create": False}})
    assert pod_template(rendered.one("Job"))["spec"]["serviceAccountName"] == "default"
