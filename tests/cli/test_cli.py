"""Every expected error is one line on stderr with its documented exit code, and leaves nothing."""

from __future__ import annotations

import json

import pytest

from segcli.errors import Interrupted


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    return lines[0]


def test_unknown_recipe_lists_valid_names(cli, tmp_path):
    result = cli("train", "--plugin", "shapes-unte", cwd=tmp_path)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "did you mean 'shapes-unet'" in line
    assert not (tmp_path / "runs").exists()


def test_unknown_dataset_is_a_usage_error(cli, tmp_path):
    result = cli("prepare", "no-such-dataset", str(tmp_path), cwd=tmp_path)
    assert result.exit_code == 2
    assert "unknown dataset 'no-such-dataset'" in one_error_line(result.stderr)


def test_unknown_model_from_set(cli, tmp_path, shapes_dataset):
    result = cli(
        "train",
        "--plugin",
        "shapes-unet",
        "--set",
        f"dataset.path={shapes_dataset}",
        "--set",
        "model.name=resnet-magic",
        cwd=tmp_path,
    )
    assert result.exit_code == 2
    assert "unknown model 'resnet-magic'" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown configuration key 'train.epoch'"),
        ("train.epochs=lots", "must be int"),
    ],
)
def test_bad_set_values(cli, tmp_path, override, message):
    result = cli("train", "--plugin", "shapes-unet", "--set", override, cwd=tmp_path)
    assert result.exit_code == 2
    assert message in one_error_line(result.stderr)


def test_unknown_model_option_lists_valid_options(cli, tmp_path, shapes_dataset):
    result = cli(
        "train",
        "--plugin",
        "shapes-unet",
        "--set",
        f"dataset.path={shapes_dataset}",
        "--set",
        "model.widht=3",
        cwd=tmp_path,
    )
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "no option 'widht'" in line and "base_width" in line
    assert not (tmp_path / "runs").exists()


def test_training_an_unprepared_dataset_says_which_prepare_to_run(cli, tmp_path):
    from segcli.plugins import get_plugins

    if "isbi2012" not in get_plugins().datasets:
        pytest.skip("dataset plugins not installed")
    result = cli(
        "train",
        "--plugin",
        "shapes-unet",
        "--set",
        "dataset.name=isbi2012",
        "--set",
        f"dataset.path={tmp_path / 'isbi'}",
        cwd=tmp_path,
    )
    assert result.exit_code == 3
    assert f"segcli prepare isbi2012 PATH/TO/RAW --out {tmp_path / 'isbi'}" in one_error_line(
        result.stderr
    )
    assert not (tmp_path / "runs").exists()


