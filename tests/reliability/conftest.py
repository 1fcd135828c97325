"""Fixtures of the reliability suite: an in-process runner that shows tracebacks, tiny data."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import pytest
from reliability_helpers import Result


@pytest.fixture
def segcli_in_process(capfd, monkeypatch):
    """Run `segcli ARGS...` in this process as the console script does; an exception that
    escapes `main` is rendered the way Python would print it, so tests can see tracebacks."""
    from segcli.cli import main

    def run(*args: str | Path, cwd: Path) -> Result:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["segcli", *map(str, args)])
        monkeypatch.delenv("SEGCLI_DEBUG", raising=False)
        capfd.readouterr()
        code = 0
        crash = ""
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except Exception:  # noqa: BLE001 - an escaping exception is exactly what is checked
            code, crash = 1, traceback.format_exc()
        out, err = capfd.readouterr()
        return Result(code, out, err + crash)

    return run


# ------------------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A prepared shapes dataset: 4 train, 2 val, 1 test image of 32x32 (read-only: copy it)."""
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    out = tmp_path_factory.mktemp("reliability-data") / "tiny"
    build_dataset(prepare(None, train=4, val=2, test=1, size=32), out, workers=1)
    return out


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A run folder trained one step on `tiny_dataset` (best and last checkpoints)."""
    from segcli_recipes import SHAPES_UNET

    from segcli.config import build_config
    from segcli.training.fit import fit

    runs = tmp_path_factory.mktemp("reliability-runs")
    config = build_config(
        SHAPES_UNET,
        overrides=[
            f'dataset.path="{tiny_dataset}"',
            f'runs_dir="{runs}"',
            "train.epochs=1",
            "train.workers=0",
            "train.batch_size=2",
            "input.size=[16,16]",
            "model.base_width=2",
            "model.depth=1",
        ],
    )
    config.recipe = "shapes-unet"
    return fit(config, max_steps=1)
