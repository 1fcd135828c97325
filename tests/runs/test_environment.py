"""What a run records about its dependencies: every plugin's distribution and version."""

from __future__ import annotations

import importlib
import json

import pytest
from fake_distributions import FAKE_MODEL_PLUGIN, make_distribution

import segcli
from segcli.plugins import reset_plugins
from segcli.runs.folders import environment


@pytest.fixture
def third_party_plugins(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-fake-models", "fake_env_models", FAKE_MODEL_PLUGIN, "fake")
    make_distribution(site, "segcli-broken", "broken_env_plugin", "raise ImportError('x')\n", "bad")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    reset_plugins()
    yield
    reset_plugins()


def test_environment_lists_every_plugin_with_its_distribution_and_version(third_party_plugins):
    plugins = environment()["plugins"]
    assert {
        "plugin": "fake",
        "distribution": "segcli-fake-models",
        "version": "1.2.3",
        "status": "ok",
    } in plugins
    assert {
        "plugin": "models",
        "distribution": "segcli",
        "version": segcli.__version__,
        "status": "ok",
    } in plugins
    assert {"plugin": "bad", "distribution": "segcli-broken", "version": "1.2.3"}.items() <= next(
        p for p in plugins if p["plugin"] == "bad"
    ).items()
    assert next(p for p in plugins if p["plugin"] == "bad")["status"] == "failed"


def test_a_run_folder_records_the_plugins_it_used(trained_run):
    recorded = json.loads((trained_run / "environment.json").read_text())["plugins"]
    assert {p["plugin"] for p in recorded} >= {"models", "losses", "metrics", "recipes"}
    assert all(p["distribution"] and p["version"] for p in recorded)
