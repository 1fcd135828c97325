"""Every expected error is one line on stderr with its documented exit code, and leaves nothing."""

from __future__ import annotations

import pytest


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
    assert "cannot create" in one_error_line(result.stderr)
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


def test_debug_lets_the_exception_through_for_its_traceback(cli, tmp_path):
    from segcli.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        cli("--debug", "train", "--plugin", "nope", cwd=tmp_path)


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("segcli ")
