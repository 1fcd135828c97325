import re
import tomllib

import pytest

from segcli.config import RunConfig, build_config, parse_override, to_toml
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


AWKWARD = [
    'dataset.path="raw\\nimages\\there \\"quoted\\" back\\\\slash é"',
    "loss.dice.smooth=0.5",  # an option key with a dot
    'loss.options.note="tab\\there"',
    "model.caption='''two\nlines'''",
    'runs_dir="control\\u0001char"',
    "input.size=[32,48]",
    "metrics=['confusion','binary']",
]


def test_awkward_values_round_trip_exactly_through_a_file(tmp_path):
    config = build_config({"model": {"name": "unet", "depth": 2}}, overrides=AWKWARD)
    assert config.loss.options == {"dice.smooth": 0.5, "note": "tab\there"}
    file = tmp_path / "config.toml"
    file.write_text(to_toml(config))
    again = build_config(config_file=file)
    assert again.to_dict() == config.to_dict()
    assert again.loss.options == {"dice.smooth": 0.5, "note": "tab\there"}
    assert again.dataset.path == 'raw\nimages\there "quoted" back\\slash é'


def test_print_config_fed_back_gives_the_same_config(cli, tmp_path):
    args = ["--plugin", "shapes-unet", *(f"--set={o}" for o in AWKWARD)]
    printed = cli("train", *args, "--print-config", cwd=tmp_path)
    assert printed.exit_code == 0, printed.stderr
    file = tmp_path / "printed.toml"
    file.write_text(printed.stdout)
    again = cli("train", "--config", file, "--print-config", cwd=tmp_path)
    assert again.exit_code == 0, again.stderr
    assert again.stdout == printed.stdout
    assert build_config(config_file=file).loss.options["dice.smooth"] == 0.5


def test_an_option_set_to_none_goes_back_to_the_factory_default():
    config = build_config({"model": {"name": "unet", "depth": 3}}, overrides=["model.depth=none"])
    assert config.model.options == {}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown configuration key 'train.epoch'"),
        ("train.epochs=many", "train.epochs must be int"),
        ("nosuch.key=1", "unknown configuration key 'nosuch'"),
        ("train.lr", "not of the form key=value"),
        ("train.lr.x=1", "'train.lr' is a value, not a table"),
        ("train=3", "train must be a table"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config(overrides=[override])


# (override, what the message must say about the valid values)
BAD_VALUES = [
    ("input.size=[0,-5]", "[height, width], a list of 2 ints >= 1"),
    ("input.size=[32,32,3]", "a list of 2 ints"),
    ("input.size=[32]", "a list of 2 ints"),
    ("input.size=32", "[height, width], a list of"),
    ("train.batch_size=0", "int >= 1"),
    ("train.batch_size=2.5", "int >= 1"),
    ("train.lr=-1", "float >= 0"),
    ("train.lr=none", "float >= 0"),
    ("train.epochs=0", "int >= 1"),
    ("train.epochs=true", "int >= 1"),
    ("train.amp=fp8", "one of: off, bf16, fp16"),
    ("train.monitor=confuson/miou", "one of: train/loss, val/loss, confusion/<key>"),
    ("train.monitor_mode=maximum", "one of: max, min"),
    ("train.post_process_guard=['tgs/score']", "a list of: confusion/<key>"),
    ("train.device=gpu", "auto, cpu, mps, cuda or cuda:N"),
    ("train.device=cuda:x", "auto, cpu, mps, cuda or cuda:N"),
    ("train.workers=-1", "int >= 0"),
    ("train.accumulate=0", "int >= 1"),
    ("train.ema=1.0", "float >= 0 and < 1"),
    ("train.val_every=0", "int >= 1"),
    ("train.log_every=0", "int >= 1"),
    ("train.clip_grad=-1", "float >= 0"),
    ("train.early_stop_patience=-1", "int >= 0"),
    ("train.seed=-1", "int >= 0"),
    ("train.threshold=1.5", "float > 0 and < 1"),
    ("train.deterministic=1", "true or false"),
    ("input.std=[0.2,0,0.2]", "a non-empty list of floats > 0"),
    ("input.mean=[0.5]", "a list of 1 float > 0, one per value of input.mean"),
    ("input.mean=[]", "a non-empty list of floats"),
    ("metrics=['confusion','confusion']", "distinct names"),
    ("dataset.name=''", "a non-empty string"),
    ("runs_dir=''", "a non-empty string"),
    ("model.options=3", "a table"),
    ("train.optimizer.options=3", "a table"),
    ("train.scheduler.name=''", "a non-empty string"),
]


@pytest.mark.parametrize("override, expects", BAD_VALUES)
def test_every_bad_value_is_one_line_naming_key_value_source_and_valid_values(override, expects):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError) as caught:
        build_config(overrides=[override])
    message = str(caught.value)
    assert "\n" not in message
    # a mean of one value leaves the default std of three: std is the key to change
    std_too = override == "input.mean=[0.5]"
    reported_key = "input.std" if std_too else key
    assert message.startswith(f"{reported_key} must be "), message
    assert expects in message
    source = "defaults" if std_too else f"--set {override}"
    assert f"(from {source})" in message


