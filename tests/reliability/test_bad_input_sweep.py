"""Every command against malformed images, configurations and checkpoints, one table each.

For each case: the documented exit code, exactly one `error:` line and no traceback on stderr,
and no leftovers -- nothing new besides the command's expected outputs, no temporary files.
Unusual but valid images (16-bit, palette, CMYK) must simply work.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from reliability_helpers import (
    BAD_IMAGES,
    IMAGE_KINDS,
    TINY_TRAIN,
    check_error_output,
    image_bytes,
    shape_pair,
    snapshot,
    temporaries,
    write_raw_folder,
)

pytestmark = pytest.mark.slow

PARTIAL, DATA, USAGE, CHECKPOINT = 8, 3, 2, 5


def check_failure(result, expected_code: int, before: dict[str, str], root: Path) -> str:
    assert result.exit_code == expected_code, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert snapshot(root) == before, f"files changed or left behind: {_changes(before, root)}"
    return line


def check_success(result, root: Path, expected: list[str]) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    for path in expected:
        assert (root / path).exists(), f"{path} was not written"
    assert temporaries(root) == []


def _changes(before: dict[str, str], root: Path) -> list[str]:
    after = snapshot(root)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def replace_image(dataset: Path, split: str, kind: str) -> str:
    """Swap the split's first image for one of `kind` (same stem, the kind's suffix)."""
    first = sorted((dataset / split / "images").iterdir())[0]
    first.unlink()
    suffix, content = image_bytes(kind, size=32)
    first.with_suffix(suffix).write_bytes(content)
    return first.stem


# ------------------------------------------------------------------------------ images


IMAGE_COMMANDS = [
    "prepare-folder",
    "predict",
    "train",
    "evaluate",
    "visualize-samples",
    "visualize-predictions",
]


@pytest.mark.parametrize("kind", IMAGE_KINDS)
@pytest.mark.parametrize("command", IMAGE_COMMANDS)
def test_image(command, kind, tmp_path, tiny_dataset, tiny_run, segcli_in_process):
    checkpoint = tiny_run / "best.safetensors"
    if command == "prepare-folder":
        images, masks = write_raw_folder(tmp_path / "raw", 6)
        suffix, content = image_bytes(kind)
        (images / f"odd{suffix}").write_bytes(content)
        Image.fromarray(shape_pair(9)[1]).save(masks / "odd.png")
        args = ["prepare", "folder", images, "--masks", masks, "--out", "ds", "--workers", "1"]
        expected, bad_code = ["ds/dataset.json"], DATA
    elif command == "predict":
        images = tmp_path / "images"
        images.mkdir()
        for index in range(2):
            Image.fromarray(shape_pair(index)[0]).save(images / f"good{index}.png")
        suffix, content = image_bytes(kind)
        (images / f"odd{suffix}").write_bytes(content)
        args = ["predict", images, "--checkpoint", checkpoint, "--out", "pred"]
        expected, bad_code = ["pred/good0.png", "pred/good1.png", "pred/odd.png"], PARTIAL
    else:
        dataset = tmp_path / "ds"
        shutil.copytree(tiny_dataset, dataset)
        replace_image(dataset, "train" if command == "train" else "val", kind)
        args, expected = {
            "train": (
                ["train", "--plugin", "shapes-unet", "--set", 'dataset.path="ds"',
                 "--set", "train.epochs=1", *TINY_TRAIN],
                ["runs"],
            ),
            "evaluate": (
                ["evaluate", "ds", "--checkpoint", checkpoint, "--out", "report.json"],
                ["report.json"],
            ),
            "visualize-samples": (
                ["visualize", "samples", "ds", "--split", "val", "--count", "2",
                 "--out", "samples.png"],
                ["samples.png"],
            ),
            "visualize-predictions": (
                ["visualize", "predictions", "ds", "--checkpoint", checkpoint, "--count", "2",
                 "--out", "rows.png"],
                ["rows.png"],
            ),
        }[command]  # fmt: skip
        bad_code = DATA
    before = snapshot(tmp_path)
    result = segcli_in_process(*args, cwd=tmp_path)

    if kind not in BAD_IMAGES:
        check_success(result, tmp_path, expected)
    elif command == "predict":
        assert result.exit_code == PARTIAL, f"exit {result.exit_code}\n{result.stderr}"
        line = check_error_output(result.stderr)
        assert "1 of 3" in line, line
        assert "odd" in result.stderr  # the skipped file is named
        written = sorted(p.name for p in (tmp_path / "pred").iterdir() if p.name[0] != ".")
        assert written == ["good0.png", "good1.png"]
        assert temporaries(tmp_path) == []
    else:
        check_failure(result, bad_code, before, tmp_path)


# ----------------------------------------------------------------------------- configs


CONFIG_CASES = {
    "bad-toml": ["--config", "bad.toml"],
    "unknown-key-in-file": ["--config", "unknown.toml"],
    "unknown-key": ["--set", "train.epoch=3"],
    "wrong-type-epochs": ["--set", "train.epochs=lots"],
    "wrong-type-size": ["--set", 'input.size="big"'],
    "batch-size-0": ["--set", "train.batch_size=0"],
    "lr-negative": ["--set", "train.lr=-1"],
    "epochs-0": ["--set", "train.epochs=0"],
    "size-one-value": ["--set", "input.size=[32]"],
    "size-not-positive": ["--set", "input.size=[0,-5]"],
    "size-three-values": ["--set", "input.size=[32,32,3]"],
    "amp-unknown": ["--set", "train.amp=fp8"],
    "amp-fp16-on-cpu": ["--set", "train.amp=fp16", "--set", "train.device=cpu"],
    "monitor-misspelt": ["--set", "train.monitor=confusion/mIoU"],
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_config(case, tmp_path, tiny_dataset, segcli_in_process):
    (tmp_path / "bad.toml").write_text("[train\nepochs = 1\n")
    (tmp_path / "unknown.toml").write_text(
        f'[dataset]\nname = "shapes"\npath = "{tiny_dataset}"\n[train]\nepoch = 3\n'
    )
    recipe = [] if case in ("bad-toml", "unknown-key-in-file") else ["--plugin", "shapes-unet"]
    before = snapshot(tmp_path)
    result = segcli_in_process(
        "train", *recipe, "--set", f'dataset.path="{tiny_dataset}"', *TINY_TRAIN,
        "--set", "train.epochs=1", *CONFIG_CASES[case], cwd=tmp_path,
    )  # fmt: skip
    check_failure(result, USAGE, before, tmp_path)


DATASET_JSON_CASES = {
    "channels-not-a-number": lambda info: info.update(image_channels="three"),
    "classes-missing": lambda info: info.pop("classes"),
    "fewer-classes-than-mask-values": lambda info: info.update(classes=info["classes"][:2]),
}


@pytest.mark.parametrize("case", DATASET_JSON_CASES, ids=list(DATASET_JSON_CASES))
def test_dataset_json(case, tmp_path, tiny_dataset, segcli_in_process):
    dataset = tmp_path / "ds"
    shutil.copytree(tiny_dataset, dataset)
    info = json.loads((dataset / "dataset.json").read_text())
    DATASET_JSON_CASES[case](info)
    (dataset / "dataset.json").write_text(json.dumps(info))
    before = snapshot(tmp_path)
    result = segcli_in_process(
        "train", "--plugin", "shapes-unet", "--set", 'dataset.path="ds"', *TINY_TRAIN,
        "--set", "train.epochs=1", cwd=tmp_path,
    )  # fmt: skip
    line = check_failure(result, DATA, before, tmp_path)
    assert "dataset.json" in line, line


# --------------------------------------------------------------------------- checkpoints


class _CreatesAFile:
    """Unpickling this calls open(path, "w"): a harmless stand-in for code in a checkpoint."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def exported_sidecar(tiny_run, tmp_path_factory) -> Path:
    """The JSON sidecar of a real TorchScript export (classes, preprocessing)."""
    from segcli.inference.export import export_checkpoint

    out = tmp_path_factory.mktemp("reliability-export") / "model.pt"
    return export_checkpoint(tiny_run / "best.safetensors", "torchscript", out).sidecar


