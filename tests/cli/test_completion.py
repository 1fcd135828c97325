"""Shell completion: the script Typer prints, and the values segcli offers on <TAB>.

Completion is driven the way the shells drive it: `segcli` run with `_SEGCLI_COMPLETE` and
the words typed so far in the environment, its answer read from stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_distributions import make_distribution

from segcli.cli import completion
from segcli.plugins import get_plugins

# what a <TAB> must not import: torch and numpy are slow to load, and the workflow packages
# import them
HEAVY_MODULES = ("torch", "numpy", "segcli.training", "segcli.inference", "segcli.runs.folders")

BROKEN_RECIPES = """
import segcli

@segcli.hookimpl
def register_recipes(register):
    register("half-registered", {"model": {"name": "unet"}}, "registered before the crash")
    raise RuntimeError("the recipes module has a bug")
"""

NOISY_PLUGIN = """
import logging

logging.getLogger("segcli.noisy").warning("a warning while the shell completes")
"""


def run_segcli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SEGCLI_", "_SEGCLI"))}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "segcli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
    )


def complete_bash(line: str, cwd: Path | None = None, **env: str) -> list[str]:
    """What bash offers for `line` (ending in a space: a new, empty word)."""
    words = line.split()
    current = len(words) if line.endswith(" ") else len(words) - 1
    result = run_segcli(
        cwd=cwd,
        _SEGCLI_COMPLETE="complete_bash",
        COMP_WORDS=line,
        COMP_CWORD=str(current),
        **env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # anything here would be printed into the user's prompt
    return result.stdout.split()


def make_run(runs: Path, name: str, *checkpoints: str) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text("")
    for checkpoint in checkpoints:
        (run / f"{checkpoint}.safetensors").write_bytes(b"")
    return run


def test_show_completion_prints_a_bash_script():
    result = run_segcli("--show-completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "_SEGCLI_COMPLETE=complete_bash" in result.stdout
    assert "complete -o default -F _segcli_completion segcli" in result.stdout


def test_help_offers_installing_completion():
    result = run_segcli("--help")
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_train_plugin_completes_recipe_names():
    offered = complete_bash("segcli train --plugin ")
    assert offered == get_plugins().recipes.names()
    assert complete_bash("segcli train --plugin shapes") == ["shapes-unet"]


def test_commands_and_preparers_complete():
    assert complete_bash("segcli tr") == ["train"]
    assert "shapes" in complete_bash("segcli prepare ")
    assert complete_bash("segcli list mo") == ["models"]


def test_set_completes_keys_then_plugin_names():
    assert "model.name=" in complete_bash("segcli train --set mod")
    assert "train.optimizer.name=" in complete_bash("segcli train --set train.opt")
    assert not any("options" in key for key in completion.configuration_keys())
    # bash splits words at `=`, so values are offered to zsh and fish, which keep the word
    models = [value for value, _ in completion.settings("model.name=")]
    assert models == [f"model.name={name}" for name in get_plugins().models.names()]
    assert [value for value, _ in completion.settings("loss.name=dic")] == ["loss.name=dice"]
    assert completion.settings("train.lr=") == []


def test_descriptions_fit_on_one_line():
    # fish reads every output line as a candidate: a wrapped description would become one
    for _, description in completion.settings("model.name="):
        assert "\n" not in description and len(description) <= 40


def test_resume_completes_last_and_runs_that_can_continue(tmp_path):
    runs = tmp_path / "runs"
    continuable = make_run(runs, "20260101-000000-shapes-unet", "best", "last")
    make_run(runs, "20260102-000000-shapes-unet")  # killed before its first checkpoint
    make_run(runs, "20260103-000000-shapes-unet", "best")  # no `last`: nothing to continue
    assert complete_bash("segcli train --resume ", cwd=tmp_path) == [
        "last",
        "runs/" + continuable.name,
    ]
    elsewhere = tmp_path / "elsewhere"
    other = make_run(elsewhere, "20260104-000000-isbi-unet", "last")
    offered = complete_bash(f"segcli train --runs-dir {elsewhere} --resume ", cwd=tmp_path)
    assert offered == ["last", str(other)]


def test_checkpoint_completes_run_folders_newest_first(tmp_path):
    runs = tmp_path / "runs"
    # named as runs are (dataset first): newest by time, as predict picks, not by name
    older = make_run(runs, "tgs-salt-unet-20260101-000000", "best")
    newer = make_run(runs, "shapes-unet-20260105-000000", "best", "last")
    make_run(runs, "shapes-unet-20260106-000000")
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))
    assert complete_bash("segcli predict --checkpoint ", cwd=tmp_path) == [
        "runs/" + newer.name,
        "runs/" + older.name,
    ]
    # a path that is no run folder: nothing offered, so the shell completes file names
    assert complete_bash("segcli predict --checkpoint model", cwd=tmp_path) == []


def test_completion_survives_broken_and_noisy_plugins(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-broken", "broken_on_import", "raise ImportError('x')\n", "b1")
    make_distribution(site, "segcli-buggy", "buggy_recipes", BROKEN_RECIPES, "b2")
    make_distribution(site, "segcli-noisy", "noisy_plugin", NOISY_PLUGIN, "b3")
    offered = complete_bash("segcli train --plugin ", PYTHONPATH=str(site))
    assert "shapes-unet" in offered and "half-registered" not in offered


def test_a_failing_completion_offers_nothing(monkeypatch):
    def broken(*_: object) -> None:
        raise RuntimeError("plugins cannot load")

    monkeypatch.setattr("segcli.plugins.get_plugins", broken)
    assert completion.recipes("") == []


@pytest.mark.parametrize(
    "line", ["segcli train --plugin ", "segcli train --set model.name", "segcli list "]
)
def test_completion_does_not_import_torch(line, tmp_path):
    probe = tmp_path / "modules.txt"
    code = (
        "import atexit, sys, pathlib\n"
        f"atexit.register(lambda: pathlib.Path({str(probe)!r}).write_text("
        f"' '.join(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
        "sys.argv = ['segcli']\n"
        "from segcli.cli import main\n"
        "main()\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SEGCLI_")}
    words = line.split()
    environment.update(
        _SEGCLI_COMPLETE="complete_bash",
        COMP_WORDS=line,
        COMP_CWORD=str(len(words) if line.endswith(" ") else len(words) - 1),
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "completion offered nothing"
    assert probe.read_text() == ""
