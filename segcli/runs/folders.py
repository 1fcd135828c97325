"""Run folders: naming, what they record for reproducibility, and finding checkpoints."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segcli import __version__
from segcli.config import RunConfig, to_toml
from segcli.errors import CheckpointError, OutputError, SegcliError
from segcli.files import atomic_write, write_error
from segcli.runs.checkpoint_file import SUFFIX

PLAN_FILE = "plan.json"
# Held (flock) by the process training in a run folder; the lock ends with the process.
LOCK_FILE = ".segcli-train.lock"
_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._+-]+")


def create_run_dir(config: RunConfig, path: Path | None = None) -> Path:
    """`<runs_dir>/<dataset>-<model>-<YYYYmmdd-HHMMSS>/`, named after what the run trains (not
    the recipe it may have borrowed), unique even when two runs start together; or `path`
    (a cross-validation fold's folder), which must not exist yet."""
    if path is not None:
        try:
            Path(path).mkdir(parents=True)
            return Path(path)
        except FileExistsError:
            raise OutputError(
                f"{path} exists already", hint=f"resume it with --resume {path}"
            ) from None
        except OSError as exc:
            raise write_error(Path(path), exc) from None
    label = run_label(config)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(config.runs_dir)
    for attempt in range(1000):
        path = base / (f"{label}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise write_error(path, exc) from None
    raise OutputError(f"cannot find a free run folder name under {base}")


def run_label(config: RunConfig) -> str:
    """`tgs-salt-unet`: dataset and model names, safe in a folder name."""
    label = f"{config.dataset.name}-{config.model.name}"
    return _UNSAFE_IN_NAMES.sub("-", label).strip("-.") or "run"


def record_run(run_dir: Path, config: RunConfig, plan: dict[str, Any] | None = None) -> None:
    """What is needed to repeat the run: resolved config, command line, versions, git state,
    and the plan when the run was planned. Each file is written whole or not at all; when
    one cannot be written (a full disk), the new run folder is removed again."""
    try:
        write_config(run_dir, config)
        with atomic_write(run_dir / "command.txt") as stream:
            stream.write((" ".join(_quote(a) for a in sys.argv) + "\n").encode())
        with atomic_write(run_dir / "environment.json") as stream:
            stream.write(json.dumps(environment(), indent=2).encode())
        if plan is not None:
            record_plan(run_dir, plan)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process while it trains there: a second `train` in the
    same folder (`--resume` twice) would interleave metrics and overwrite checkpoints.
    `predict`, `evaluate` and `report` only read, and take no lock."""
    path = Path(run_dir) / LOCK_FILE
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputError(
                f"{run_dir} is being trained by another process (PID {holder})",
                hint="wait for it to end, or stop it first; predict and report can read the "
                "run meanwhile",
            ) from None
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(handle, pid, 0)
        os.ftruncate(handle, len(pid))
        yield
    finally:
        os.close(handle)  # releases the lock


def write_config(run_dir: Path, config: RunConfig) -> None:
    """The run's config.toml (`segcli train --config` repeats the run), written atomically:
    an extended run rewrites it. Its folds file (`dataset.folds`) is recorded relative to the
    run folder (`../folds.json` in a fold), where a configuration file's relative folds file
    is read from: a cross-validation run moved or copied whole still finds its folds."""
    recorded = config
    if config.dataset.folds is not None:
        recorded = config.model_copy(deep=True)
        recorded.dataset.folds = os.path.relpath(config.dataset.folds, run_dir)
    with atomic_write(Path(run_dir) / "config.toml") as stream:
        stream.write(to_toml(recorded).encode())


def record_plan(run_dir: Path, plan: dict[str, Any]) -> None:
    """The plan a run was trained with (`segcli.planning`): its layer, a reason per planned
    key, what it was planned for and which planned keys --config/--set overrode."""
    with atomic_write(Path(run_dir) / PLAN_FILE) as stream:
        stream.write((json.dumps(plan, indent=2) + "\n").encode())


def environment() -> dict[str, Any]:
    """Versions a run depends on, every plugin's distribution among them: a model, loss or
    transform from a plugin is as much a dependency as torch."""
    import numpy
    import torch
    import torchvision

    from segcli.plugins import get_plugins

    return {
        "segcli": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git": _git_state(),
        "plugins": [
            {
                "plugin": status.name,
                "distribution": status.distribution,
                "version": status.version,
                "status": status.status,
            }
            for status in get_plugins().statuses
        ],
    }


def _git_state() -> dict[str, Any] | None:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:,[]" for c in arg) else repr(arg)


def newest_run(
    runs_dir: Path = Path("runs"), checkpoints: tuple[str, ...] = ("best", "last")
) -> Path:
    """The most recent run folder holding one of `checkpoints`.

    Folders of runs killed before their first checkpoint are passed over: picking one would
    break `predict` and `--resume last` although good runs exist.
    """
    runs = [p for p in Path(runs_dir).glob("*/") if (p / "config.toml").is_file()]
    usable = [p for p in runs if any((p / f"{name}{SUFFIX}").is_file() for name in checkpoints)]
    if usable:
        return max(usable, key=lambda p: (p.stat().st_mtime, p.name))
    wanted = " or ".join(f"{name}{SUFFIX}" for name in checkpoints)
    if runs:
        raise CheckpointError(
            f"none of the {len(runs)} run folder(s) in {runs_dir}/ has a {wanted} "
            "(they stopped before their first epoch ended)",
            hint="train a run to the end of an epoch, or pass a checkpoint file",
        )
    raise CheckpointError(
        f"no training runs found in {runs_dir}/",
        hint="train one with `segcli train --plugin shapes-unet`, or pass --checkpoint",
    )


def discard_run_without_checkpoint(run_dir: Path, *, remove_empty_parent: bool = False) -> bool:
    """Remove a run folder that ended before its first checkpoint; True if it was removed.

    Such a folder holds only what the command line already says (its configuration and
    logs), so removing it is the simplest way to never mistake it for a run.
    `remove_empty_parent`: the runs folder was made for this run, so it goes too if empty.
    """
    run_dir = Path(run_dir)
    if any((run_dir / f"{name}{SUFFIX}").is_file() for name in ("best", "last")):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    if remove_empty_parent:
        try:
            run_dir.parent.rmdir()
        except OSError:  # another run's folder is there now
            pass
    return True


def find_checkpoint(spec: Path | None, runs_dir: Path = Path("runs"), which: str = "best") -> Path:
    """A checkpoint file from a file path, a run folder, or (None) the newest run."""
    if spec is None:
        spec = newest_run(runs_dir)
    spec = Path(spec)
    if spec.is_dir():
        for name in (which, "best", "last"):
            candidate = spec / f"{name}{SUFFIX}"
            if candidate.is_file():
                return candidate
        from segcli.runs.cross_validation import is_cross_validation

        raise CheckpointError(
            f"run folder {spec} has no checkpoint",
            hint=f"it is a cross-validation: use --ensemble {spec}, or --checkpoint {spec}/fold-0"
            if is_cross_validation(spec)
            else "was the run stopped before its first epoch ended?",
        )
    if not spec.exists():
        raise CheckpointError(f"checkpoint {spec} does not exist")
    return spec


def interrupted_message(run_dir: Path, discarded: bool) -> str:
    """What Ctrl-C during training kept, and how to go on from it."""
    if discarded:
        return f"interrupted before the first checkpoint; nothing was kept ({run_dir} removed)"
    last = Path(run_dir) / f"last{SUFFIX}"
    if not last.is_file():
        return "interrupted before the first checkpoint; nothing was kept"
    from segcli.runs.checkpoint_file import read_checkpoint_meta

    try:
        epoch = f" (epoch {read_checkpoint_meta(last)['epoch']})"
    except (SegcliError, KeyError):
        epoch = ""
    return (
        f"interrupted; last checkpoint kept at {last}{epoch}; "
        f"resume with `segcli train --resume {shlex.quote(str(run_dir))}`"
    )
