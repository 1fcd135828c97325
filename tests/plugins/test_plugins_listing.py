"""`segcli plugins`: each plugin's distribution and version, and what it registered of every
kind, commands included; broken plugins reported, never fatal."""

from __future__ import annotations

import json
import re

import pytest
from fake_distributions import make_distribution, segcli

MODEL_AND_COMMAND = """
import segcli

@segcli.hookimpl
def register_models(register):
    register("tiny-listed", "listed_plugin:build", "a model from a third-party package")

@segcli.hookimpl
def register_commands(app):
    @app.command("hello")
    def hello():
        print("hello from a plugin")

def build(num_classes, in_channels=3):
    import torch
    return torch.nn.Conv2d(in_channels, num_classes, 1)
"""

FAILING_COMMAND = """
import segcli

@segcli.hookimpl
def register_commands(app):
    raise RuntimeError("cannot add its command")
"""


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-listed", "listed_plugin", MODEL_AND_COMMAND, "listed")
    make_distribution(site, "segcli-cmd-bug", "command_bug_plugin", FAILING_COMMAND, "cmd-bug")
    make_distribution(site, "segcli-broken", "broken_listed", "raise ImportError('no')\n", "gone")
    return site


def test_plugins_json_lists_distribution_version_and_every_kind(site):
    result = segcli(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    statuses = {status["name"]: status for status in json.loads(result.stdout)}
    listed = statuses["listed"]
    assert (listed["distribution"], listed["version"], listed["status"]) == (
        "segcli-listed",
        "1.2.3",
        "ok",
    )
    assert listed["registered"] == {"model": ["tiny-listed"], "command": ["hello"]}
    assert statuses["cmd-bug"]["status"] == "failed"
    assert "cannot add its command" in statuses["cmd-bug"]["error"]
    assert "command" not in statuses["cmd-bug"]["registered"]
    assert statuses["gone"]["status"] == "failed"
    assert statuses["models"]["registered"]["model"]  # built-ins too, with segcli's version
    assert statuses["models"]["distribution"] == "segcli"


def test_plugins_table_shows_versions_counts_and_failures(site):
    result = segcli(site, "plugins", COLUMNS="200")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if " listed " in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:4] == ["listed", "segcli-listed", "1.2.3", "ok"]
    assert "1 model: tiny-listed" in result.stdout and "1 command: hello" in result.stdout
    assert re.search(r"\b\d+ models: ", result.stdout)  # a count per kind, then the names
    assert "failed: ImportError" in result.stdout


def test_a_plugin_command_runs(site):
    result = segcli(site, "hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from a plugin\n"
