"""docs/errors.md's exit-code table matches the code: every error class (segcli.errors, and
any other SegcliError subclass in segcli/ or plugins/) has its exit code in the table, named
in that code's row, and every row's code and class names exist in the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import segcli.errors as errors

ROOT = Path(__file__).resolve().parents[1]
ERRORS_DOC = ROOT / "docs" / "errors.md"
SOURCES = [ROOT / "segcli", ROOT / "plugins"]


def documented_codes() -> dict[int, set[str]]:
    """The exit-code table: code -> the class names (in backticks) of its row."""
    text = ERRORS_DOC.read_text()
    table = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows: dict[int, set[str]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue  # the header, the separator, prose
        code = int(cells[0])
        assert code not in rows, f"exit code {code} has two rows in {ERRORS_DOC.name}"
        rows[code] = set(re.findall(r"`(\w+)`", cells[1]))
    return rows


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def _own_exit_code(node: ast.ClassDef) -> int | None:
    for statement in node.body:
        target = None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        if isinstance(target, ast.Name) and target.id == "exit_code":
            assert isinstance(value, ast.Constant) and isinstance(value.value, int), (
                f"{node.name}.exit_code is not a literal int: the docs test cannot read it"
            )
            return value.value
    return None


def error_classes() -> dict[str, tuple[int, bool, str]]:
    """Every SegcliError subclass in segcli/ and plugins/ (tests excluded): name -> (exit
    code, whether it sets a code of its own, where it is defined). Read from the sources, so
    a plugin that is not installed or not importable here is still seen."""
    found: dict[str, tuple[int, bool, str]] = {"SegcliError": (1, True, "segcli/errors.py")}
    pending: list[tuple[ast.ClassDef, str]] = []
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            if "tests" in path.relative_to(ROOT).parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            where = str(path.relative_to(ROOT))
            pending += [(n, where) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    progress = True
    while progress:  # a subclass may come before its base: resolve until nothing changes
        progress = False
        for node, where in list(pending):
            base = next((b for b in _base_names(node) if b in found), None)
            if base is None:
                continue
            own = _own_exit_code(node)
            found[node.name] = (found[base][0] if own is None else own, own is not None, where)
            pending.remove((node, where))
            progress = True
    return found


def test_the_source_reader_agrees_with_the_classes():
    """A check of the test itself: what it reads from segcli/errors.py is what Python has."""
    classes = error_classes()
    for name in dir(errors):
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, errors.SegcliError):
            assert classes[name][0] == value.exit_code, name


def test_every_exit_code_is_documented_with_its_classes():
    rows = documented_codes()
    for name, (code, own_code, where) in error_classes().items():
        assert code in rows, (
            f"{name} ({where}) exits with {code}, which the table of {ERRORS_DOC.name} lacks: "
            "add a row (and a section saying what produces it)"
        )
        if where == "segcli/errors.py" or own_code:
            assert name in rows[code], (
                f"{name} ({where}) is not named in the row of exit code {code} in {ERRORS_DOC.name}"
            )


def test_every_documented_code_and_class_exists():
    from segcli.cli import BROKEN_PIPE_EXIT

    classes = error_classes()
    codes = {code for code, _, _ in classes.values()}
    for code, names in documented_codes().items():
        if not names:  # success, and the pipe's reader gone: the CLI's own exits
            assert code in (0, BROKEN_PIPE_EXIT), f"exit code {code} is documented without a class"
            continue
        assert code in codes, f"exit code {code} is documented but no error class has it"
        for name in names:
            assert name in classes, f"{name} is documented but is no error class"
            assert classes[name][0] == code, (
                f"{name} is documented under exit code {code} but has {classes[name][0]}"
            )