def _edited_checkpoint(real: Path, path: Path, edit) -> None:
    from segcli.runs.checkpoint_file import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(real, with_training_state=True)
    meta = json.loads(json.dumps(checkpoint.meta))
    edit(meta)
    save_checkpoint(path, checkpoint.model_state, meta, checkpoint.training_state)


def _set_config(section: str, key: str, value):
    return lambda meta: meta["config"][section].__setitem__(key, value)


# The header entry a checkpoint needs to be read at all: damage to its metadata comes next.
VERSION = {"segcli.format_version": "1"}


def write_checkpoint(kind: str, folder: Path, real: Path, sidecar: Path, name: str) -> Path:
    """A malformed checkpoint of `kind` at folder/name (a `.pt` kind gets its own name)."""
    from safetensors.torch import save_file

    path = folder / name
    real_bytes = real.read_bytes()
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(real_bytes[: len(real_bytes) // 2])
    elif kind == "random-bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "pickle-as-safetensors":
        path.write_bytes(pickle.dumps({"weights": _CreatesAFile(str(folder / "PWNED"))}))
    elif kind == "pickle-pt":
        if path.suffix == ".safetensors":  # resume reads last.safetensors whatever it holds
            torch.save({"weights": _CreatesAFile(str(folder / "PWNED"))}, path)
        else:
            path = folder / "model.pt"
            torch.save({"weights": _CreatesAFile(str(folder / "PWNED"))}, path)
            shutil.copy(sidecar, path.with_name(path.name + ".json"))
    elif kind == "no-segcli-metadata":
        save_file({"weight": torch.zeros(3)}, str(path))
    elif kind == "metadata-not-json":
        save_file(
            {"model/weight": torch.zeros(3)},
            str(path),
            metadata={**VERSION, "segcli.meta": "{oops"},
        )
    elif kind == "metadata-without-config":
        _edited_checkpoint(real, path, lambda meta: meta.pop("config"))
    elif kind == "metadata-a-list":
        save_file(
            {"model/weight": torch.zeros(3)},
            str(path),
            metadata={**VERSION, "segcli.meta": "[1, 2]"},
        )
    elif kind == "unregistered-model":
        _edited_checkpoint(real, path, _set_config("model", "name", "no-such-net"))
    elif kind == "invalid-input-size":
        _edited_checkpoint(real, path, _set_config("input", "size", [32]))
    elif kind == "weights-of-another-width":
        _edited_checkpoint(real, path, _set_config("model", "base_width", 3))
    else:
        raise ValueError(kind)
    return path


CHECKPOINT_KINDS = [
    "zero-byte",
    "truncated",
    "random-bytes",
    "pickle-pt",
    "pickle-as-safetensors",
    "no-segcli-metadata",
    "metadata-not-json",
    "metadata-without-config",
    "metadata-a-list",
    "unregistered-model",
    "invalid-input-size",
    "weights-of-another-width",
]
CHECKPOINT_COMMANDS = ["predict", "evaluate", "export", "visualize-predictions", "train-resume"]
# --resume takes the configuration from the run's config.toml, not from the checkpoint's
# metadata: for it, only damage to the file itself is malformed input.
METADATA_ONLY = [
    "metadata-without-config",
    "unregistered-model",
    "invalid-input-size",
    "weights-of-another-width",
]


@pytest.mark.parametrize(
    "command, kind",
    [
        (command, kind)
        for command in CHECKPOINT_COMMANDS
        for kind in CHECKPOINT_KINDS
        if not (command == "train-resume" and kind in METADATA_ONLY)
    ],
)
def test_checkpoint(
    command, kind, tmp_path, tiny_dataset, tiny_run, exported_sidecar, segcli_in_process
):
    real = tiny_run / "last.safetensors"
    if command == "train-resume":
        run = tmp_path / "runs" / tiny_run.name
        shutil.copytree(tiny_run, run)
        write_checkpoint(kind, run, real, exported_sidecar, "last.safetensors")
        args = ["train", "--resume", run]
    else:
        checkpoint = write_checkpoint(kind, tmp_path, real, exported_sidecar, "ck.safetensors")
        images = tmp_path / "images"
        images.mkdir()
        Image.fromarray(shape_pair(0)[0]).save(images / "a.png")
        args = {
            "predict": ["predict", images, "--out", "pred"],
            "evaluate": ["evaluate", tiny_dataset, "--out", "report.json"],
            "export": ["export", "--format", "torchscript", "--out", "model-out.pt"],
            "visualize-predictions": ["visualize", "predictions", tiny_dataset, "--count", "1",
                                      "--out", "rows.png"],
        }[command] + ["--checkpoint", checkpoint]  # fmt: skip
    before = snapshot(tmp_path)
    result = segcli_in_process(*args, cwd=tmp_path)
    check_failure(result, CHECKPOINT, before, tmp_path)
    assert not list(tmp_path.rglob("PWNED")), "a checkpoint ran code while loading"
