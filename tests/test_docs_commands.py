"""Every shell command in README.md and docs/plugins.md runs, in order, as a reader would.

The rule for what is a command: a line inside a fenced block tagged ``bash``, ``sh``,
``shell`` or ``console`` (a leading ``$ `` prompt is dropped) whose first word is
``segcli``, ``pip``, ``python`` or ``python3``. A line ending in ``\\`` continues on the next;
``# ...`` comments are dropped; ``a && b`` is two commands. Untagged blocks (directory
trees, illustrations) and other first words (``pytest``, ``torchrun``) are not run.

Each document runs in its own empty folder, its commands in the order they appear, so a
later command uses what an earlier one made (a prepared dataset, a run, an installed
plugin). The documents are read when the test runs, so an edited page is tested as it is.
Commands are changed only as the tables below say, visibly:

- ``SKIPPED``: commands that cannot run in CI (the reader's own data, real datasets,
  installing segcli itself), each with its reason, matched by the start of the command.
- ``SUBSTITUTIONS``: text replaced to make a command small or to name a file the folder
  has (``photos/`` becomes the shapes validation images).
- ``PLACEHOLDERS``: ``<run>``-style names, replaced by the newest run folder.
- Every ``segcli train`` gets ``--max-steps 2`` (``SHORT_TRAINING``).
- ``pip`` runs offline (``--no-index``, ``--no-build-isolation``, ``--no-deps``); a local
  source folder of the checkout is copied into the test folder first (building writes next
  to the source), and ``pip install`` installs with ``--target`` into the test folder,
  which later commands get on ``PYTHONPATH`` -- as if installed into the environment.

A command that exits non-zero fails the test, naming the document, line and command.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from wheel_building import can_build_plugin_wheels

from segcli.testing.tools import require_module, skip_missing_tool

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/plugins.md"]
LANGUAGES = {"bash", "sh", "shell", "console"}
RUN = {"segcli", "pip", "python", "python3"}

SEGCLI_ITSELF = "segcli is already installed in the environment that runs the tests"
SKIPPED = {
    "pip install -e .": SEGCLI_ITSELF,
    'pip install -e ".[test,mlflow]"': SEGCLI_ITSELF,
    "segcli prepare folder ./images": "needs the reader's own images and masks",
    "segcli prepare tgs-salt": "a real dataset (../shared/data), not in CI",
    "segcli prepare isbi2012": "a real dataset (../shared/data), not in CI",
    "segcli prepare idd-lite": "a real dataset (../shared/data), not in CI",
    "segcli prepare coco": "needs the reader's own COCO export",
    "segcli prepare labelme": "needs the reader's own labelme files",
    "segcli prepare voc": "needs the reader's own VOC or CVAT export",
    "segcli prepare cityscapes": "a real dataset (a registered download), not in CI",
    "segcli train --data data/folder": (
        "trains on the dataset of the skipped `segcli prepare folder`"
    ),
    "segcli train --plugin shapes-unet --data data/folder": (
        "trains on the dataset of the skipped `segcli prepare folder`"
    ),
}
SUBSTITUTIONS = {
    "train.epochs=50": "train.epochs=1",
    "photos/": "data/shapes/val/images/",
    "slide.tif": "data/shapes/val/images/val_00000.png",
}
PLACEHOLDERS = ("<run>", "<a>", "<b>")
SHORT_TRAINING = ["--max-steps", "2"]
COMMAND_TIMEOUT = 600


@dataclass
class Command:
    document: str
    line: int
    text: str  # as written, after joining continuations and dropping comments

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)


def documented_commands(markdown: str, document: str) -> list[Command]:
    """The commands of `markdown`, by the rule in this module's docstring."""
    commands: list[Command] = []
    language: str | None = None
    pending, start = "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence:
            language = None if language is not None else fence.group(1).lower()
            continue
        if language not in LANGUAGES:
            continue
        if not pending:
            start = number
            line = line.strip().removeprefix("$ ")
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        words, pending = shlex.split(pending, comments=True), ""
        while words:
            part, words = _up_to(words, "&&")
            if part and part[0] in RUN:
                commands.append(Command(document, start, shlex.join(part)))
    return commands


def _up_to(words: list[str], separator: str) -> tuple[list[str], list[str]]:
    if separator in words:
        at = words.index(separator)
        return words[:at], words[at + 1 :]
    return words, []


def skip_reason(command: Command) -> str | None:
    for start, reason in SKIPPED.items():
        if command.words[: len(shlex.split(start))] == shlex.split(start):
            return reason
    return None


