"""Outputs (issue 17, items 1 and 5): no command replaces a file it did not write unless
--force, none replaces one of its own inputs even with --force, and a full disk during an
export ends in one line (exit 7) with no partial file, never in an abort (exit 134).

Every writing command goes through one check (`OutputLedger.check_replaceable`): an output
recorded in segcli's ledger of its folder, unchanged since, may be replaced; anything else
needs --force (exit 6); an input never (exit 2).
"""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import pytest
from reliability_helpers import check_error_output, run_segcli, snapshot, temporaries, visible

from segcli.testing.tools import require_module

NOTES = b"the user's own notes\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def place(tmp_path, tiny_dataset, tiny_run) -> dict[str, Path]:
    """Copies of the tiny dataset and run (the run is evaluated on its own dataset copy)."""
    dataset = Path(shutil.copytree(tiny_dataset, tmp_path / "ds"))
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    config = (run / "config.toml").read_text().replace(str(tiny_dataset), str(dataset))
    (run / "config.toml").write_text(config)
    evaluation = tmp_path / "eval-val.json"
    evaluation.write_text(
        json.dumps(
            {
                "split": "val",
                "classes": [{"name": "background"}, {"name": "shape"}],
                "metrics": {"confusion/matrix": [[5, 1], [2, 7]]},
            }
        )
    )
    image = sorted((dataset / "train" / "images").iterdir())[0]
    mask = sorted((dataset / "val" / "masks").iterdir())[0]
    return {"root": tmp_path, "ds": dataset, "run": run, "eval": evaluation, "image": image,
            "mask": mask}  # fmt: skip


def visualize_args(command: str, place: dict[str, Path]) -> list:
    return {
        "samples": ["visualize", "samples", place["ds"], "-n", "2"],
        "predictions": [
            "visualize", "predictions", place["ds"], "--checkpoint", place["run"], "-n", "2",
            "--device", "cpu",
        ],
        "curves": ["visualize", "curves", place["run"]],
        "confusion": ["visualize", "confusion", place["eval"]],
    }[command]  # fmt: skip


@pytest.mark.parametrize("command", ["samples", "predictions", "curves", "confusion"])
def test_visualize_keeps_a_file_it_did_not_write(command, place, segcli_in_process):
    notes = place["root"] / "notes.txt"
    notes.write_bytes(NOTES)
    args = [*visualize_args(command, place), "--out", notes]

    refused = segcli_in_process(*args, cwd=place["root"])
    assert refused.exit_code == 6, refused
    line = check_error_output(refused.stderr)
    assert str(notes) in line and "--force" in line
    assert notes.read_bytes() == NOTES

    forced = segcli_in_process(*args, "--force", cwd=place["root"])
    assert forced.exit_code == 0, forced
    assert notes.read_bytes().startswith(PNG_MAGIC)
    again = segcli_in_process(*args, cwd=place["root"])  # its own picture now: no --force
    assert again.exit_code == 0, again


def test_visualize_keeps_another_runs_records(place, segcli_in_process):
    """The run's metrics.jsonl is no input of `visualize samples`, but not segcli's output."""
    metrics = place["run"] / "metrics.jsonl"
    before = metrics.read_bytes()
    result = segcli_in_process(
        *visualize_args("samples", place), "--out", metrics, cwd=place["root"]
    )
    assert result.exit_code == 6, result
    assert metrics.read_bytes() == before


# (command, the input named as --out): refused even with --force, left byte for byte
INPUT_CASES = {
    "samples-over-dataset-image": ("samples", "image"),
    "samples-over-dataset-json": ("samples", "ds/dataset.json"),
    "predictions-over-checkpoint": ("predictions", "run/best.safetensors"),
    "predictions-over-mask": ("predictions", "mask"),
    "curves-over-metrics": ("curves", "run/metrics.jsonl"),
    "confusion-over-its-json": ("confusion", "eval"),
    "report-over-config": ("report", "run/config.toml"),
    "report-over-checkpoint": ("report", "run/last.safetensors"),
    "evaluate-over-checkpoint": ("evaluate", "run/best.safetensors"),
}


@pytest.mark.parametrize("case", INPUT_CASES, ids=list(INPUT_CASES))
def test_no_command_replaces_its_own_input(case, place, segcli_in_process):
    command, victim_name = INPUT_CASES[case]
    victim = place[victim_name] if victim_name in place else place["root"] / victim_name
    args = {
        "report": ["report", place["run"], "--max-images", "1"],
        "evaluate": ["evaluate", place["ds"], "--checkpoint", place["run"], "--device", "cpu"],
    }.get(command) or visualize_args(command, place)
    before = snapshot(place["root"])

    for force in ([], ["--force"]):
        result = segcli_in_process(*args, "--out", victim, *force, cwd=place["root"])
        assert result.exit_code == 2, result
        line = check_error_output(result.stderr)
        assert str(victim) in line and "input" in line and "even with --force" in line
        assert visible(snapshot(place["root"])) == visible(before), "an input was changed"


def test_training_curves_are_segclis_to_replace(place, segcli_in_process):
    """curves.png drawn at the end of training (as the CLI's reporter does) is recorded as
    segcli's, so `visualize curves RUN` replaces it without --force."""
    from segcli.visualize import curves, save_picture

    save_picture(curves([place["run"]]), place["run"] / "curves.png")
    result = segcli_in_process("visualize", "curves", place["run"], cwd=place["root"])
    assert result.exit_code == 0, result


def _file_size_limit(limit: int):
    def apply() -> None:  # Python ignores SIGXFSZ, so an oversized write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_on_a_full_disk_keeps_the_old_export(fmt, place, segcli_in_process):
    if fmt == "onnx":
        require_module("onnxscript")
        require_module("onnxruntime")
    out = place["root"] / "export" / ("model.pt" if fmt == "torchscript" else "model.onnx")
    args = ["export", "--checkpoint", place["run"], "--format", fmt, "--out", out]
    first = segcli_in_process(*args, cwd=place["root"])
    assert first.exit_code == 0, first
    before = snapshot(out.parent)

    # a real process: an abort in C++ (exit 134) would end it, not raise
    result = run_segcli(*args, cwd=place["root"], preexec_fn=_file_size_limit(4096))
    assert result.exit_code == 7, result
    line = check_error_output(result.stderr)
    assert line.startswith(f"error: file too large writing {out}"), line
    assert visible(snapshot(out.parent)) == visible(before), "the earlier export was changed"
    assert temporaries(out.parent) == [], "a partial temporary was left"
