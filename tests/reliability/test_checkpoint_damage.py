"""Damaged checkpoint metadata, a damaged training state in `last`, a damaged summary.json:
each ends in one line naming the file and what is wrong, with exit code 5 (or 3), never a
traceback, and nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from reliability_helpers import check_error_output, shape_pair, snapshot

pytestmark = pytest.mark.slow

DATA, CHECKPOINT = 3, 5
DEEP = "[" * 100_000 + "]" * 100_000  # a few hundred KB that exhaust a recursive parser


def _rewritten(source: Path, target: Path, meta=None, state=None, raw_header=None) -> None:
    """`target`: the weights of `source` with its metadata and training state edited by
    `meta(meta)` / `state(state)` (each returns the new value), or a raw header."""
    from safetensors.torch import save_file

    from segcli.runs.checkpoint_file import FORMAT_VERSION, load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(source, with_training_state=True)
    if raw_header is not None:
        tensors = {f"model/{k}": v for k, v in checkpoint.model_state.items()}
        header = {
            "segcli.format_version": str(FORMAT_VERSION),
            "segcli.meta": json.dumps(checkpoint.meta),
            **raw_header,
        }
        save_file(tensors, str(target), metadata=header)
        return
    new_meta = meta(json.loads(json.dumps(checkpoint.meta))) if meta else checkpoint.meta
    new_state = state(checkpoint.training_state) if state else checkpoint.training_state
    save_checkpoint(target, checkpoint.model_state, new_meta, new_state)


def _set(key: str, value):
    def edit(tree):
        tree[key] = value
        return tree

    return edit


def _first_optimizer_state_resized(state):
    per_parameter = next(iter(state["optimizer"]["state"].values()))
    for name, value in per_parameter.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            per_parameter[name] = torch.zeros(7)
    return state


def _extra_param_group(state):
    groups = state["optimizer"]["param_groups"]
    groups.append(dict(groups[0]))
    return state


METADATA_DAMAGE = {
    "config-a-list": ("`config`", {"meta": _set("config", [1, 2])}),
    "config-a-number": ("`config`", {"meta": _set("config", 3)}),
    "classes-a-number": ("`classes`", {"meta": _set("classes", 3)}),
    "class-record-a-string": ("`classes`", {"meta": _set("classes", ["road"])}),
    "metadata-nested-deeply": ("nested deeper", {"raw_header": {"segcli.meta": DEEP}}),
}


@pytest.mark.parametrize("command", ["predict", "export", "report"])
@pytest.mark.parametrize("kind", list(METADATA_DAMAGE))
def test_damaged_metadata(command, kind, tmp_path, tiny_run, segcli_in_process):
    named, edit = METADATA_DAMAGE[kind]
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    checkpoint = run / "best.safetensors"
    _rewritten(tiny_run / "last.safetensors", checkpoint, **edit)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(shape_pair(0)[0]).save(images / "a.png")
    args = {
        "predict": ["predict", images, "--out", "pred", "--checkpoint", checkpoint],
        "export": ["export", "--format", "torchscript", "--out", "m.pt", "--checkpoint", run],
        "report": ["report", run, "--out", "report.html"],
    }[command]
    before = snapshot(tmp_path)
    result = segcli_in_process(*args, cwd=tmp_path)
    assert result.exit_code == CHECKPOINT, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert str(checkpoint.name) in line and named in line, line
    assert snapshot(tmp_path) == before


STATE_DAMAGE = {
    "state-a-list": {"state": lambda state: [1, 2]},
    "optimizer-a-list": {"state": _set("optimizer", [1])},
    "optimizer-without-groups": {"state": _set("optimizer", {"state": 5, "param_groups": "x"})},
    "optimizer-state-of-another-shape": {"state": _first_optimizer_state_resized},
    "optimizer-with-another-group": {"state": _extra_param_group},
    "scheduler-a-number": {"state": _set("scheduler", 7)},
    "rng-of-another-type": {"state": _set("rng", {"torch": torch.zeros(3)})},
    "rng-a-string": {"state": _set("rng", "x")},
    "progress-unknown-field": {"state": _set("progress", {"nope": 1})},
    "progress-epoch-a-string": {"state": _set("progress", {"epoch": "one"})},
    "state-not-json": {"raw_header": {"segcli.state": "{oops"}},
    "state-nested-deeply": {"raw_header": {"segcli.state": DEEP}},
    "state-names-a-missing-tensor": {"raw_header": {"segcli.state": '{"__tensor__": "state/x"}'}},
}


@pytest.mark.parametrize("kind", list(STATE_DAMAGE))
def test_resume_from_damaged_training_state(kind, tmp_path, tiny_run, segcli_in_process):
    run = tmp_path / "runs" / tiny_run.name
    shutil.copytree(tiny_run, run)
    _rewritten(tiny_run / "last.safetensors", run / "last.safetensors", **STATE_DAMAGE[kind])
    before = snapshot(tmp_path)
    # the run ran all its epochs: resuming it needs an extension
    args = ["train", "--resume", run, "--set", "train.epochs=3"]
    result = segcli_in_process(*args, cwd=tmp_path)
    assert result.exit_code == CHECKPOINT, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert "last.safetensors" in line and "training state" in line, line
    # the way on does not need `last`: a new run from the best weights
    assert f"model.weights={run / 'best.safetensors'}" in line, line
    after = snapshot(tmp_path)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    # what only torch can tell (state that does not fit the optimiser) is found once it is
    # built, after `fit` recorded the extension in config.toml; nothing else may change
    assert changed <= {f"runs/{run.name}/config.toml"}, changed


SUMMARY_DAMAGE = {
    "truncated": '{"best": 0.5, "monitor": "val/lo',
    "not-an-object": "[1, 2, 3]",
    "best-epoch-a-list": '{"best_epoch": [1], "best": 0.5}',
    "best-a-string": '{"best_epoch": 1, "best": "high"}',
    "nested-deeply": '{"best_epoch": ' + DEEP + "}",
}


@pytest.mark.parametrize("kind", list(SUMMARY_DAMAGE))
def test_confusion_of_damaged_summary(kind, tmp_path, tiny_run, segcli_in_process):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "summary.json").write_text(SUMMARY_DAMAGE[kind])
    before = snapshot(tmp_path)
    result = segcli_in_process("visualize", "confusion", run, "--out", "c.png", cwd=tmp_path)
    assert result.exit_code == DATA, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert "summary.json" in line, line
    assert snapshot(tmp_path) == before


MATRIX_DAMAGE = {
    "of-strings": [["a", "b"], ["c", "d"]],
    "ragged": [[1, 2], [3]],
    "a-number": 5,
    "of-another-size": [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
}


@pytest.mark.parametrize("kind", list(MATRIX_DAMAGE))
def test_confusion_of_damaged_report(kind, tmp_path, segcli_in_process):
    report = {
        "metrics": {"confusion/matrix": MATRIX_DAMAGE[kind]},
        "classes": [{"name": "ground"}, {"name": "shape"}],
    }
    (tmp_path / "eval.json").write_text(json.dumps(report))
    before = snapshot(tmp_path)
    result = segcli_in_process(
        "visualize", "confusion", "eval.json", "--out", "c.png", cwd=tmp_path
    )
    assert result.exit_code == DATA, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert "eval.json" in line and "confusion matrix" in line, line
    assert snapshot(tmp_path) == before
