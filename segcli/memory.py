"""How much memory this machine can give (caches, plans and checks size themselves by it)."""

from __future__ import annotations

import os
from pathlib import Path


def available_memory() -> int:
    """Memory this machine can give without swapping: MemAvailable (free memory plus the
    page cache it can drop), or all physical memory where /proc/meminfo is not there."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
