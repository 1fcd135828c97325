"""Planners are plugins: `--planner NAME` picks one, the `default` one is segcli's rules, and the
plugins a planner needs are named before anything is planned, measured or trained."""

from __future__ import annotations

import json
import textwrap
import tomllib

import pytest

from segcli.plugins import reset_plugins

FAKE_PLANNER_PLUGIN = """
import segcli
from segcli.planning import Plan, requirements


@segcli.hookimpl
def register_planners(register):
    register("tiny", "fake_segcli_planner:plan", "a fixed 32 px U-Net")
    register("needs-smp", "fake_segcli_planner:plan_with_smp", "plans an smp model")
    register("careless", "fake_segcli_planner:not_a_plan", "returns a dict")


def plan(fingerprint, hardware, budget_seconds, *, timer=None):
    layer = {
        "model": {"name": "unet", "base_width": 4, "depth": 2},
        "input": {"size": [32, 32]},
        "loss": {"name": "ce"},
        "train": {"max_time": budget_seconds, "workers": 0, "batch_size": 4},
    }
    reasons = {
        "model.name": "tiny: the smallest U-Net there is",
        "input.size": f"tiny: 32 px whatever the {fingerprint.height.median:.0f} px images",
        "loss.name": "tiny: cross-entropy",
    }
    return Plan(layer, reasons, {"planned_by": "tiny"})


plan.needs = requirements("models", "segcli", model=["unet"]) + requirements(
    "losses", "segcli", loss=["ce"]
)


def plan_with_smp(fingerprint, hardware, budget_seconds, *, timer=None):
    raise AssertionError("never called: segcli-smp is not installed")


plan_with_smp.needs = requirements("smp", "segcli-smp", model=["smp-unet", "smp-fpn"])


def not_a_plan(fingerprint, hardware, budget_seconds, *, timer=None):
    return {"model": {"name": "unet"}}
"""


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Plugins loaded again for this test (environment or sys.path changed), and after it."""
    reset_plugins()
    yield monkeypatch
    reset_plugins()


@pytest.fixture
def third_party_planner(tmp_path, fresh_plugins) -> None:
    """An installed distribution `segcli-tiny-planner` whose entry point registers planners."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fake_segcli_planner.py").write_text(textwrap.dedent(FAKE_PLANNER_PLUGIN))
    info = site / "segcli_tiny_planner-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: segcli-tiny-planner\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("[segcli]\ntiny-planner = fake_segcli_planner\n")
    fresh_plugins.syspath_prepend(str(site))


def test_the_default_planner_is_a_built_in_plugin(cli):
    result = cli("list", "planners", "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["name"] == "default"
    assert row["plugin"].startswith("planners")
    shown = json.loads(cli("plugins", "--json").stdout)
    assert {p["name"]: p["registered"] for p in shown}["planners"] == {"planner": ["default"]}


def test_a_third_party_planner_replaces_the_default(
    cli, shapes_dataset, tmp_path, third_party_planner
):
    listed = json.loads(cli("list", "planners", "--json").stdout)
    assert [row["name"] for row in listed] == ["careless", "default", "needs-smp", "tiny"]
    shown = cli("train", "--data", shapes_dataset, "--planner", "tiny", "--print-config")
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.startswith("# planned by segcli's 'tiny' planner")
    assert "# tiny: 32 px whatever the 64 px images" in shown.stdout
    assert tomllib.loads(shown.stdout)["input"]["size"] == [32, 32]

    trained = cli(
        "train", "--data", shapes_dataset, "--planner", "tiny", "--max-steps", "1", cwd=tmp_path
    )
    assert trained.exit_code == 0, trained.stderr
    (run,) = (tmp_path / "runs").iterdir()
    record = json.loads((run / "plan.json").read_text())
    assert record["planner"] == "tiny"
    assert record["estimates"] == {"planned_by": "tiny"}
    assert record["reasons"]["loss.name"] == "tiny: cross-entropy"
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["model"]["options"]["base_width"] == 4


def test_disabled_models_plugin_is_named_before_planning(
    cli, shapes_dataset, tmp_path, fresh_plugins
):
    fresh_plugins.setenv("SEGCLI_DISABLE_PLUGINS", "models")
    result = cli("train", "--data", shapes_dataset, "--time", "1m", cwd=tmp_path)
    assert result.exit_code == 4
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "error: planner 'default' needs model 'unet', model 'unet-resnet' of plugin 'models', "
        "which is disabled ("
    )
    assert "leave 'models' out of SEGCLI_DISABLE_PLUGINS" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing measured, no run folder


def test_a_planner_needing_an_uninstalled_plugin_says_what_to_install(
    cli, shapes_dataset, third_party_planner
):
    result = cli("train", "--data", shapes_dataset, "--planner", "needs-smp", "--print-config")
    assert result.exit_code == 4
    assert result.stderr.startswith(
        "error: planner 'needs-smp' needs model 'smp-unet', model 'smp-fpn' of plugin 'smp', "
        "which is not installed (install segcli-smp, or choose another planner"
    )


def test_a_planner_returning_no_plan_is_the_plugin_s_error(
    cli, shapes_dataset, third_party_planner
):
    result = cli("train", "--data", shapes_dataset, "--planner", "careless", "--print-config")
    assert result.exit_code == 4
    assert "planner 'careless' returned dict, not a segcli.planning.Plan" in result.stderr


def test_unknown_planner_is_refused_like_an_unknown_model(cli, shapes_dataset):
    result = cli("train", "--data", shapes_dataset, "--planner", "defualt", "--print-config")
    assert result.exit_code == 2  # as `--set model.name=unnet`: an unknown name
    assert result.stderr.startswith(
        "error: unknown planner 'defualt'; did you mean 'default'? Valid planners: default"
    )


def test_planner_only_plans_data_runs(cli, shapes_dataset):
    result = cli("train", "--plugin", "shapes-unet", "--planner", "default", "--print-config")
    assert result.exit_code == 2
    assert "--planner plans a --data run" in result.stderr


def test_planner_names_complete():
    from segcli.cli import completion

    assert [name for name, _ in completion.planners("de")] == ["default"]


def test_a_recipe_naming_a_disabled_plugin_names_it(cli, shapes_dataset, tmp_path, fresh_plugins):
    fresh_plugins.setenv("SEGCLI_DISABLE_PLUGINS", "models")
    result = cli(
        "train", "--plugin", "shapes-unet", "--data", shapes_dataset, "--max-steps", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "unknown model 'unet'" in result.stderr
    assert result.stderr.rstrip().endswith("plugins not loaded: models (disabled)")