def test_missing_raw_folder(cli, tmp_path):
    from segcli.plugins import get_plugins

    if "tgs-salt" not in get_plugins().datasets:
        pytest.skip("dataset plugins not installed")
    result = cli("prepare", "tgs-salt", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 3
    assert "does not exist" in one_error_line(result.stderr)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(cli, tmp_path):
    out = tmp_path / "shapes"
    assert cli("prepare", "shapes", "--train", "3", "--val", "1", "--out", str(out)).exit_code == 0
    before = (out / "dataset.json").read_text()
    result = cli("prepare", "shapes", "--train", "5", "--val", "1", "--out", str(out))
    assert result.exit_code == 6
    assert "already exists" in one_error_line(result.stderr)
    assert (out / "dataset.json").read_text() == before
    assert (
        cli(
            "prepare", "shapes", "--train", "5", "--val", "1", "--out", str(out), "--force"
        ).exit_code
        == 0
    )
    assert '"train": 5' in (out / "dataset.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]


def test_unwritable_output_is_an_output_error(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("prepare", "shapes", "--train", "3", "--val", "1", "--out", str(blocker / "s"))
    assert result.exit_code == 6
    assert f"{blocker} is a file, not a folder" in one_error_line(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_unwritable_prediction_folder(cli, tmp_path, trained_run, shapes_dataset):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    images = shapes_dataset / "test" / "images"
    result = cli(
        "predict", str(images), "--checkpoint", str(trained_run), "--out", str(blocker / "out")
    )
    assert result.exit_code == 6
    one_error_line(result.stderr)


def test_predict_missing_checkpoint(cli, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / "a.png")
    result = cli("predict", str(images), "--checkpoint", str(tmp_path / "none.safetensors"))
    assert result.exit_code == 5
    assert "does not exist" in one_error_line(result.stderr)
    result = cli("predict", str(images), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 5
    assert "no training runs" in one_error_line(result.stderr)
    assert not (tmp_path / "images-pred").exists()


def test_predict_corrupt_checkpoint(cli, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / "a.png")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    result = cli("predict", str(images), "--checkpoint", str(bad), "--out", str(tmp_path / "out"))
    assert result.exit_code == 5
    assert "corrupt" in one_error_line(result.stderr)


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_predict_bad_input_folder(cli, tmp_path, trained_run, kind):
    folder = tmp_path / "in"
    if kind == "empty":
        folder.mkdir()
    result = cli("predict", str(folder), "--checkpoint", str(trained_run))
    assert result.exit_code == 3
    one_error_line(result.stderr)
    assert not (tmp_path / "in-pred").exists()


def test_predict_reports_a_corrupt_image_and_finishes_the_rest(
    cli, tmp_path, trained_run, shapes_dataset
):
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    for image in sorted((shapes_dataset / "test" / "images").iterdir())[:2]:
        shutil.copy(image, folder / image.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = cli(
        "predict", str(folder), "--checkpoint", str(trained_run), "--out", str(tmp_path / "out")
    )
    assert result.exit_code == 8
    assert "broken.png" in result.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


def test_debug_shows_the_traceback_and_keeps_the_exit_code(cli, tmp_path):
    result = cli("--debug", "train", "--plugin", "nope", cwd=tmp_path)
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "UnknownNameError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown recipe 'nope'")


@pytest.mark.parametrize(
    "raised, message",
    [
        (KeyboardInterrupt(), "error: interrupted; finished files were kept"),
        (Interrupted("interrupted; last checkpoint kept at R"), "error: interrupted; last"),
    ],
)
def test_ctrl_c_is_one_line_and_exit_130(cli, tmp_path, monkeypatch, raised, message):
    import segcli.training.fit

    def interrupted_fit(*args, **kwargs):
        raise raised

    monkeypatch.setattr(segcli.training.fit, "fit", interrupted_fit)
    result = cli("train", "--plugin", "shapes-unet", cwd=tmp_path)
    assert result.exit_code == 130
    assert one_error_line(result.stderr).startswith(message)


def test_usage_errors_and_help_keep_their_exit_codes(cli, tmp_path):
    result = cli("train", "--no-such-option", cwd=tmp_path)
    assert result.exit_code == 2 and "No such option" in result.stderr
    result = cli("train", "--help", cwd=tmp_path)
    assert result.exit_code == 0 and "--runs-dir" in result.stdout


TINY_TRAIN = [
    "--set", "train.epochs=2", "--set", "train.workers=0", "--set", "input.size=[32,32]",
    "--set", "train.batch_size=16", "--set", "model.base_width=4", "--set", "model.depth=2",
]  # fmt: skip


def test_runs_dir_for_a_new_run_and_for_resume_last(cli, tmp_path, shapes_dataset):
    elsewhere = tmp_path / "elsewhere"
    result = cli(
        "train", "--plugin", "shapes-unet", "--set", f"dataset.path={shapes_dataset}",
        *TINY_TRAIN, "--max-steps", "1", "--runs-dir", str(elsewhere), cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "runs").exists()
    [run] = elsewhere.iterdir()
    junk = elsewhere / "99999999-999999-killed-before-its-first-checkpoint"
    junk.mkdir()
    (junk / "config.toml").write_text((run / "config.toml").read_text())
    result = cli("train", "--resume", "last", "--runs-dir", str(elsewhere), cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    epochs = [
        json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]
    result = cli("train", "--resume", str(run), "--runs-dir", str(elsewhere), cwd=tmp_path)
    assert result.exit_code == 2
    assert "--runs-dir" in one_error_line(result.stderr)


def test_a_wrong_dataset_json_field_is_a_data_error_naming_it(cli, tmp_path, shapes_dataset):
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(shapes_dataset, root)
    info = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**info, "image_channels": "three"}))
    result = cli(
        "train", "--plugin", "shapes-unet", "--set", f"dataset.path={root}", *TINY_TRAIN,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 3
    line = one_error_line(result.stderr)
    assert f"{root / 'dataset.json'}: 'image_channels' must be 1 or 3" in line
    assert not (tmp_path / "runs").exists()


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("segcli ")