def test_an_error_names_the_layer_it_came_from(tmp_path):
    with pytest.raises(ConfigError, match=r"train.lr must be float >= 0, got -1 \(from recipe\)"):
        build_config({"train": {"lr": -1}})
    file = tmp_path / "c.toml"
    file.write_text("[input]\nsize = [32]\n")
    with pytest.raises(ConfigError, match=rf"got \[32\] \(from {file}\)"):
        build_config(config_file=file)


def test_a_later_layer_can_fix_an_earlier_one():
    config = build_config({"train": {"lr": -1}}, overrides=["train.lr=0.1"])
    assert config.train.lr == 0.1


def test_python_recipes_may_use_tuples():
    config = build_config(
        {"input": {"size": (64, 32)}, "augment": {"scale": {"range": (0.5, 2.0)}}}
    )
    assert config.input.size == [64, 32]
    assert config.augment == {"scale": {"range": (0.5, 2.0)}}


def test_values_are_read_as_toml():
    assert parse_override("a.b=1e-3") == ("a.b", 0.001)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=unet") == ("a.b", "unet")
    assert parse_override("a.b=none") == ("a.b", None)


def test_monitor_of_a_chosen_metric_or_a_loss_is_accepted():
    assert build_config(overrides=["train.monitor=val/loss"]).train.monitor == "val/loss"
    config = build_config(overrides=["metrics=['binary']", "train.monitor=binary/iou"])
    assert config.train.monitor == "binary/iou"


