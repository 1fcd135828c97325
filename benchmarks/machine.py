"""The machine a benchmark figure holds for: CPU model, usable cores, native bf16, torch."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def describe_machine() -> dict[str, Any]:
    """CPU model, the cores this process may use, native bf16 and torch: what a figure holds
    for."""
    import torch

    cpu, flags, ids = "unknown CPU", set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu == "unknown CPU":
                cpu = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
            elif key in ("cpu family", "model") and key not in ids:
                ids[key] = value.strip()
    except OSError:
        pass
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if not native and _onednn_bf16(torch):  # no flags to read (not Linux, not x86)
        native = ["oneDNN reports bf16 support"]
    return {
        "cpu": cpu,
        # a virtual machine may name only the brand ("AMD EPYC"): family and model tell
        # its generations apart
        "cpu_id": ", ".join(f"{key} {value}" for key, value in ids.items()),
        "cores": len(os.sched_getaffinity(0)),
        "bf16": ", ".join(native) or "no",
        "vectors": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }


def _onednn_bf16(torch: Any) -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private call: gone or unbuilt in some torch
        return False


def machine_line(machine: dict[str, Any] | None) -> str:
    """One line naming the machine, for a heading or a benchmark's output."""
    if not machine:
        return "machine not recorded"
    bf16 = "no native bf16" if machine["bf16"] == "no" else f"native bf16 ({machine['bf16']})"
    cpu = machine["cpu"] + (f" ({machine['cpu_id']})" if machine.get("cpu_id") else "")
    vectors = f"{machine['vectors']}, " if machine.get("vectors") else ""
    return (
        f"{cpu}, {machine['cores']} cores, {vectors}{bf16}, torch {machine['torch']}, "
        f"Python {machine['python']}"
    )
