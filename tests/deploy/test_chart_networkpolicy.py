"""charts/actiontrain templates/networkpolicy.yaml: the run's pods talk to each other, DNS and S3 only."""

from __future__ import annotations

import pytest

from kube import pod_template, render_chart

# End-to-end: the chart is rendered by Helm's Go library in a worker process.
pytestmark = pytest.mark.e2e

BASE = {"data": "s3://datasets/ucf101", "output": "s3://runs/x3d"}


def _policy(values: dict | None = None) -> dict:
    return render_chart(BASE | {"networkPolicy": {"enabled": True, **(values or {})}}).one("NetworkPolicy")


def test_renders_no_network_policy_by_default():
    assert not render_chart(BASE).has("NetworkPolicy")


def test_renders_ingress_only_from_the_runs_own_pods_on_rendezvous_and_collective_ports():
    rendered = render_chart(BASE | {"networkPolicy": {"enabled": True}})
    spec = rendered.one("NetworkPolicy")["spec"]
    own = spec["podSelector"]["matchLabels"]
    assert own.items() <= pod_template(rendered.one("Job"))["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = spec["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": own}}]
    assert rule["ports"] == [
        {"port": 29400, "protocol": "TCP"},
        {"port": 32768, "endPort": 60999, "protocol": "TCP"},
    ]


def test_renders_egress_to_own_pods_dns_and_the_object_store():
    spec = _policy({"s3": {"ports": [443, 9000], "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}})["spec"]
    own, dns, s3 = spec["egress"]
    assert own == {"to": [{"podSelector": {"matchLabels": spec["podSelector"]["matchLabels"]}}]}
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert s3 == {
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 9000, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    }


def test_renders_extra_egress_rules():
    extra = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}
    assert _policy({"extraEgress": [extra]})["spec"]["egress"][-1] == extra


def test_renders_the_same_policy_for_pytorchjob_workers():
    rendered = render_chart(BASE | {"backend": "pytorchjob", "networkPolicy": {"enabled": True}})
    own = rendered.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert own.items() <= pod_template(rendered.one("PyTorchJob"))["metadata"]["labels"].items()
