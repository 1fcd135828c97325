"""What building plugins/segcli-smp's wheel offline needs, for the tests that do it."""

from __future__ import annotations

import importlib.metadata
import importlib.util


def can_build_plugin_wheels() -> bool:
    """pip, and a setuptools that reads plugins/segcli-smp's SPDX `license` (77 and later),
    installed here: the tests build without build isolation, so without a download."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return major >= 77 and importlib.util.find_spec("pip") is not None
