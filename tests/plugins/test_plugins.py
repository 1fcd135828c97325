"""Third-party plugins are found through entry points; broken ones are reported, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_distributions import FAKE_MODEL_PLUGIN, make_distribution, segcli


@pytest.fixture
def site(tmp_path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(
        site, "segcli-fake-models", "fake_segcli_models", FAKE_MODEL_PLUGIN, "fake-models"
    )
    make_distribution(
        site,
        "segcli-broken",
        "broken_segcli_plugin",
        "raise ImportError('needs libfoo 9')\n",
        "broken",
    )
    return site


def test_third_party_model_appears_and_broken_plugin_is_reported(site):
    listed = segcli(site, "list", "models", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny-fake"]["distribution"] == "segcli-fake-models"
    assert "unet" in rows

    plugins = {p["name"]: p for p in json.loads(segcli(site, "plugins", "--json").stdout)}
    assert plugins["broken"]["status"] == "failed"
    assert "needs libfoo 9" in plugins["broken"]["error"]
    assert plugins["fake-models"]["registered"] == {"model": ["tiny-fake"]}
    for builtin in ("models", "losses", "metrics", "recipes", "shapes"):
        assert plugins[builtin]["distribution"] == "segcli"
        assert plugins[builtin]["status"] == "ok"


def test_commands_still_work_with_a_broken_plugin_installed(site, tmp_path):
    result = segcli(
        site, "prepare", "shapes", "--train", "4", "--val", "2", "--out", str(tmp_path / "s")
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s" / "dataset.json").is_file()


def test_disable_and_load_lists(site):
    disabled = json.loads(
        segcli(site, "plugins", "--json", SEGCLI_DISABLE_PLUGINS="fake-models,broken").stdout
    )
    assert {p["name"]: p["status"] for p in disabled}["fake-models"] == "disabled"
    only = segcli(site, "list", "models", "--json", SEGCLI_LOAD_PLUGINS="fake-models")
    assert [row["name"] for row in json.loads(only.stdout)] == ["tiny-fake"]


def test_a_hook_that_raises_is_isolated(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    source = """
    import segcli

    @segcli.hookimpl
    def register_models(register):
        register("half-registered", object(), "")
        raise RuntimeError("hook exploded")
    """
    make_distribution(site, "segcli-exploding", "exploding_plugin", source, "exploding")
    result = segcli(site, "plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["exploding"]["status"] == "failed"
    assert "hook exploded" in plugins["exploding"]["error"]
    models = json.loads(segcli(site, "list", "models", "--json").stdout)
    assert "half-registered" not in [m["name"] for m in models]


def test_a_name_registered_twice_fails_the_second_plugin(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    source = """
    import segcli

    @segcli.hookimpl
    def register_models(register):
        register("unet", "os:getcwd", "an impostor")
    """
    make_distribution(site, "segcli-impostor", "impostor_plugin", source, "zz-impostor")
    plugins = {p["name"]: p for p in json.loads(segcli(site, "plugins", "--json").stdout)}
    assert plugins["zz-impostor"]["status"] == "failed"
    assert "registered twice" in plugins["zz-impostor"]["error"]


IMPOSTOR = """
import segcli

@segcli.hookimpl
def register_models(register):
    register("impostor-net", "os:getcwd", "registered before the clash")
    register("unet", "os:getcwd", "an impostor")
