"""A plugin cannot take over or silence the command line: its commands cannot shadow
segcli's (or another plugin's), and whatever its import or hooks do (`SystemExit`,
`os._exit`, `print`, a slow import) is contained, reported by `segcli plugins`, and never
reaches `--version` or another plugin."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_distributions import make_distribution, segcli

HIJACK_TRAIN = """
import segcli

@segcli.hookimpl
def register_models(register):
    register("hijacker-net", "hijack_plugin:build", "a model of the hijacking plugin")

@segcli.hookimpl
def register_commands(app):
    @app.command("train")
    def train():
        print("hijacked")

def build(num_classes, in_channels=3):
    raise AssertionError("never built")
"""

FIRST_HELLO = """
import segcli

@segcli.hookimpl
def register_commands(app):
    @app.command("hello")
    def hello():
        print("hello from the first plugin")
"""

SECOND_HELLO = FIRST_HELLO.replace("the first", "the second")


def _statuses(site: Path, **env: str) -> dict[str, dict]:
    result = segcli(site, "plugins", "--json", **env)
    assert result.returncode == 0, result.stderr
    return {status["name"]: status for status in json.loads(result.stdout)}


def _one_plugin(tmp_path: Path, source: str, name: str = "hostile") -> Path:
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, f"segcli-{name}", f"{name}_plugin", source, name)
    return site


def test_a_plugin_command_cannot_shadow_a_built_in_command(tmp_path):
    site = _one_plugin(tmp_path, HIJACK_TRAIN, "hijack")

    train_help = segcli(site, "train", "--help")
    assert train_help.returncode == 0, train_help.stderr
    assert "--resume" in train_help.stdout  # segcli's own train, not the plugin's

    hijack = _statuses(site)["hijack"]
    assert hijack["status"] == "failed"
    assert "command 'train'" in hijack["error"] and "built-in" in hijack["error"]
    assert "command" not in hijack["registered"]
    models = segcli(site, "list", "models", "--json")
    assert "hijacker-net" not in models.stdout  # the plugin fails as a whole, like a name clash


def test_a_plugin_command_cannot_shadow_another_plugins_command(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-hello-a", "hello_a_plugin", FIRST_HELLO, "hello-a")
    make_distribution(site, "segcli-hello-b", "hello_b_plugin", SECOND_HELLO, "hello-b")

    hello = segcli(site, "hello")
    assert (hello.returncode, hello.stdout) == (0, "hello from the first plugin\n")
    statuses = _statuses(site)
    assert statuses["hello-a"]["registered"] == {"command": ["hello"]}
    assert statuses["hello-b"]["status"] == "failed"
    assert "hello-a" in statuses["hello-b"]["error"]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("raise SystemExit(3)\n", "SystemExit"),
        ("import sys\nsys.exit('bye')\n", "SystemExit"),
        ("import os\nos._exit(0)\n", "os._exit(0)"),
    ],
    ids=["SystemExit", "sys.exit", "os._exit"],
)
def test_a_plugin_exiting_at_import_is_a_failed_plugin(tmp_path, source, reason):
    site = _one_plugin(tmp_path, source)

    version = segcli(site, "--version")
    assert (version.returncode, version.stdout) == (0, "segcli 0.1.0\n"), version.stderr
    models = segcli(site, "list", "models", "--json")
    assert models.returncode == 0, models.stderr
    assert "unet" in {row["name"] for row in json.loads(models.stdout)}
    hostile = _statuses(site)["hostile"]
    assert hostile["status"] == "failed"
    assert reason in hostile["error"]


def test_a_plugin_exiting_in_its_hook_is_a_failed_plugin(tmp_path):
    source = """
import os
import segcli

@segcli.hookimpl
def register_models(register):
    register("exiting-net", "hostile_plugin:build", "")
    os._exit(0)

def build(num_classes, in_channels=3):
    raise AssertionError("never built")
"""
    site = _one_plugin(tmp_path, source)
    hostile = _statuses(site)["hostile"]
    assert hostile["status"] == "failed" and "os._exit(0)" in hostile["error"]
    assert "exiting-net" not in segcli(site, "list", "models", "--json").stdout


def test_printing_plugins_do_not_corrupt_json_output(tmp_path):
    source = """
import segcli
print("loaded!")

@segcli.hookimpl
def register_models(register):
    print("registering!")
    register("printing-net", "hostile_plugin:build", "")

def build(num_classes, in_channels=3):
    raise AssertionError("never built")
"""
    site = _one_plugin(tmp_path, source)
    models = segcli(site, "list", "models", "--json")
    assert models.returncode == 0, models.stderr
    assert "printing-net" in {row["name"] for row in json.loads(models.stdout)}
    assert "loaded!" in models.stderr and "registering!" in models.stderr  # not lost
    assert _statuses(site)["hostile"]["status"] == "ok"


@pytest.mark.parametrize("args", [["--version"], ["train", "--help"], ["predict", "--help"]])
def test_version_and_built_in_help_load_no_plugin(tmp_path, args):
    marker = tmp_path / "imported"
    site = _one_plugin(tmp_path, f"open({str(marker)!r}, 'w').close()\n")
    result = segcli(site, *args)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    segcli(site, "plugins", "--json")
    assert marker.exists()  # the marker does tell when the plugin is imported


def test_a_slow_plugin_is_named_by_segcli_plugins(tmp_path):
    site = _one_plugin(tmp_path, "import time\ntime.sleep(1.2)\n", "sluggish")
    statuses = _statuses(site)
    assert statuses["sluggish"]["status"] == "ok"
    assert statuses["sluggish"]["load_seconds"] >= 1.2
    assert statuses["sluggish"]["slow"] is True
    assert statuses["models"]["slow"] is False

    table = segcli(site, "plugins", COLUMNS="200")
    row = next(line for line in table.stdout.splitlines() if " sluggish " in line)
    assert "slow" in row and "s to load" in row


def test_os_exit_is_put_back_once_plugin_code_ran(tmp_path, monkeypatch):
    from segcli.plugins import load_plugins

    site = _one_plugin(tmp_path, "import os\nos._exit(0)\n")
    monkeypatch.syspath_prepend(str(site))
    real_exit = os._exit
    plugins = load_plugins()
    assert plugins.status_of("hostile").status == "failed"
    assert os._exit is real_exit


def test_plugin_commands_load_only_on_an_app_the_command_line_hosts(tmp_path, monkeypatch):
    """The plugin manager imports no CLI module: the command line hands it the app a plugin's
    commands go on and the built-in names they may not shadow; loaded without it (segcli as a
    library), a plugin adds no command and its other names load."""
    from segcli.cli.help_format import Typer
    from segcli.plugins import CommandHost, load_plugins

    site = _one_plugin(tmp_path, HIJACK_TRAIN.replace("hijack_plugin", "library_plugin"), "library")
    monkeypatch.syspath_prepend(str(site))
    as_library = load_plugins().status_of("library")
    assert as_library.status == "ok"
    assert as_library.registered == {"model": ["hijacker-net"]}

    hosted = load_plugins(CommandHost(Typer, frozenset({"train"}))).status_of("library")
    assert hosted.status == "failed" and "already a built-in command" in hosted.error
    renamed = load_plugins(CommandHost(Typer, frozenset({"predict"}))).status_of("library")
    assert renamed.registered == {"model": ["hijacker-net"], "command": ["train"]}
