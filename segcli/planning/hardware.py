"""What the machine offers a training: device, memory, cores, bf16; and the table of how fast
a U-Net runs, which measurements on the machine at hand replace (`segcli.planning.measure`).

torch is imported inside the functions that need it, so the planner stays light to import.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segcli.memory import available_memory

# Measured on the 2-core AMD EPYC (avx512_bf16) development machine, alone: a `unet` of
# depth 4 and base_width 16, batch 16, 112x112 grey images, forward + backward + AdamW step.
# fp32 44.9 img/s, bf16 autocast 79.1, channels_last 70.0, channels_last + bf16 129.3.
_CPU_PIXELS_PER_SECOND_PER_CORE = 44.9 * 112 * 112 / 2
_CPU_SPEED_UP = {(False, False): 1.0, (True, False): 70.0 / 44.9, (True, True): 129.3 / 44.9}
# CPUs whose widest vectors torch's kernels use are narrower than AVX-512 train slower per core:
# a 2-core AMD EPYC of Zen 3 (AVX2, no bf16) trained the same step (3-channel images), fp32
# with channels_last, at 25.7 img/s where the table says 70.0 (benchmarks/train_overhead.py,
# bare loop, alone); its planner measured 0.44 Mpx/s at 80 px, the table had said 0.88.
_CPU_VECTOR_SPEED = {"AVX2": 25.7 / 70.0}
# A conservative guess for one current CUDA GPU at base_width 32 with bf16 and channels_last:
# the starting point `segcli train --data` measures from (`segcli.planning.measure`), and what
# `--print-config` shows.
_CUDA_PIXELS_PER_SECOND = 60e6
_MPS_PIXELS_PER_SECOND = 4e6


@dataclass(frozen=True)
class Hardware:
    """The device a run would train on, as the planner needs it."""

    # "cpu", "cuda" or "mps"
    device: str
    name: str
    # bytes the training may use: free GPU memory, or available main memory on the CPU
    memory_bytes: int
    cpu_cores: int
    # bf16 autocast runs natively (CPU: AVX512-BF16/AMX; CUDA: Ampere or newer)
    bf16: bool
    # the vector instructions torch's CPU kernels use (AVX512, AVX2, ...); "" for a GPU
    vectors: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_hardware(device: str = "auto") -> Hardware:
    """The device `train.device=device` resolves to, and what it offers."""
    import torch

    from segcli.devices import resolve_device

    resolved = resolve_device(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if resolved.type == "cuda":
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return Hardware(
            device="cuda",
            name=torch.cuda.get_device_name(index),
            memory_bytes=int(free),
            cpu_cores=cores,
            bf16=bool(torch.cuda.is_bf16_supported()),
        )
    if resolved.type == "mps":
        return Hardware("mps", "Apple GPU", available_memory(), cores, bf16=False)
    return Hardware(
        device="cpu",
        name=_cpu_name(),
        memory_bytes=available_memory(),
        cpu_cores=cores,
        bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        vectors=torch.backends.cpu.get_cpu_capability(),
    )


def estimate_pixels_per_second(
    hardware: Hardware, base_width: int, *, channels_last: bool, bf16: bool
) -> float:
    """Training pixels per second of a depth-4 `unet` (cost grows with base_width squared)."""
    if hardware.device == "cuda":
        return _CUDA_PIXELS_PER_SECOND * (32 / base_width) ** 2
    if hardware.device == "mps":
        return _MPS_PIXELS_PER_SECOND * (16 / base_width) ** 2
    speed_up = _CPU_SPEED_UP[(channels_last, channels_last and bf16)]
    per_core = (
        _CPU_PIXELS_PER_SECOND_PER_CORE
        * speed_up
        * _CPU_VECTOR_SPEED.get(hardware.vectors, 1.0)
        * (16 / base_width) ** 2
    )
    return per_core * hardware.cpu_cores


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"
