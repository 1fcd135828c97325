import pytest
import tomllib

from segcli.config import build_config, parse_override, to_toml
from segcli.errors import ConfigError


def test_layers_apply_in_order(tmp_path):
    recipe = {"train": {"epochs": 3, "lr": 0.1}, "model": {"name": "unet", "depth": 3}}
    file = tmp_path / "c.toml"
    file.write_text("[train]\nepochs = 5\n")
    config = build_config(recipe, file, ["train.lr=0.5", "model.base_width=4"])
    assert config.train.epochs == 5
    assert config.train.lr == 0.5
    assert config.model.options == {"depth": 3, "base_width": 4}


def test_resolved_config_round_trips_through_toml():
    config = build_config({"model": {"name": "unet", "depth": 2}}, overrides=["input.size=[32,48]"])
    assert build_config(tomllib.loads(to_toml(config))) == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown configuration key 'train.epoch'"),
        ("train.epochs=many", "train.epochs must be int"),
        ("nosuch.key=1", "unknown configuration key 'nosuch'"),
        ("train.lr", "not of the form key=value"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config(overrides=[override])


def test_values_are_read_as_toml():
    assert parse_override("a.b=1e-3") == ("a.b", 0.001)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=unet") == ("a.b", "unet")
    assert parse_override("a.b=none") == ("a.b", None)
