"""Numeric options are range-checked while the command line is parsed: a value out of range,
NaN or infinite is a usage error (exit 2) naming the option, before any checkpoint is looked
for or any file written; `export --opset` takes only what the installed exporter writes."""

from __future__ import annotations

import pytest
from reliability_helpers import check_error_output, snapshot

from segcli.testing.tools import require_module

pytestmark = pytest.mark.slow

USAGE = 2

# (command, option, value): each refused. The checkpoint does not exist: the option must be
# refused before it is looked for (a CheckpointError would mean the check came too late).
OUT_OF_RANGE = [
    ("export", "--opset", "1"),
    ("export", "--opset", "0"),
    ("export", "--opset", "1000"),
    ("export", "--tolerance", "nan"),
    ("export", "--tolerance", "inf"),
    ("export", "--tolerance", "-1"),
    ("export", "--tolerance", "0"),
    ("predict", "--tile", "4"),
    ("predict", "--tile", "-8"),
    ("predict", "--overlap", "1"),
    ("predict", "--overlap", "-0.1"),
    ("predict", "--overlap", "nan"),
    ("predict", "--batch-size", "0"),
    ("predict", "--workers", "-1"),
    ("predict", "--alpha", "0"),
    ("predict", "--alpha", "nan"),
    ("predict", "--threshold", "1"),
    ("predict", "--threshold", "nan"),
    ("predict", "--max-image-pixels", "0"),
    ("predict", "--threads", "0"),
    ("evaluate", "--tile", "7"),
    ("evaluate", "--overlap", "inf"),
    ("evaluate", "--workers", "-2"),
    ("evaluate", "--max-image-pixels", "-5"),
    ("evaluate", "--threads", "0"),
    ("visualize", "--count", "0"),
    ("train", "--max-steps", "0"),
]


def _args(command: str, option: str, value: str) -> list[str]:
    checkpoint = ["--checkpoint", "missing.safetensors"]
    with_tile = ["--tile", "64"] if option == "--overlap" else []
    return {
        "export": ["export", "--format", "onnx", "--out", "model.onnx"],
        "predict": ["predict", "images", "--out", "pred", *with_tile],
        "evaluate": ["evaluate", "dataset", "--out", "report.json", *with_tile],
        "visualize": ["visualize", "predictions", "dataset", "--out", "rows.png"],
        "train": ["train", "--plugin", "shapes-unet", "--set", 'runs_dir="runs"'],
    }[command] + [*(checkpoint if command != "train" else []), option, value]


@pytest.mark.parametrize("command, option, value", OUT_OF_RANGE)
def test_out_of_range_refused_first(command, option, value, tmp_path, segcli_in_process):
    (tmp_path / "images").mkdir()
    (tmp_path / "dataset").mkdir()
    before = snapshot(tmp_path)
    result = segcli_in_process(*_args(command, option, value), cwd=tmp_path)
    assert result.exit_code == USAGE, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert f"{option} {value}" in line and "out of range" in line, line
    assert snapshot(tmp_path) == before


def test_opset_for_torchscript_refused(tmp_path, segcli_in_process):
    args = ["export", "--format", "torchscript", "--opset", "18", "--out", "m.pt"]
    result = segcli_in_process(*args, "--checkpoint", "missing.safetensors", cwd=tmp_path)
    assert result.exit_code == USAGE, f"exit {result.exit_code}\n{result.stderr}"
    assert "--format onnx only" in check_error_output(result.stderr)


def test_opset_below_the_exporters_writes_nothing(tmp_path, tiny_run, segcli_in_process):
    """torch.onnx asked for opset 1 printed a traceback and wrote opset 18 with exit 0."""
    result = segcli_in_process(
        "export", "--format", "onnx", "--opset", "1", "--checkpoint", tiny_run,
        "--out", "model.onnx", cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == USAGE, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert "--opset 1" in line, line
    assert list(tmp_path.iterdir()) == []


def test_supported_opset_is_the_one_written(tmp_path, tiny_run, segcli_in_process):
    onnx = require_module("onnx")
    from segcli.cli.options import supported_onnx_opsets

    lowest, _ = supported_onnx_opsets()
    result = segcli_in_process(
        "export", "--format", "onnx", "--opset", str(lowest), "--checkpoint", tiny_run,
        "--out", "model.onnx", cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {lowest}
