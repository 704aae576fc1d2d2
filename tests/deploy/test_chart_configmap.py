"""charts/actiontrain templates/configmap.yaml: the recipe the pods read."""

from __future__ import annotations

import pytest

import yaml
from kube import pod_template, render_chart

from actiontrain.recipe import RECIPES_DIR, load_config

# End-to-end: the chart is rendered by Helm's Go library in a worker process.
pytestmark = pytest.mark.e2e

BASE = {"data": "s3://datasets/ucf101", "output": "s3://runs/x3d"}


def _recipe_text(values: dict) -> str:
    return render_chart(values).one("ConfigMap")["data"]["recipe.yaml"]


def test_renders_a_shipped_recipe_verbatim():
    for name in ("x3d_s", "cpu_smoke"):
        assert _recipe_text(BASE | {"recipe": name}).strip() == (RECIPES_DIR / f"{name}.yaml").read_text().strip()


def test_renders_a_recipe_mapping_as_yaml():
    recipe = {"data": {"clip_len": 4, "train_short_side": [64, 80]}, "model": {"variant": "xs"}, "train": {"epochs": 2}}
    assert yaml.safe_load(_recipe_text(BASE | {"recipe": recipe})) == recipe


def test_renders_a_recipe_the_trainer_loads(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(_recipe_text(BASE | {"recipe": {"model": {"variant": "xs"}, "train": {"epochs": 2}}}))
    config = load_config(str(path), ["train.batch_size=2"])
    assert (config.model.variant, config.train.epochs, config.train.batch_size) == ("xs", 2, 2)


def test_renders_the_configmap_mounted_at_the_recipe_path():
    rendered = render_chart(BASE | {"recipePath": "/config/run/recipe.yaml"})
    spec = pod_template(rendered.one("Job"))["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "recipe")
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "recipe")
    assert volume["configMap"]["name"] == rendered.one("ConfigMap")["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "recipe.yaml", "path": "recipe.yaml"}]
    assert (mount["mountPath"], mount["readOnly"]) == ("/config/run", True)
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["ACTIONTRAIN_RECIPE"] == "/config/run/recipe.yaml"


def test_renders_a_config_checksum_that_changes_with_the_recipe():
    def checksum(values: dict) -> str:
        return pod_template(render_chart(values).one("Job"))["metadata"]["annotations"]["checksum/config"]

    assert checksum(BASE) == checksum(BASE)
    assert checksum(BASE) != checksum(BASE | {"recipe": "cpu_smoke"})
