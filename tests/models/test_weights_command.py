"""`segcli weights fetch|list`: published weights by name, into torch hub's cache.

Nothing reaches the network: TORCH_HOME points into tmp_path, and torch hub's download is
replaced by one that writes a small file (or fails as it does offline)."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import ResNet18_Weights

RESNET18 = "resnet18-f37072fd.pth"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """torch hub's download, writing a small state dict where the file would go."""
    fetched: list[str] = []

    def download(url, destination, hash_prefix=None, progress=True):
        fetched.append(url)
        torch.save(nn.Linear(3, 2).state_dict(), destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return fetched


def test_fetch_downloads_into_the_cache_once_and_says_where(cli, cache, downloads):
    first = cli("weights", "fetch", "resnet18")
    assert first.exit_code == 0, first.stderr
    assert downloads == [ResNet18_Weights.IMAGENET1K_V1.url]
    assert (cache / RESNET18).is_file()
    assert f"unet-resnet:resnet18 downloaded: {cache / RESNET18} (" in first.stdout
    again = cli("weights", "fetch", "unet-resnet:resnet18")
    assert again.exit_code == 0 and len(downloads) == 1  # the cached file is kept
    assert "already in the cache" in again.stdout


def test_fetch_offline_is_the_one_line_that_names_file_folder_and_address(cli, cache, monkeypatch):
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", unreachable)
    result = cli("weights", "fetch", "resnet34")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 5 and len(lines) == 1 and lines[0].startswith("error: ")
    line = " ".join(result.stderr.split())  # the console may wrap a long line
    assert "resnet34-b627a593.pth" in line and str(cache) in line
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in line


def test_names_that_are_unknown_or_name_several_files_list_the_valid_ones(cli, cache, downloads):
    unknown = cli("weights", "fetch", "resnet19")
    assert unknown.exit_code == 2 and "valid names: resnet18, resnet34" in unknown.stderr
    several = cli("weights", "fetch", "imagenet")  # the backbone of four models
    assert several.exit_code == 2 and "deeplabv3-resnet50:imagenet" in several.stderr
    assert downloads == []


def test_list_shows_which_published_files_are_cached_with_their_size(cli, cache, downloads):
    assert cli("weights", "fetch", "resnet18").exit_code == 0
    listed = cli("weights", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["unet-resnet:resnet18"]["bytes"] == (cache / RESNET18).stat().st_size
    assert rows["unet-resnet:resnet34"]["bytes"] is None  # not cached
    assert rows["unet-resnet:resnet34"]["path"] == str(cache / "resnet34-b627a593.pth")
    assert "deeplabv3-resnet50:coco" in rows and "fcn8s-vgg:vgg16" in rows
    table = cli("weights", "list")
    assert table.exit_code == 0 and "cache: " in table.stdout and "yes" in table.stdout
