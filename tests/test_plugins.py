"""Third-party plugins are found through entry points; broken ones are reported, never fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FAKE_MODEL_PLUGIN = """
import segcli

@segcli.hookimpl
def register_models(register):
    register("tiny-fake", "fake_segcli_models:build", "a model from a third-party package")

def build(num_classes, in_channels=3):
    import torch
    return torch.nn.Conv2d(in_channels, num_classes, 1)
"""


def make_distribution(site: Path, dist: str, module: str, source: str, entry_name: str) -> None:
    """A throwaway installed distribution: a module and a .dist-info with entry_points.txt."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"  # wheel-style escaped name
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[segcli]\n{entry_name} = {module}\n")


@pytest.fixture
def site(tmp_path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(
        site, "segcli-fake-models", "fake_segcli_models", FAKE_MODEL_PLUGIN, "fake-models"
    )
    make_distribution(
        site,
        "segcli-broken",
        "broken_segcli_plugin",
        "raise ImportError('needs libfoo 9')\n",
        "broken",
    )
    return site


def segcli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SEGCLI_")}
    environment.update(PYTHONPATH=str(site), **env)
    return subprocess.run(
        [sys.executable, "-m", "segcli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_third_party_model_appears_and_broken_plugin_is_reported(site):
    listed = segcli(site, "list", "models", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny-fake"]["distribution"] == "segcli-fake-models"
    assert "unet" in rows

    plugins = {p["name"]: p for p in json.loads(segcli(site, "plugins", "--json").stdout)}
    assert plugins["broken"]["status"] == "failed"
    assert "needs libfoo 9" in plugins["broken"]["error"]
    assert plugins["fake-models"]["registered"] == {"model": ["tiny-fake"]}
    for builtin in ("models", "losses", "metrics", "recipes", "shapes"):
        assert plugins[builtin]["distribution"] == "segcli"
        assert plugins[builtin]["status"] == "ok"


def test_commands_still_work_with_a_broken_plugin_installed(site, tmp_path):
    result = segcli(
        site, "prepare", "shapes", "--train", "4", "--val", "2", "--out", str(tmp_path / "s")
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s" / "dataset.json").is_file()


def test_disable_and_load_lists(site):
    disabled = json.loads(
        segcli(site, "plugins", "--json", SEGCLI_DISABLE_PLUGINS="fake-models,broken").stdout
    )
    assert {p["name"]: p["status"] for p in disabled}["fake-models"] == "disabled"
    only = segcli(site, "list", "models", "--json", SEGCLI_LOAD_PLUGINS="fake-models")
    assert [row["name"] for row in json.loads(only.stdout)] == ["tiny-fake"]


def test_a_hook_that_raises_is_isolated(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    source = """
    import segcli

    @segcli.hookimpl
    def register_models(register):
        register("half-registered", object(), "")
        raise RuntimeError("hook exploded")
    """
    make_distribution(site, "segcli-exploding", "exploding_plugin", source, "exploding")
    result = segcli(site, "plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["exploding"]["status"] == "failed"
    assert "hook exploded" in plugins["exploding"]["error"]
    models = json.loads(segcli(site, "list", "models", "--json").stdout)
    assert "half-registered" not in [m["name"] for m in models]


def test_a_name_registered_twice_fails_the_second_plugin(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    source = """
    import segcli

    @segcli.hookimpl
    def register_models(register):
        register("unet", "os:getcwd", "an impostor")
    """
    make_distribution(site, "segcli-impostor", "impostor_plugin", source, "zz-impostor")
    plugins = {p["name"]: p for p in json.loads(segcli(site, "plugins", "--json").stdout)}
    assert plugins["zz-impostor"]["status"] == "failed"
    assert "registered twice" in plugins["zz-impostor"]["error"]
