"""Tests that need a program or an optional package: skipped where it is missing, except in
CI, where a missing tool means CI installs less than the tests need, so the test fails.

CI is recognised by the `CI` environment variable that CI services set (`true`, or `1`)."""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_program(*names: str, why: str = "") -> str:
    """The path of the first of `names` found on PATH; without any of them the calling test
    is skipped (failed in CI). `why` says what installs it, for the message."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    skip_missing_tool(f"none of {', '.join(names)} is on PATH", why)


def require_module(name: str, why: str = "") -> ModuleType:
    """The imported module `name`; when it cannot be imported the calling test (or test module,
    at import time) is skipped (failed in CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        problem = f"cannot import {name} ({error})"
    skip_missing_tool(problem, why)  # outside the except: no chained traceback in CI's log


def skip_missing_tool(what: str, why: str = "") -> NoReturn:
    """Skip the calling test because `what` is missing, or fail it in CI."""
    import pytest  # only tests call this: pytest is no dependency of segcli itself

    message = f"{what}{f'; {why}' if why else ''}"
    if in_ci():
        pytest.fail(f"CI must provide this: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)
