"""`segcli train --data DIR`: a planned training, or a recipe, on a prepared dataset."""

from __future__ import annotations

import json
import tomllib

from segcli.config import build_config

TINY = ["--set", "model.base_width=4", "--set", "input.size=[32,32]", "--set", "train.workers=0"]


def test_print_config_shows_the_plan_with_reasons_and_creates_nothing(
    cli, shapes_dataset, tmp_path
):
    result = cli("train", "--data", shapes_dataset, "--print-config", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    loss = next(line for line in lines if line.startswith("name = ") and "dice" in line)
    assert "# " in loss and "rare class" in loss  # shapes: three classes under 10 %
    assert any(line.startswith("max_time = 600.0") and "the default" in line for line in lines)
    parsed = tomllib.loads(result.stdout)  # the printed plan is a valid --config file
    assert parsed["dataset"]["path"] == str(shapes_dataset)
    assert parsed["model"]["name"] == "unet" and parsed["model"]["options"]["depth"] == 3
    assert list(tmp_path.iterdir()) == []


def test_set_and_time_beat_the_plan(cli, shapes_dataset, tmp_path):
    result = cli(
        "train",
        "--data",
        shapes_dataset,
        "--set",
        "model.depth=2",
        "--set",
        "train.max_time=30s",
        "--print-config",
        cwd=tmp_path,
    )
    assert result.exit_code == 0, result.stderr
    depth = next(line for line in result.stdout.splitlines() if line.startswith("depth ="))
    assert depth.startswith("depth = 2  # from --set model.depth=2 (planned: ")
    parsed = tomllib.loads(result.stdout)
    assert parsed["train"]["max_time"] == 30.0
    assert "(30s)" in next(line for line in result.stdout.splitlines() if "max_time" in line)


def test_a_config_file_overrides_the_plan(cli, shapes_dataset, tmp_path):
    (tmp_path / "mine.toml").write_text('[train]\nlr = 0.01\n[loss]\nname = "ce"\n')
    result = cli(
        "train", "--data", shapes_dataset, "--config", tmp_path / "mine.toml", "--print-config"
    )
    assert result.exit_code == 0, result.stderr
    parsed = tomllib.loads(result.stdout)
    assert parsed["train"]["lr"] == 0.01 and parsed["loss"]["name"] == "ce"
    assert parsed["model"]["options"]["depth"] == 3  # the rest is still planned


def test_train_data_trains_with_the_plan_and_keeps_it_in_a_run_named_after_it(
    cli, shapes_dataset, tmp_path
):
    result = cli(
        "train",
        "--data",
        shapes_dataset,
        "--max-steps",
        "2",
        "--time",
        "2m",
        "--set",
        "train.lr=0.01",
        *TINY,
        cwd=tmp_path,
    )
    assert result.exit_code == 0, result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("shapes-unet-")
    record = json.loads((run / "plan.json").read_text())
    assert record["layer"]["model"]["name"] == "unet"
    assert record["reasons"]["loss.name"]
    assert record["overridden"]["train.lr"] == "--set train.lr=0.01"
    assert "train.max_time" not in record["overridden"]  # --time gives the plan its budget
    assert record["layer"]["train"]["max_time"] == 120.0
    assert record["hardware"]["device"] == "cpu"
    config = build_config(config_file=run / "config.toml")
    assert config.dataset.path == str(shapes_dataset) and config.train.lr == 0.01
    assert (run / "best.safetensors").is_file()


def test_plugin_with_data_trains_the_recipe_on_that_dataset(cli, shapes_dataset, tmp_path):
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "dataset.json").write_text(
        json.dumps({**json.loads((shapes_dataset / "dataset.json").read_text()), "name": "mine"})
    )
    result = cli("train", "--plugin", "shapes-unet", "--data", copy, "--print-config")
    assert result.exit_code == 0, result.stderr
    parsed = tomllib.loads(result.stdout)
    assert parsed["dataset"] == {**parsed["dataset"], "name": "mine", "path": str(copy)}
    assert parsed["recipe"] == "shapes-unet"
    assert parsed["input"]["size"] == [64, 64]  # the recipe's, not a plan's


def test_data_that_is_not_a_prepared_dataset_is_one_line_with_the_prepare_hint(cli, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for folder in (raw, tmp_path / "missing"):
        result = cli("train", "--data", folder, "--print-config")
        assert result.exit_code == 3
        assert "segcli prepare" in result.stderr and "--data" in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2  # the error and its hint
        assert str(folder) in result.stderr


def test_data_with_resume_is_refused(cli, shapes_dataset, tmp_path):
    result = cli("train", "--resume", tmp_path, "--data", shapes_dataset)
    assert result.exit_code == 2 and "--data" in result.stderr


def test_print_config_with_resume_is_refused_not_trained(cli, tmp_path):
    result = cli("train", "--resume", tmp_path, "--print-config")
    assert result.exit_code == 2 and "config.toml" in result.stderr


def test_a_plan_without_a_budget_is_refused(cli, shapes_dataset):
    result = cli("train", "--data", shapes_dataset, "--set", "train.max_time=none")
    assert result.exit_code == 2 and "time budget" in result.stderr
