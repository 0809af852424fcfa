"""Config dataclasses: YAML round trip, type-checked overrides, validation naming the key."""

from __future__ import annotations

import pytest

from podisco.training.config import ConfigError, TrainConfig, load_config, override, save_yaml


def test_yaml_round_trip_and_overrides(tmp_path):
    config = TrainConfig(model="m")
    config.loss.beta = 0.05
    config.optim.adam_betas = (0.9, 0.95)
    path = tmp_path / "c.yaml"
    save_yaml(config, path)
    loaded = load_config(
        TrainConfig, path, ["optim.lr=1e-5", "batch_size=4", "loss.tau=0.1", "gradient_checkpointing=true"]
    )
    assert loaded.model == "m" and loaded.loss.beta == 0.05 and loaded.optim.adam_betas == (0.9, 0.95)
    assert loaded.optim.lr == 1e-5 and loaded.batch_size == 4 and loaded.gradient_checkpointing is True
    assert loaded.loss.params() == {"tau": 0.1}


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("batch_size=four", "batch_size: expected an integer"),
        ("batch_size=2.5", "batch_size: expected an integer"),
        ("optim.lr=fast", "optim.lr: expected a number"),
        ("optim.lrr=1", "optim.lrr: unknown key"),
        ("gradient_checkpointing=maybe", "gradient_checkpointing: expected true or false"),
        ("optim.adam_betas=0.9", "optim.adam_betas: expected 2 comma-separated values"),
        ("optim=3", "optim: expected a mapping"),
        ("nonsense", "is not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ConfigError, match=message):
        override(TrainConfig(), assignment)


@pytest.mark.parametrize(
    ("assignment", "key"),
    [("loss.beta=-0.1", "loss.beta"), ("optim.schedule=step", "optim.schedule"), ("data.layout=x", "data.layout")],
)
def test_validation_names_the_key(assignment, key):
    config = override(TrainConfig(), assignment)
    with pytest.raises(ConfigError, match=key):
        config.validate()


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(TrainConfig, path)
