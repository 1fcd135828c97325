"""docs/architecture.md names every package and module under segcli/ with its one job, and
names nothing that does not exist: a new module fails here until the page describes it, and a
moved or deleted one fails until the page forgets it (a row, a `segcli.a.b` name or a
`segcli/a/b.py` path alike)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SECTION = "\n## Packages and modules\n"


def module_rows(text: str) -> dict[str, str]:
    """Each row of the page's modules section: its first cell, a path below segcli/
    (`training/fit.py`, a package by its folder: `training/`) -> the module's one job."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([^`]+)` \| (.*?) \|$", section, flags=re.MULTILINE))


def modules_on_disk(root: Path) -> set[str]:
    """Every module under segcli/ as the modules section writes it."""
    package = root / "segcli"
    names = set()
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if path.name == "__init__.py" and relative.parent != Path("."):
            names.add(f"{relative.parent.as_posix()}/")
        else:
            names.add(relative.as_posix())
    return names


def module_source(root: Path, dotted: str) -> str | None:
    """The source of module `dotted` (a package: its __init__.py), or None when there is none."""
    relative = Path(*dotted.split("."))
    for path in ((root / relative).with_suffix(".py"), root / relative / "__init__.py"):
        if path.is_file():
            return path.read_text()
    return None


def names_nothing(root: Path, dotted: str) -> bool:
    """Whether `segcli.a.b` names no module, nor a name in a module (`segcli.building.forward`):
    the longest prefix that is a module must exist and mention what follows it."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        source = module_source(root, ".".join(parts[:end]))
        if source is not None:
            rest = parts[end:]
            return bool(rest) and re.search(rf"\b{re.escape(rest[0])}\b", source) is None
    return True


def problems(text: str, root: Path) -> list[str]:
    rows = module_rows(text)
    on_disk = modules_on_disk(root)
    page = "docs/architecture.md"
    found = [f"segcli/{name} is not in {page}" for name in sorted(on_disk - set(rows))]
    found += [
        f"{page} describes segcli/{name}, which does not exist"
        for name in sorted(set(rows) - on_disk)
    ]
    found += [f"segcli/{name} has no job in {page}" for name, job in rows.items() if not job]
    for dotted in sorted(set(re.findall(r"`(segcli(?:\.\w+)+)`", text))):
        if names_nothing(root, dotted):
            found.append(f"{page} names {dotted}, which does not exist")
    for path in sorted(set(re.findall(r"`(segcli/[\w/]+(?:\.py)?)`", text))):
        if not (root / path).exists():
            found.append(f"{page} names {path}, which does not exist")
    return found


def test_the_architecture_page_names_every_module_and_only_modules_that_exist():
    found = problems(ARCHITECTURE.read_text(), ROOT)
    assert not found, "\n".join(found)


def test_a_new_module_and_a_stale_name_are_caught(tmp_path):
    package = tmp_path / "segcli"
    (package / "runs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "runs" / "__init__.py").write_text("")
    (package / "runs" / "folders.py").write_text("def find_checkpoint(): ...\n")
    (package / "stray.py").write_text("")
    page = (
        "# Architecture\n\n"
        "`segcli.runs.folders.find_checkpoint` and `segcli.engine.build` and `segcli/runs/`\n\n"
        "## Packages and modules\n\n| module | its one job |\n|---|---|\n"
        "| `__init__.py` | the public API |\n| `runs/` | run files |\n"
        "| `runs/folders.py` | run folders |\n| `runs/log.py` | the run log |\n"
        "\n## Decisions\n\n`segcli/engine/train.py` and `segcli.runs.folders.newest_run`\n"
    )
    assert problems(page, tmp_path) == [
        "segcli/stray.py is not in docs/architecture.md",
        "docs/architecture.md describes segcli/runs/log.py, which does not exist",
        "docs/architecture.md names segcli.engine.build, which does not exist",
        "docs/architecture.md names segcli.runs.folders.newest_run, which does not exist",
        "docs/architecture.md names segcli/engine/train.py, which does not exist",
    ]
