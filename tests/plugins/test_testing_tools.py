"""A test whose program or package is missing skips, except in CI (CI=true), where it fails:
CI installs everything the tests need, so a skip there would hide a test that never runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from segcli.testing.tools import require_module, require_program

MISSING_PROGRAM = "segcli-no-such-program"
MISSING_MODULE = "segcli_no_such_module"


def outcome(call: Callable[[], object]) -> BaseException:
    """What `call` raised, a skip included (which would otherwise skip this test itself)."""
    try:
        call()
    except BaseException as raised:  # noqa: BLE001 - pytest's outcomes are BaseExceptions
        return raised
    raise AssertionError("nothing was raised")


@pytest.mark.parametrize("ci", ["", "false"])
def test_a_missing_tool_skips_outside_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    skipped = outcome(lambda: require_program(MISSING_PROGRAM))
    assert isinstance(skipped, pytest.skip.Exception) and MISSING_PROGRAM in str(skipped)
    skipped = outcome(lambda: require_module(MISSING_MODULE))
    assert isinstance(skipped, pytest.skip.Exception)
    assert f"cannot import {MISSING_MODULE}" in str(skipped)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_tool_fails_in_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    failed = outcome(lambda: require_program(MISSING_PROGRAM, why="apt-get install it"))
    assert isinstance(failed, pytest.fail.Exception), repr(failed)
    assert str(failed).startswith(f"CI must provide this: none of {MISSING_PROGRAM} is on PATH")
    failed = outcome(lambda: require_module(MISSING_MODULE))
    assert isinstance(failed, pytest.fail.Exception), repr(failed)
    assert f"cannot import {MISSING_MODULE}" in str(failed)


def test_a_present_tool_is_given_back(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_program(MISSING_PROGRAM, "sh").endswith("/sh")
    assert require_module("json").dumps([]) == "[]"
