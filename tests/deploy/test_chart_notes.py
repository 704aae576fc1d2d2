"""charts/actiontrain templates/NOTES.txt: how to follow the run and where its results go."""

from __future__ import annotations

import pytest

from kube import render_chart

# End-to-end: the chart is rendered by Helm's Go library in a worker process.
pytestmark = pytest.mark.e2e

BASE = {"data": "s3://datasets/ucf101", "output": "s3://runs/x3d/"}


def test_notes_say_how_to_follow_the_job_with_its_labels():
    notes = render_chart(BASE | {"nodes": {"min": 2, "max": 4}}, name="ucf", namespace="vision").notes
    assert "kubectl -n vision get job ucf-actiontrain" in notes
    assert (
        "kubectl -n vision logs -f -l app.kubernetes.io/instance=ucf,app.kubernetes.io/component=trainer --prefix --max-log-requests 5"
        in notes
    )
    assert "kubectl -n vision wait --for=condition=complete job/ucf-actiontrain" in notes
    assert "2 to 4 node(s)" in notes


def test_notes_say_where_checkpoints_and_the_export_go_and_how_to_use_it():
    notes = render_chart(BASE).notes
    assert "s3://runs/x3d/checkpoints/step-N/" in notes
    assert "s3://runs/x3d/metrics.jsonl" in notes
    assert "s3://runs/x3d/export/" in notes
    assert "actiontrain pull s3://runs/x3d/export ./model" in notes
    assert "actiontrain predict --model s3://runs/x3d/export video.mp4" in notes


def test_notes_say_when_the_recipe_exports_nothing():
    for values in ({"recipe": "cpu_smoke"}, {"overrides": ["train.export=false"]}):
        notes = render_chart(BASE | values).notes
        assert "actiontrain predict" not in notes
        assert "train.export=false" in notes
    assert (
        "actiontrain predict" in render_chart(BASE | {"recipe": "cpu_smoke", "overrides": ["train.export=true"]}).notes
    )


def test_notes_name_the_pytorchjob_and_the_kueue_queue():
    notes = render_chart(BASE | {"backend": "pytorchjob", "kueue": {"queueName": "team-a"}}).notes
    assert "kubectl -n ml get pytorchjob demo-actiontrain" in notes
    assert "Kueue LocalQueue team-a" in notes


def test_notes_say_how_to_resize_an_elastic_job():
    values = BASE | {"nodes": {"min": 2, "max": 4}, "kueue": {"queueName": "team-a", "elastic": True}}
    notes = render_chart(values).notes
    assert "resize it in place to N nodes (2 to 4)" in notes
    assert """kubectl -n ml patch job demo-actiontrain --type=merge -p '{"spec":{"parallelism":N,"completions":N}}'""" in notes
    assert "resize it" not in render_chart(BASE | {"kueue": {"queueName": "team-a"}}).notes
