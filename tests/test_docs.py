"""Everything a user or plugin author can set is documented (as datasette checks its hooks).

A new hook, configuration key or plugin kind fails here until docs/ describes it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import BaseModel

import segcli.hookspecs
from segcli.config import RunConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _docs_text() -> str:
    return "\n".join(path.read_text() for path in sorted(DOCS.glob("*.md")))


def _hooks() -> list[str]:
    return sorted(
        name
        for name, value in vars(segcli.hookspecs).items()
        if inspect.isfunction(value) and hasattr(value, "segcli_spec")
    )


def _config_keys(schema: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, field in schema.model_fields.items():
        annotation = field.annotation
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            keys.extend(_config_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_the_hooks_are_found():
    assert "register_models" in _hooks()


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_is_documented(hook):
    assert f"`{hook}`" in _docs_text(), f"hook {hook} is not described in docs/ (plugins.md)"


@pytest.mark.parametrize("key", _config_keys())
def test_every_configuration_key_is_documented(key):
    assert f"`{key}`" in _docs_text(), f"configuration key {key} is not in docs/training.md"


@pytest.mark.parametrize("hook", _hooks())
def test_every_plugin_kind_is_listed_in_the_docs(hook):
    kind = hook.removeprefix("register_")
    if kind == "commands":
        pytest.skip("commands are not listed by `segcli list`")
    assert f"segcli list {kind}" in _docs_text(), f"`segcli list {kind}` is not in docs/"
