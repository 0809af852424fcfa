"""Every recipe is a valid TrainConfig with the paper's beta (a typo in a YAML key fails here, not on a GPU)."""

from pathlib import Path

import pytest

from podisco.training.config import TrainConfig, load_config

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_loads_as_a_train_config(path):
    config = load_config(TrainConfig, path)
    config.validate()
    assert config.model and config.data.path and config.loss.beta == 0.05 and config.precision == "bf16"


def test_the_paper_recipes_keep_a_global_batch_of_128():
    lora = load_config(TrainConfig, RECIPES[0].parent / "zephyr-gemma-discovery-lora.yaml")
    assert lora.batch_size * lora.grad_accum == 128 and lora.lora.r > 0  # one GPU per candidate
    full = load_config(TrainConfig, RECIPES[0].parent / "zephyr-gemma-dpo.yaml")
    assert full.batch_size * full.grad_accum * 8 == 128 and full.optim.lr == 5e-7  # 8 GPUs, as in the paper