def test_print_config_validates_too(cli, tmp_path):
    result = cli(
        "train",
        "--plugin",
        "shapes-unet",
        "--set",
        "input.size=[32]",
        "--print-config",
        cwd=tmp_path,
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error: input.size must be [height, width], a list of 2 ints" in result.stderr


def test_components_take_a_name_and_their_options():
    config = build_config(
        {"train": {"optimizer": {"name": "sgd", "momentum": 0.5}, "scheduler": "poly"}},
        overrides=["train.scheduler.power=2.0", "train.optimizer.weight_decay=1e-4"],
    )
    assert config.train.optimizer.name == "sgd"
    assert config.train.optimizer.options == {"momentum": 0.5, "weight_decay": 1e-4}
    assert config.train.scheduler.name == "poly"
    assert config.train.scheduler.options == {"power": 2.0}


def test_naming_another_component_drops_the_options_of_the_first():
    recipe = {"train": {"scheduler": {"name": "poly", "power": 2.0}}}
    config = build_config(recipe, overrides=["train.scheduler=cosine"])
    assert config.train.scheduler.name == "cosine"
    assert config.train.scheduler.options == {}
    same = build_config(recipe, overrides=["train.scheduler.name=poly"])
    assert same.train.scheduler.options == {"power": 2.0}


def test_augment_is_an_ordered_pipeline_edited_by_set():
    recipe = {"augment": {"scale": {"range": [0.5, 2.0]}, "hflip": {"p": 0.5}}}
    config = build_config(
        recipe,
        overrides=[
            "augment.rotate.degrees=15",
            "augment.hflip=none",
            "augment.scale.range=[0.8,1.2]",
        ],
    )
    assert list(config.augment) == ["scale", "rotate"]
    assert config.augment == {"scale": {"range": [0.8, 1.2]}, "rotate": {"degrees": 15}}
    assert build_config().augment == {"hflip": {"p": 0.5}}
    assert build_config(overrides=["augment=none"]).augment == {}


def test_an_empty_augment_pipeline_round_trips(tmp_path):
    config = build_config(overrides=["augment=none", "train.scheduler=step"])
    file = tmp_path / "config.toml"
    file.write_text(to_toml(config))
    again = build_config(config_file=file)
    assert again.augment == {} and again == config


def test_a_transform_must_be_given_a_table():
    with pytest.raises(ConfigError, match="augment.blur must be a table of options or none"):
        build_config(overrides=["augment.blur=3"])


# The pre-release layouts (flat optimiser and schedule keys, augment probabilities, the
# tensorboard switch) are not read any more: each is refused like any unknown key.
PRE_RELEASE_KEYS = [
    ("train.momentum=0.5", "unknown configuration key 'train.momentum'"),
    ("train.poly_power=2.0", "unknown configuration key 'train.poly_power'"),
    ("log.tensorboard=true", "unknown configuration key 'log.tensorboard'"),
    ("augment.hflip=0.5", "augment.hflip must be a table of options or none"),
]


@pytest.mark.parametrize("override, expects", PRE_RELEASE_KEYS)
def test_a_pre_release_key_is_refused_not_upgraded(override, expects):
    with pytest.raises(ConfigError, match=re.escape(expects)):
        build_config(overrides=[override])


def test_a_pre_release_config_file_is_refused_naming_the_key(tmp_path):
    file = tmp_path / "config.toml"
    file.write_text('[train]\noptimizer = "sgd"\nmomentum = 0.8\n')
    with pytest.raises(ConfigError, match=r"unknown configuration key 'train.momentum' \(from "):
        build_config(config_file=file)


def test_naming_another_model_or_loss_drops_the_options_given_for_the_old_one():
    from segcli_recipes import SHAPES_UNET

    recipe = {**SHAPES_UNET, "model": {**SHAPES_UNET["model"], "backbone_weights": "b.pt"}}
    for overrides in (["model.name=tiny", "model.width=16"], ["model={name='tiny', width=16}"]):
        config = build_config(recipe, overrides=overrides)
        assert (config.model.name, config.model.options) == ("tiny", {"width": 16}), overrides
        assert config.model.backbone_weights == "b.pt"  # weights are not the old model's options
    assert build_config(recipe, overrides=["model=tiny"]).model.options == {}
    same = build_config(recipe, overrides=["model.name=unet"])
    assert same.model.options == {"depth": 3, "base_width": 16}
    default_name = build_config({"model": {"depth": 3}}, overrides=["model.name=unet"])
    assert default_name.model.options == {"depth": 3}
    loss = build_config(
        {"loss": {"name": "ce", "weight": [1.0, 2.0]}}, overrides=["loss.name=dice"]
    )
    assert loss.loss.options == {}
    scheduler = build_config(
        {"train": {"scheduler": {"name": "poly", "power": 2.0}}},
        overrides=["train.scheduler.name=cosine"],
    )
    assert scheduler.train.scheduler.options == {}


def test_set_model_name_on_a_recipe_builds_the_new_model_without_the_old_options(
    shapes_dataset,
):
    from segcli_recipes import SHAPES_UNET
    from torch import nn

    from segcli.building import build_model
    from segcli.data.format import read_dataset_info
    from segcli.plugins import get_plugins
    from segcli.registry import Origin

    def tiny(num_classes: int, in_channels: int = 3, *, width: int = 8) -> nn.Module:
        return nn.Conv2d(in_channels, num_classes, 1, bias=width > 0)

    plugins = get_plugins()
    plugins.models.add("tiny", tiny, "", Origin("test", "segcli-test", "0.1"))
    try:
        config = build_config(SHAPES_UNET, overrides=["model.name=tiny", "model.width=16"])
        model = build_model(config, read_dataset_info(shapes_dataset), plugins)
    finally:
        plugins.models.remove_from("test")
    assert isinstance(model, nn.Conv2d)


def test_a_saved_configuration_with_every_optional_key_unset_reads_back():
    # checkpoints store the configuration as JSON, where an unset key is an explicit null
    saved = build_config().to_dict()
    assert saved["train"]["max_time"] is None
    assert RunConfig.model_validate(saved) == build_config()
