"""`segcli export`: ONNX and TorchScript files that match PyTorch, and predict with them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from segcli.testing.tools import require_module


def _max_difference(stdout: str) -> float:
    return float(re.search(r"max abs difference (\S+)", stdout).group(1))


@pytest.mark.parametrize(
    "fmt, suffix",
    [pytest.param("onnx", ".onnx", marks=pytest.mark.slow), ("torchscript", ".pt")],
)
def test_unet_export_passes_parity_and_predicts_like_the_checkpoint(
    cli, trained_run, image_tree, tmp_path, fmt, suffix
):
    if fmt == "onnx":
        require_module("onnxruntime")
        require_module("onnxscript")
    model = tmp_path / f"model{suffix}"
    result = cli("export", "--checkpoint", str(trained_run), "--format", fmt, "--out", str(model))
    assert result.exit_code == 0, result.stderr
    assert _max_difference(result.stdout) < 1e-4
    sidecar = json.loads((tmp_path / f"model{suffix}.json").read_text())
    assert [c["name"] for c in sidecar["classes"]] == [
        "background",
        "circle",
        "rectangle",
        "triangle",
    ]
    assert sidecar["preprocessing"]["size"] == [32, 32] and len(sidecar["palette"]) == 4
    assert sidecar["preprocessing"]["resize"] == "bilinear-antialias"
    masks = {}
    for name, checkpoint in (("torch", trained_run), ("exported", model)):
        out = tmp_path / name
        result = cli(
            "predict",
            str(image_tree / "a.png"),
            str(image_tree / "sub" / "b.jpg"),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
        )
        assert result.exit_code == 0, result.stderr
        masks[name] = [np.asarray(Image.open(out / f"{stem}.png")) for stem in ("a", "b")]
    for expected, actual in zip(masks["torch"], masks["exported"], strict=True):
        assert (expected == actual).mean() > 0.999


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_deeplabv3_dynamic_export_passes_parity(cli, trained_run, tmp_path, fmt):
    """A randomly initialised deeplabv3-resnet50 checkpoint, exported with dynamic axes."""
    if fmt == "onnx":
        require_module("onnxruntime")
        require_module("onnxscript")
    from segcli.building import build_model
    from segcli.config import build_config
    from segcli.inference.predict_files import Predictor
    from segcli.runs.checkpoint_file import load_checkpoint, save_checkpoint

    meta = dict(load_checkpoint(trained_run / "best.safetensors").meta)
    meta["config"] = {**meta["config"], "model": {"name": "deeplabv3-resnet50", "options": {}}}
    info = Predictor(trained_run / "best.safetensors", "cpu").dataset_info()
    model = build_model(build_config(meta["config"]), info).eval()
    checkpoint = tmp_path / "deeplab.safetensors"
    save_checkpoint(checkpoint, model.state_dict(), meta)
    result = cli("export", "--checkpoint", str(checkpoint), "--format", fmt, "--dynamic")
    assert result.exit_code == 0, result.stderr
    assert "1x3x32x32, 2x3x40x48" in result.stdout
    assert _max_difference(result.stdout) < 1e-3
    assert checkpoint.with_suffix(".onnx" if fmt == "onnx" else ".pt").is_file()


def test_onnx_export_with_a_native_size_checkpoint_needs_dynamic(cli, native_checkpoint, tmp_path):
    result = cli(
        "export",
        "--checkpoint",
        str(native_checkpoint),
        "--format",
        "torchscript",
        "--out",
        str(tmp_path / "m.pt"),
    )
    assert result.exit_code == 2
    assert "--dynamic" in result.stderr and not (tmp_path / "m.pt").exists()


def test_exported_model_without_sidecar_is_a_checkpoint_error(cli, image_tree, tmp_path):
    model = tmp_path / "lonely.pt"
    model.write_bytes(b"whatever")
    result = cli(
        "predict",
        str(image_tree / "a.png"),
        "--checkpoint",
        str(model),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 5
    assert "sidecar" in result.stderr


def test_onnx_model_without_onnxruntime_says_how_to_install_it(
    cli, image_tree, tmp_path, monkeypatch
):
    from segcli.inference import exported_models

    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    sidecar = {
        "segcli_export": exported_models.SIDECAR_VERSION,
        "preprocessing": {"size_divisor": 4},
    }
    exported_models.sidecar_path(model).write_text(json.dumps(sidecar))
    monkeypatch.setattr(exported_models, "_importable", lambda name: name != "onnxruntime")
    result = cli(
        "predict",
        str(image_tree / "a.png"),
        "--checkpoint",
        str(model),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 2
    assert "needs onnxruntime" in result.stderr and "pip install 'segcli[onnx]'" in result.stderr


def test_export_replaces_only_its_own_files_unless_forced(cli, trained_run, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"someone else's model")
    args = ("export", "--checkpoint", trained_run, "--format", "torchscript", "--out", model)
    result = cli(*args)
    assert result.exit_code == 6, result.stderr
    assert (
        "not written by segcli" in result.stderr and model.read_bytes() == b"someone else's model"
    )
    assert not (tmp_path / "model.pt.json").exists()
    assert cli(*args, "--force").exit_code == 0
    assert cli(*args).exit_code == 0  # what segcli exported may be exported again
    assert {p.name for p in tmp_path.iterdir()} == {
        "model.pt",
        "model.pt.json",
        ".segcli-outputs.jsonl",
    }
