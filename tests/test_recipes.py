"""Each study recipe in the README builds and trains a step (weights: null, offline)."""

import re
import shlex

import numpy as np
import pytest
import yaml

from agegender import params as P
from agegender.models.model_b import backbone_of, build_model_b, unfreeze_top
from agegender.typed_yaml import set_dotted
from tests.conftest import ROOT

README = (ROOT / "docs" / "experiments.md").read_text()  # the study's recipes live there
BLOCK = README.split("### The study's recipes, one line each", 1)[1].split("```bash", 1)[1]
RECIPES = [line for line in BLOCK.split("```", 1)[0].splitlines() if line.startswith("dvc exp run")]


def test_the_docs_list_the_four_recipes():
    assert len(RECIPES) == 4
    assert {re.search(r"backbone=(\w+)", r).group(1) for r in RECIPES[1:]} == {
        "vgg16",
        "resnet50",
        "efficientnet_b0",
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.split("backbone=")[-1].split()[0])
def test_recipe_builds_and_trains_a_step(recipe, tmp_path):
    from agegender.training.objective import compile_model

    args = shlex.split(recipe)
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "-S"]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    small = ["model_b.weights=null", "data.image_size=32", "model_a.stem_stride=1"]
    # no head_init here: a recipe for an ImageNet backbone must say head_init=random itself
    for assignment in [*overrides, *small]:
        set_dotted(raw, assignment)
    params: P.Params = P.build(P.Params, raw)  # type: ignore[assignment]
    p = params.model_b
    model = build_model_b(p, 32, 0)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    y = {"age": np.full((4, 1), 30.0, "float32"), "gender": np.ones((4, 1), "float32")}
    for fit, unfreeze in ((p.phase1, None), (p.phase2, p.phase2.unfreeze)):
        if fit.epochs == 0:
            continue
        if unfreeze is not None:
            unfreeze_top(backbone_of(model), unfreeze)
        compile_model(model, fit, p.loss, steps_per_epoch=1)
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])


GPU_DOC = (ROOT / "docs" / "gpu.md").read_text()
GPU_RECIPE = GPU_DOC.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")


def test_the_gpu_recipe_trains_the_whole_backbone_for_a_step():
    """docs/gpu.md's recipe: valid params, every backbone layer trainable in phase 2, and a
    finite loss after a step on a tiny sample (the CPU stand-in for the GPU run)."""
    from agegender.training.objective import compile_model

    args = shlex.split(GPU_RECIPE)
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "-S"]
    assert "model_b.phase2.unfreeze=all" in overrides
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for assignment in [*overrides, "model_b.weights=null", "model_b.head_init=random"]:
        set_dotted(raw, assignment)
    params: P.Params = P.build(P.Params, raw)  # type: ignore[assignment]
    assert params.train.mixed_precision and params.model_b.input_size == 224
    p = params.model_b
    model = build_model_b(p, 32, 0)
    backbone = backbone_of(model)
    unfreeze_top(backbone, p.phase2.unfreeze)
    import keras

    learning = [
        layer.trainable
        for layer in backbone.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert learning and all(learning)  # every conv layer of the backbone learns
    compile_model(model, p.phase2, p.loss, steps_per_epoch=1)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    y = {"age": np.full((2, 1), 30.0, "float32"), "gender": np.ones((2, 1), "float32")}
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
