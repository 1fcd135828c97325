"""`segcli export --quantize`: quantised ONNX re-scored on the validation split, refused when
it loses too much, and predicting like a float export."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from segcli.testing.tools import require_module


@pytest.fixture(autouse=True)
def _onnx_installed():
    """ONNX is the test extra's (CI must have it); OpenVINO is optional and skips."""
    require_module("onnxruntime")
    require_module("onnxscript")


@pytest.fixture(scope="module")
def ill_conditioned_checkpoint(trained_run, tmp_path_factory):
    """The trained U-Net with a deliberately ill-conditioned head: two feature channels
    before it (batch-norm outputs before a ReLU) made constants. One is 10^4, which the head
    ignores: one int8 step of that activation tensor is then worth about 40. The other is 1,
    and its head weight -5 cancels +5 on the head's bias for class 1. In float the logits
    are unchanged but for those two channels' features; int8 rounds the 1 away and predicts
    class 1 everywhere."""
    from segcli.runs.checkpoint_file import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(trained_run / "best.safetensors")
    state = {name: tensor.clone() for name, tensor in checkpoint.model_state.items()}
    norm = max(name for name in state if name.startswith("merge.") and name.endswith(".bias"))
    prefix = norm.rsplit(".", 1)[0]
    for channel, value, head_weight in ((0, 1e4, 0.0), (1, 1.0, -5.0)):
        state[f"{prefix}.weight"][channel] = 0.0
        state[f"{prefix}.bias"][channel] = value
        state["head.weight"][:, channel] = 0.0
        state["head.weight"][1, channel] = head_weight
    state["head.bias"][1] += 5.0
    path = tmp_path_factory.mktemp("ill") / "ill.safetensors"
    save_checkpoint(path, state, checkpoint.meta)
    return path


def test_an_int8_export_that_loses_accuracy_is_refused_with_both_scores(
    cli, ill_conditioned_checkpoint, shapes_dataset, tmp_path
):
    out = tmp_path / "ill.onnx"
    result = cli(
        "export",
        "--checkpoint",
        str(ill_conditioned_checkpoint),
        "--format",
        "onnx",
        "--quantize",
        "int8",
        "--calibration",
        "8",
        "--dataset",
        str(shapes_dataset),
        "--out",
        str(out),
    )
    assert result.exit_code == 4, result.stderr
    message = " ".join(result.stderr.split())
    assert "onnxruntime int8 export" in message and "nothing was written" in message
    exported, reference, drop = (
        float(value)
        for value in re.search(
            r"scores confusion/miou (\S+) on 16 val image\(s\), against (\S+) for the float "
            r"model: a drop of (\S+),",
            message,
        ).groups()
    )
    assert reference - exported == pytest.approx(drop, abs=1e-3) and drop > 0.01
    assert "--keep-anyway" in message
    assert list(tmp_path.iterdir()) == []  # neither the model, nor its sidecar, nor a temporary


def test_keep_anyway_keeps_it_and_the_sidecar_says_so(
    cli, ill_conditioned_checkpoint, shapes_dataset, tmp_path
):
    out = tmp_path / "ill.onnx"
    result = cli(
        "export",
        "--checkpoint",
        str(ill_conditioned_checkpoint),
        "--format",
        "onnx",
        "--quantize",
        "int8",
        "--calibration",
        "8",
        "--dataset",
        str(shapes_dataset),
        "--out",
        str(out),
        "--keep-anyway",
    )
    assert result.exit_code == 0, result.stderr
    assert "--keep-anyway" in result.stderr
    check = json.loads((tmp_path / "ill.onnx.json").read_text())["accuracy_check"]
    assert check["kept_anyway"] and check["drop"] > check["max_drop"] == 0.01


