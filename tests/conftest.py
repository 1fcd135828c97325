"""Shared fixtures: running the CLI in-process, and tiny prepared datasets."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(autouse=True)
def _no_debug_leak(monkeypatch):
    """`--debug` sets SEGCLI_DEBUG for the process; restore it after each in-process run."""
    monkeypatch.delenv("SEGCLI_DEBUG", raising=False)


@pytest.fixture(autouse=True)
def _own_torch_hub_cache(tmp_path_factory, monkeypatch):
    """Plans depend on the pretrained weights torch hub's cache holds: tests see an empty
    cache of their own (TORCH_HOME), never the machine's, and never download into it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `segcli ARGS...` in this process, the way the console script does."""
    from segcli.cli import main

    def run(*args: str, cwd: Path | None = None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["segcli", *map(str, args)])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory) -> Path:
    """A small prepared shapes dataset (48 train, 16 val, 4 test images of 64x64)."""
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    out = tmp_path_factory.mktemp("datasets") / "shapes"
    build_dataset(prepare(None, train=48, val=16, test=4, size=64), out, workers=1)
    return out


@pytest.fixture(scope="session")
def trained_run(shapes_dataset, tmp_path_factory) -> Path:
    """A run trained for a few steps on the small shapes dataset (checkpoints best/last)."""
    from segcli_recipes import SHAPES_UNET

    from segcli.config import build_config
    from segcli.training.fit import fit

    runs = tmp_path_factory.mktemp("runs")
    config = build_config(
        SHAPES_UNET,
        overrides=[
            f"dataset.path={shapes_dataset}".replace("=", '="', 1) + '"',
            f'runs_dir="{runs}"',
            "train.epochs=2",
            "train.workers=0",
            "input.size=[32,32]",
            "train.batch_size=16",
            "model.base_width=4",
            "model.depth=2",
        ],
    )
    config.recipe = "shapes-unet"
    return fit(config)
