"""segcli's public API is one list, `segcli.__all__`, and docs/plugins.md documents exactly it:
every exported name, each function with its parameters, and nothing that is not exported."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import segcli

PLUGINS_DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
SECTION = "## The public API"


def documented(text: str) -> dict[str, str]:
    """Name -> the first cell of its row (`name` or `name(parameters)`) in the API section."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    return {row.split("(", 1)[0]: row for row in rows}


def shown(name: str, value: object) -> str:
    """How the section writes a name: a function with its parameters' names (`*` before
    keyword-only ones), anything else alone."""
    if not inspect.isfunction(value):
        return name
    parts: list[str] = []
    for parameter in inspect.signature(value).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and "*" not in parts:
            parts.append("*")
        prefix = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(
            parameter.kind, ""
        )
        parts.append(prefix + parameter.name)
    return f"{name}({', '.join(parts)})"


def mismatches(text: str, exported: list[str]) -> list[str]:
    rows = documented(text)
    problems = [f"{name} is exported but not documented" for name in exported if name not in rows]
    problems += [f"{name} is documented but not exported" for name in rows if name not in exported]
    for name in exported:
        if name in rows and rows[name] != (expected := shown(name, getattr(segcli, name))):
            problems.append(f"{name} is documented as {rows[name]}, but is {expected}")
    return problems


def test_docs_plugins_md_documents_exactly_the_public_api():
    assert not mismatches(PLUGINS_DOC.read_text(), segcli.__all__)


def test_an_undocumented_export_a_stale_row_and_a_changed_signature_are_caught():
    text = PLUGINS_DOC.read_text()
    assert mismatches(text, [*segcli.__all__, "Predictor"]) == [
        "Predictor is exported but not documented"
    ]
    stale = text.replace(SECTION, SECTION + "\n\n| `read_mask(path)` | a mask |", 1)
    assert mismatches(stale, segcli.__all__) == ["read_mask is documented but not exported"]
    changed = text.replace("| `read_image(path, channels, max_pixels)` |", "| `read_image(path)` |")
    assert mismatches(changed, segcli.__all__) == [
        "read_image is documented as read_image(path), "
        "but is read_image(path, channels, max_pixels)"
    ]


def test_every_public_name_resolves_and_is_listed_once():
    assert len(set(segcli.__all__)) == len(segcli.__all__)
    for name in segcli.__all__:
        assert getattr(segcli, name) is not None
    assert set(segcli.__all__) <= set(dir(segcli))


def test_importing_segcli_imports_neither_torch_nor_the_public_modules():
    check = (
        "import sys, segcli; segcli.__all__; segcli.hookimpl; "
        "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('segcli.')]; "
        "print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
