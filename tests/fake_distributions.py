"""Throwaway installed distributions that register segcli plugins, and segcli run beside them:
shared by the plugin, completion, logger and run-folder tests (a module with its own name,
next to tests/conftest.py, so every test folder can import it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

FAKE_MODEL_PLUGIN = """
import segcli

@segcli.hookimpl
def register_models(register):
    register("tiny-fake", "fake_segcli_models:build", "a model from a third-party package")

def build(num_classes, in_channels=3):
    import torch
    return torch.nn.Conv2d(in_channels, num_classes, 1)
"""


def make_distribution(site: Path, dist: str, module: str, source: str, entry_name: str) -> None:
    """A throwaway installed distribution: a module and a .dist-info with entry_points.txt."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"  # wheel-style escaped name
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[segcli]\n{entry_name} = {module}\n")


def segcli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m segcli ARGS` with the distributions in `site` importable, SEGCLI_* unset."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SEGCLI_")}
    environment.update(PYTHONPATH=str(site), **env)
    return subprocess.run(
        [sys.executable, "-m", "segcli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