class Reader:
    """Runs one document's commands in `folder`, keeping what they installed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.work = folder / "work"
        self.work.mkdir()
        self.site = folder / "site"
        self.sources = folder / "sources"

    def run(self, command: Command) -> None:
        words = self.prepare(command)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "NO_COLOR": "1",
            "COLUMNS": "200",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(self.site), os.environ.get("PYTHONPATH")])
            ),
        }
        result = subprocess.run(
            words, cwd=self.work, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()[-15:]
            pytest.fail(
                f"{command.document}:{command.line}: `{command.text}` (run as "
                f"`{shlex.join(words)}`) exited {result.returncode}:\n" + "\n".join(output),
                pytrace=False,
            )

    def prepare(self, command: Command) -> list[str]:
        """The command as this test runs it: substitutions, placeholders, offline pip."""
        text = command.text
        for old, new in SUBSTITUTIONS.items():
            text = text.replace(old, new)
        for placeholder in PLACEHOLDERS:
            if placeholder in text:
                text = text.replace(placeholder, self.newest_run())
        words = shlex.split(text)
        program, arguments = words[0], words[1:]
        if program in ("python", "python3") and arguments[:2] == ["-m", "pip"]:
            program, arguments = "pip", arguments[2:]
        if program == "pip":
            return [sys.executable, "-m", "pip", *self.offline_pip(arguments)]
        if program == "segcli":
            if arguments[:1] == ["train"] and not {"--max-steps", "--print-config"} & {*arguments}:
                arguments = [*arguments, *SHORT_TRAINING]
            return [sys.executable, "-m", "segcli", *arguments]
        return [sys.executable, *arguments]

    def offline_pip(self, arguments: list[str]) -> list[str]:
        action = arguments[0]
        if action not in ("install", "wheel"):
            return arguments
        flags = ["--no-index", "--no-build-isolation", "--no-deps"]
        if action == "install":  # editable installs into --target do not exist: a copy
            flags += ["--target", str(self.site), "--upgrade"]
        rest = [self.copied_source(word) for word in arguments[1:] if word not in {"-e", *flags}]
        return [action, *flags, *rest]

    def copied_source(self, word: str) -> str:
        """A local source folder of the checkout, copied into the test folder."""
        source = REPO / word
        if word.startswith("-") or not (source / "pyproject.toml").is_file():
            return word
        assert source.resolve() != REPO, f"installing segcli itself: add `{word}` to SKIPPED"
        copy = self.sources / source.resolve().name
        if not copy.exists():
            shutil.copytree(
                source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
            )
        return str(copy)

    def newest_run(self) -> str:
        runs = sorted((self.work / "runs").glob("*/config.toml"), key=lambda p: p.stat().st_mtime)
        assert runs, "a command names a run (<run>) before any run exists"
        return runs[-1].parent.name


def test_the_rule_picks_commands_from_shell_blocks_only():
    markdown = "\n".join(
        [
            "```",
            "segcli not-run  # untagged",
            "```",
            "```console",
            "$ pip install ./plugins/x && segcli list models   # two commands",
            "pytest -q",
            "```",
            "```bash",
            "segcli train --data data/shapes \\",
            "    --set model.name=smp-unet",
            "python -m pip wheel .",
            "torchrun -m segcli train",
            "```",
            "```python",
            "segcli = 1",
            "```",
        ]
    )
    commands = documented_commands(markdown, "doc.md")
    assert [(c.line, c.text) for c in commands] == [
        (5, "pip install ./plugins/x"),
        (5, "segcli list models"),
        (9, "segcli train --data data/shapes --set model.name=smp-unet"),
        (11, "python -m pip wheel ."),
    ]


def test_a_failing_example_fails_naming_its_line(tmp_path):
    reader = Reader(tmp_path)
    reader.run(Command("doc.md", 2, "segcli list models"))
    with pytest.raises(pytest.fail.Exception, match=r"doc.md:3: `segcli list modles` .* exited 2"):
        reader.run(Command("doc.md", 3, "segcli list modles"))


def all_commands() -> list[Command]:
    return [
        command
        for document in DOCUMENTS
        for command in documented_commands((REPO / document).read_text(), document)
    ]


def test_every_skip_and_substitution_still_matches_a_documented_command():
    commands = all_commands()
    texts = [command.text for command in commands]
    for start in SKIPPED:
        words = shlex.split(start)
        assert any(c.words[: len(words)] == words for c in commands), (
            f"SKIPPED entry `{start}` matches no documented command: remove it"
        )
    for old in SUBSTITUTIONS:
        assert any(old in text for text in texts), f"SUBSTITUTIONS entry `{old}` is unused"


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS)
def test_documented_commands_run(document, tmp_path):
    if document == "docs/plugins.md":  # the walk-through builds and installs segcli-smp
        require_module("segmentation_models_pytorch")
        if not can_build_plugin_wheels():
            skip_missing_tool("building segcli-smp needs setuptools>=77")
    commands = documented_commands((REPO / document).read_text(), document)
    assert commands, f"{document} has no shell commands any more: is the rule still right?"
    reader = Reader(tmp_path)
    for command in commands:
        if skip_reason(command) is None:
            reader.run(command)