@pytest.mark.parametrize("mode", ["int8", "dynamic", "fp16"])
def test_a_good_quantised_export_passes_records_both_scores_and_predicts(
    cli, trained_run, shapes_dataset, tmp_path, mode
):
    model = tmp_path / f"model-{mode}.onnx"
    result = cli(
        "export",
        "--checkpoint",
        str(trained_run),
        "--format",
        "onnx",
        "--quantize",
        mode,
        "--calibration",
        "16",
        "--out",
        str(model),
    )
    assert result.exit_code == 0, result.stderr
    assert "confusion/miou on 16 val image(s)" in result.stdout
    sidecar = json.loads((tmp_path / f"model-{mode}.onnx.json").read_text())
    check = sidecar["accuracy_check"]
    assert check["metric"] == "confusion/miou" and check["images"] == 16
    assert check["reference"]["runtime"] == "onnxruntime float32"
    assert check["exported"]["runtime"] == f"onnxruntime {mode}"
    for role in ("reference", "exported"):
        assert 0 <= check[role]["score"] <= 1 and check[role]["images_per_second"] > 0
    assert check["drop"] <= 0.01 and not check["kept_anyway"]
    assert sidecar["quantization"]["mode"] == mode
    if mode == "int8":
        assert sidecar["quantization"]["calibration_images"] == 16
    masks = {}
    image = sorted((shapes_dataset / "test" / "images").iterdir())[0]
    for name, checkpoint in (("torch", trained_run), ("quantised", model)):
        out = tmp_path / name
        result = cli("predict", str(image), "--checkpoint", str(checkpoint), "--out", str(out))
        assert result.exit_code == 0, result.stderr
        masks[name] = np.asarray(Image.open(out / f"{image.stem}.png"))
    assert (masks["torch"] == masks["quantised"]).mean() > 0.95


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "torchscript", "--quantize", "int8"], "--quantize applies to --format onnx"),
        (["--format", "onnx", "--quantize", "int4"], "unknown --quantize 'int4'"),
        (["--format", "onnx", "--quantize", "int8", "--max-drop", "-1"], "--max-drop -1"),
    ],
)
def test_quantisation_options_are_checked_before_any_work(cli, trained_run, args, message):
    result = cli("export", "--checkpoint", str(trained_run), *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_dataset_with_other_classes_is_refused_before_exporting(cli, trained_run, tmp_path):
    result = cli(
        "export",
        "--checkpoint",
        str(trained_run),
        "--format",
        "onnx",
        "--quantize",
        "int8",
        "--dataset",
        str(tmp_path),
        "--out",
        str(tmp_path / "m.onnx"),
    )
    assert result.exit_code == 3
    assert "holds none" in result.stderr and "--dataset" in result.stderr


def test_each_model_is_timed_on_the_same_images_after_an_untimed_batch(
    trained_run, shapes_dataset, monkeypatch
):
    """The end-to-end speed of re-scoring is fair: the float and the exported model each get
    one untimed batch first (a runtime's first call sets up its buffers), then the clock
    runs over the same split for both."""
    from types import SimpleNamespace

    from segcli.inference import quantization
    from segcli.inference.predictor import Predictor

    predictor = Predictor(trained_run / "best.safetensors", "cpu")
    events = []

    def runner(role):
        def run(images):
            events.append((role, len(images)))
            return predictor.model(images)

        return run

    def clock():
        events.append("clock")
        return float(len(events))

    monkeypatch.setattr(quantization, "time", SimpleNamespace(perf_counter=clock))
    data = quantization.ScoringData(shapes_dataset, [])
    record = quantization.compare_scores(
        predictor,
        data,
        reference=("float", runner("float")),
        exported=("int8", runner("int8")),
        max_drop=0.01,
    )
    timed = ["clock", *[(None, 4)] * 4, "clock"]  # the 16 validation images, 4 a call
    expected = [
        event if event == "clock" else (role, event[1])
        for role in ("float", "int8")
        for event in [(None, quantization.WARM_UP_IMAGES), *timed]
    ]
    assert events == expected
    assert record["images"] == 16 and record["exported"]["score"] == record["reference"]["score"]