"""


def test_a_plugin_sorting_before_the_built_ins_cannot_take_over_their_names(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-impostor", "aa_impostor_plugin", IMPOSTOR, "aa-impostor")
    plugins = {p["name"]: p for p in json.loads(segcli(site, "plugins", "--json").stdout)}
    assert plugins["models"]["status"] == "ok"
    assert "unet" in plugins["models"]["registered"]["model"]
    assert plugins["aa-impostor"]["status"] == "failed"
    error = plugins["aa-impostor"]["error"]
    assert "first by models (segcli 0.1.0), then by aa-impostor (segcli-impostor 1.2.3)" in error
    models = {m["name"]: m for m in json.loads(segcli(site, "list", "models", "--json").stdout)}
    assert models["unet"]["distribution"] == "segcli"
    assert "impostor-net" not in models
    table = segcli(site, "plugins", COLUMNS="250")
    assert "failed" in table.stdout and "registered twice" in table.stdout


def test_built_ins_load_first_then_third_party_plugins_by_name():
    from types import SimpleNamespace

    from segcli.plugins import _in_load_order

    def entry_point(name: str, dist: str) -> SimpleNamespace:
        found = SimpleNamespace(metadata={"Name": dist}, version="1")
        return SimpleNamespace(name=name, value=f"{name}_module", dist=found)

    points = [
        entry_point("zz", "segcli-z"),
        entry_point("models", "segcli"),
        entry_point("aa", "segcli-b"),
        entry_point("aa", "segcli-a"),
        entry_point("datasets", "segcli"),
    ]
    order = [(status.name, status.distribution) for _, status in _in_load_order(points)]
    assert order == [
        ("datasets", "segcli"),
        ("models", "segcli"),
        ("aa", "segcli-a"),
        ("aa", "segcli-b"),
        ("zz", "segcli-z"),
    ]


def test_a_third_party_plugin_reusing_a_built_in_plugin_name_fails_alone(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-other", "other_models_plugin", FAKE_MODEL_PLUGIN, "models")
    statuses = json.loads(segcli(site, "plugins", "--json").stdout)
    named_models = [s for s in statuses if s["name"] == "models"]
    assert [(s["distribution"], s["status"]) for s in named_models] == [
        ("segcli", "ok"),
        ("segcli-other", "failed"),
    ]
    assert "already taken by models (segcli 0.1.0)" in named_models[1]["error"]


def test_kinds_are_named_in_the_plural_everywhere(cli):
    listed = cli("list", "losses")
    assert listed.exit_code == 0 and "segcli losses" in listed.stdout
    shown = cli("plugins")
    assert shown.exit_code == 0 and "losses:" in shown.stdout
    for output in (listed.stdout, shown.stdout):
        assert "losss" not in output
    wrong = cli("list", "losss")
    kinds = (
        "datasets, models, losses, metrics, optimizers, schedulers, transforms, loggers, recipes"
    )
    assert wrong.exit_code == 2 and kinds in wrong.stderr


def test_factory_errors_that_are_not_segcli_errors_name_the_plugin():
    from segcli.building import ModelHead, build_model
    from segcli.config import build_config
    from segcli.data.format import ClassInfo, DatasetInfo
    from segcli.errors import ConfigError, PluginError
    from segcli.factories import call_factory
    from segcli.plugins import Plugins
    from segcli.registry import Origin

    def needs_a_backbone(num_classes, in_channels, depth=2):
        return {}["backbone"]

    def counts(num_classes, ignore_index):
        raise RuntimeError("libfoo crashed\nsecond line")

    plugins = Plugins()
    origin = Origin("third", "segcli-third", "2.0")
    plugins.models.add("needy", needs_a_backbone, "", origin)
    plugins.metrics.add("crashy", counts, "", origin)
    info = DatasetInfo("d", [ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (1, 1, 1))], {})
    head = ModelHead(2, single_logit=False)
    config = build_config({"model": {"name": "needy"}})
    with pytest.raises(
        PluginError,
        match=r"model 'needy' from plugin third \(segcli-third 2.0\) "
        r"failed: KeyError: 'backbone'",
    ):
        build_model(config, info, plugins, head)
    with pytest.raises(
        PluginError, match="metric 'crashy' .* RuntimeError: libfoo crashed"
    ) as error:
        call_factory(plugins.metrics, "crashy", 2, 255)
    assert "second line" not in str(error.value)
    plugins.models.add("typed", lambda num_classes, in_channels, depth=2: depth + 1, "", origin)
    wrong_options = build_config({"model": {"name": "typed", "depth": "deep"}})
    with pytest.raises(ConfigError, match="model 'typed' rejected its options"):
        build_model(wrong_options, info, plugins, head)


def test_a_factory_registered_as_none_is_a_plugin_error(tmp_path):
    from segcli.building import ModelHead, build_model
    from segcli.config import build_config
    from segcli.data.format import ClassInfo, DatasetInfo
    from segcli.errors import PluginError
    from segcli.plugins import Plugins
    from segcli.registry import Origin

    plugins = Plugins()
    plugins.models.add("nothing", None, "", Origin("hollow", "segcli-hollow", "0.1"))
    info = DatasetInfo("d", [ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (1, 1, 1))], {})
    config = build_config({"model": {"name": "nothing"}})
    with pytest.raises(
        PluginError,
        match=r"hollow \(segcli-hollow 0.1\) registered model "
        "'nothing' as None",
    ):
        build_model(config, info, plugins, ModelHead(2, single_logit=False))


CRASHING_PREPARER = """
import segcli

@segcli.hookimpl
def register_datasets(register):
    register("crashy", "crashy_segcli_dataset:prepare", "a preparer with a bug")

def prepare(raw):
    raise KeyError("labels.csv")
"""


def test_a_preparer_crash_is_a_plugin_error_naming_the_plugin(site, tmp_path):
    make_distribution(site, "segcli-crashy", "crashy_segcli_dataset", CRASHING_PREPARER, "crashy")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(b"")
    result = segcli(site, "prepare", "crashy", str(raw), "--out", str(tmp_path / "out"))
    assert result.returncode == 4, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "dataset 'crashy' from plugin crashy" in line and "KeyError" in line
    assert not (tmp_path / "out").exists()


FAKE_SCHEDULE_PLUGIN = """
import segcli

@segcli.hookimpl
def register_schedulers(register):
    register("halving", "fake_segcli_schedules:halving", "halve the learning rate every epoch")

@segcli.hookimpl
def register_optimizers(register):
    register("plain-sgd", "fake_segcli_schedules:plain_sgd", "SGD without momentum")

def halving(total_steps, steps_per_epoch, *, warmup_epochs=0.0):
    return lambda step: 0.5 ** (step // steps_per_epoch)

def plain_sgd(parameters, lr):
    import torch
    return torch.optim.SGD(parameters, lr=lr)
"""


def test_a_third_party_scheduler_and_optimizer_are_listed(site):
    make_distribution(
        site, "segcli-halving", "fake_segcli_schedules", FAKE_SCHEDULE_PLUGIN, "halving"
    )
    listed = segcli(site, "list", "schedulers", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["halving"]["distribution"] == "segcli-halving"
    shown = segcli(site, "plugins", "--json")
    status = next(s for s in json.loads(shown.stdout) if s["name"] == "halving")
    assert status["registered"] == {"optimizer": ["plain-sgd"], "scheduler": ["halving"]}
    assert status["hooks"] == ["register_optimizers", "register_schedulers"]
