"""Every command's --help reads cleanly: values named like `--out OUT` and `KIND`, never by a
Python type (`<list[str]>`) or in braces (`{kind}`), and command summaries never cut off."""

from __future__ import annotations

import re

import pytest
import typer

from segcli.plugins import get_plugins

# what Typer draws in place of a value when nobody named it: <str>, <list[str]>, <path>, {kind}
TYPE_PLACEHOLDER = re.compile(
    r"<(?:list\[)?(?:str|int|float|bool|path|file|directory|text|integer|choice|uuid|datetime)"
    r"(?:\])?(?: range)?>|<[a-z]+(?:\|[a-z]+)+>"
)
BRACED_ARGUMENT = re.compile(r"\{[a-z_]+\}")


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group, plugin commands and one `prepare NAME` per preparer included."""
    from segcli.cli import app

    get_plugins().add_commands(app)
    paths: list[tuple[str, ...]] = [()]

    def walk(command: object, path: tuple[str, ...]) -> None:
        ctx = typer.Context(command)  # type: ignore[arg-type]
        for name in command.list_commands(ctx):  # type: ignore[attr-defined]
            sub = command.get_command(ctx, name)  # type: ignore[attr-defined]
            paths.append((*path, name))
            if hasattr(sub, "list_commands"):
                walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


PATHS = command_paths()


def test_the_walk_reaches_every_command():
    names = {" ".join(path) for path in PATHS}
    expected = {"train", "predict", "evaluate", "export", "list", "plugins", "visualize curves"}
    assert expected <= names
    assert {f"prepare {name}" for name in get_plugins().datasets.names()} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "segcli")
def test_help_names_values_without_placeholders(cli, path):
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert not TYPE_PLACEHOLDER.search(text), TYPE_PLACEHOLDER.search(text)
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: segcli {' '.join(path)}".rstrip())
    assert not BRACED_ARGUMENT.search(usage), usage
    assert not any(line.rstrip().endswith("...") for line in _commands_section(text))


def _commands_section(text: str) -> list[str]:
    lines = text.splitlines()
    if "Commands:" not in lines:
        return []
    return lines[lines.index("Commands:") + 1 :]


def test_arguments_and_options_are_named_as_typed(cli):
    predict = cli("predict", "--help").stdout
    assert predict.splitlines()[0] == "Usage: segcli predict [OPTIONS] INPUTS..."
    assert "--tile SIZE" in predict and "--runs-dir RUNS_DIR" in predict
    assert cli("list", "--help").stdout.splitlines()[0] == "Usage: segcli list [OPTIONS] KIND"
    train = cli("train", "--help").stdout
    assert "--set KEY=VALUE" in train and "--plugin RECIPE" in train
    assert "--print-config " in train  # a flag takes no value
    assert "[RAW]" in cli("prepare", "folder", "--help").stdout.splitlines()[0]


def test_top_level_summaries_are_whole_sentences(cli):
    text = " ".join(" ".join(_commands_section(cli("--help").stdout)).split())
    assert (
        "evaluate Score the model's masks against a split's masks, at the images' own sizes."
        in text
    )
    assert "what each registered." in text  # plugins' summary, once cut at "status and..."
