"""The walking skeleton: prepare -> train -> predict --colorize -> visualize, through the CLI."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image


def test_prepare_writes_the_canonical_layout(shapes_dataset):
    info = json.loads((shapes_dataset / "dataset.json").read_text())
    assert info["format_version"] == 1
    assert info["splits"] == {"test": 4, "train": 48, "val": 16}
    assert info["labelled_splits"] == ["train", "val"]
    assert [c["name"] for c in info["classes"]] == ["background", "circle", "rectangle", "triangle"]
    assert info["ignore_index"] == 255
    assert sum(info["class_pixels"]["train"]) == 48 * 64 * 64
    mask = np.asarray(Image.open(next((shapes_dataset / "train" / "masks").iterdir())))
    assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) <= {0, 1, 2, 3}
    report = json.loads((shapes_dataset / "report.json").read_text())
    assert report["pairs"] == {"train": 48, "val": 16}
    lines = (shapes_dataset / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 68


def test_shapes_is_deterministic_from_its_seed(tmp_path):
    from segcli_shapes.generate import render

    from segcli.data.plan import Sample

    sample = Sample("train", "x", None, "generated", {"seed": 3, "index": 7, "size": 64})
    first, second = render(sample), render(sample)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_train_writes_a_reproducible_run(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {
        "config.toml",
        "command.txt",
        "environment.json",
        "metrics.jsonl",
        "metrics.csv",
        "best.safetensors",
        "last.safetensors",
        "summary.json",
    } <= names
    records = [
        json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    assert 0.0 <= records[-1]["confusion/miou"] <= 1.0
    from segcli.runs.checkpoint_file import load_checkpoint

    meta = load_checkpoint(trained_run / "best.safetensors").meta
    assert [c["name"] for c in meta["classes"]][1] == "circle"
    assert meta["config"]["recipe"] == "shapes-unet"
    assert "torch" in meta["environment"]


def test_train_prepares_shapes_when_missing_and_predicts_with_the_newest_run(
    cli, tmp_path, shapes_dataset
):
    result = cli(
        "train",
        "--plugin",
        "shapes-unet",
        "--set",
        "train.epochs=1",
        "--set",
        "train.workers=0",
        "--set",
        "input.size=[32,32]",
        "--set",
        "model.base_width=4",
        "--max-steps",
        "2",
        cwd=tmp_path,
    )
    assert result.exit_code == 0, result.stderr
    made = json.loads((tmp_path / "data" / "shapes" / "dataset.json").read_text())["preparer"]
    assert made["plugin"] == "shapes" and made["distribution"] == "segcli"
    images = tmp_path / "pictures"
    images.mkdir()
    sizes = {"a.png": (64, 64), "b.jpg": (50, 37)}
    source = sorted((shapes_dataset / "test" / "images").iterdir())
    for (name, size), path in zip(sizes.items(), source, strict=False):
        Image.open(path).convert("RGB").resize(size).save(images / name)
    Image.open(source[2]).convert("L").save(images / "grey.png")
    sizes["grey.png"] = (64, 64)
    [run] = (tmp_path / "runs").iterdir()
    killed = tmp_path / "runs" / "99999999-999999-killed-before-its-first-checkpoint"
    killed.mkdir()
    (killed / "config.toml").write_text((run / "config.toml").read_text())
    result = cli("predict", "--colorize", str(images), cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "pictures-pred"
    for name, size in sizes.items():
        stem = name.rsplit(".", 1)[0]
        mask = Image.open(out / f"{stem}.png")
        color = Image.open(out / f"{stem}.color.png")
        assert mask.size == size and mask.mode == "L"
        assert color.size == size and color.mode == "RGB"
        assert set(np.unique(np.asarray(mask))) <= {0, 1, 2, 3}


def test_print_config_shows_the_resolved_configuration(cli, tmp_path):
    result = cli(
        "train", "--plugin", "shapes-unet", "--set", "train.lr=0.5", "--print-config", cwd=tmp_path
    )
    assert result.exit_code == 0
    assert "lr = 0.5" in result.stdout and 'recipe = "shapes-unet"' in result.stdout
    assert not (tmp_path / "runs").exists()


def test_config_file_from_a_run_repeats_it(cli, trained_run, tmp_path):
    result = cli(
        "train", "--config", str(trained_run / "config.toml"), "--print-config", cwd=tmp_path
    )
    assert result.exit_code == 0
    assert (trained_run / "config.toml").read_text() == result.stdout


def test_visualize_samples_writes_a_grid_with_a_legend(cli, shapes_dataset, tmp_path):
    out = tmp_path / "grid.png"
    result = cli("visualize", "samples", str(shapes_dataset), "--count", "3", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[0] > 3 * 64 and picture.shape[1] > 2 * 64
    assert picture.std() > 10  # not blank
    palette_red = (picture == np.array([230, 25, 75])).all(-1).sum()
    assert palette_red > 0  # the circle colour appears (legend swatch at least)
