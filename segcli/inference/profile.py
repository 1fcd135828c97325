"""What a model costs to run: parameters, FLOPs, peak activation memory, and measured speed
in each runtime it can be deployed with (PyTorch eager, channels_last, TorchScript, ONNX
Runtime, OpenVINO).

Counts are made once on one image at the profiled size; speeds are measured with random
inputs of that size, after warm-up runs that are not counted, as the median and the
interquartile range of `runs` timed calls.
"""

from __future__ import annotations

import copy
import io
import json
import statistics
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from segcli.building import forward
from segcli.errors import ConfigError, PluginError, UsageError
from segcli.files import atomic_write
from segcli.inference.preprocessing import size_divisor

RUNTIMES = ("eager", "channels_last", "torchscript", "onnxruntime", "openvino")
WARMUP_RUNS = 2
# a run's latest profile, in its folder: `segcli report` shows it
PROFILE_FILE = "profile.json"


@dataclass
class RuntimeSpeed:
    """One runtime's measured speed; `skipped` says why there is none."""

    runtime: str
    latency_ms: float | None = None  # median of batch-1 calls
    latency_iqr_ms: float | None = None
    throughput_img_s: float | None = None  # images per second at the throughput batch
    throughput_iqr_img_s: float | None = None
    skipped: str | None = None


@dataclass
class ModelProfile:
    model: str
    source: str
    input_size: tuple[int, int]
    channels: int
    device: str
    parameters: int
    flops: int  # per image, multiply-add counted as 2 (torch.utils.flop_counter)
    peak_activation_bytes: int  # per image, under torch.no_grad
    batch: int
    runs: int
    speeds: list[RuntimeSpeed] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, images: torch.Tensor) -> int:
    """FLOPs of one forward pass as torch.utils.flop_counter counts them: convolutions and
    matrix products, a multiply-add as 2 (elementwise work such as activations is not
    counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        forward(model, images)
    return int(counter.get_total_flops())


class _LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensors created inside the mode and still alive; the largest total seen.

    Tracked through the operators themselves, so the count is the same on every device (CUDA
    allocator statistics would only exist on CUDA). Views share their base's storage and
    are counted once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        result = func(*args, **(kwargs or {}))
        for value in tree_flatten(result)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        return result

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.storages or storage.nbytes() == 0:
            return
        self.storages.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(tensor, self._release, key, storage.nbytes())

    def _release(self, key: int, nbytes: int) -> None:
        if key in self.storages:
            self.storages.discard(key)
            self.live -= nbytes


@torch.no_grad()
def peak_activation_bytes(model: nn.Module, images: torch.Tensor) -> int:
    """The most bytes of intermediate tensors alive at once in one inference forward pass
    (weights and the input itself not counted)."""
    tracker = _LiveTensorBytes()
    with tracker:
        forward(model, images)
    return tracker.peak


def time_calls(call: Callable[[], Any], runs: int, warmup: int = WARMUP_RUNS) -> list[float]:
    """Seconds taken by each of `runs` calls, after `warmup` calls that are not counted."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def median_and_iqr(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], 0.0
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), quartiles[2] - quartiles[0]


def padded_size(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    height, width = size
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


class RuntimeUnavailable(Exception):
    """This runtime cannot be profiled here; the message says why (shown in the table)."""


def runtime_callable(
    runtime: str, model: nn.Module, sample: torch.Tensor, device: torch.device
) -> Callable[[torch.Tensor], Any]:
    """A function running `model` in `runtime` on a batch; raises RuntimeUnavailable when
    the runtime is not installed or cannot take this model (or this device)."""
    if runtime == "eager":
        return lambda images: forward(model, images)
    if runtime == "channels_last":
        converted = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return lambda images: forward(
            converted, images.contiguous(memory_format=torch.channels_last)
        )
    from segcli.inference.graphs import LogitsOnly, export_onnx_bytes, export_torchscript_bytes

    logits_only = LogitsOnly(model).eval()
    if runtime == "torchscript":
        archive = _or_unavailable(export_torchscript_bytes, logits_only, sample)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of torch.export
            return torch.jit.load(io.BytesIO(archive), map_location=device)
    if device.type != "cpu":
        raise RuntimeUnavailable("profiled on CPU only")
    from segcli.inference.exported_models import (
        OnnxModel,
        OpenVinoModel,
        openvino_installed,
        require_onnx,
    )

    if runtime == "onnxruntime":
        try:
            require_onnx("profile ONNX Runtime", need_script=True)
        except ConfigError as missing:  # a missing optional package is a skip, not a failure
            raise RuntimeUnavailable(missing.message) from None
        onnx = _or_unavailable(export_onnx_bytes, logits_only, sample, True, None)
        return OnnxModel(onnx, size_divisor(model), device)
    if runtime == "openvino":
        if not openvino_installed():
            raise RuntimeUnavailable('not installed (pip install "segcli[openvino]")')
        onnx = _or_unavailable(export_onnx_bytes, logits_only, sample, True, None)
        return OpenVinoModel(onnx, size_divisor(model))
    raise UsageError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")


def _or_unavailable(export: Callable[..., tuple[str, bytes]], *args: Any) -> bytes:
    try:
        return export(*args)[1]
    except PluginError as error:
        raise RuntimeUnavailable(error.message) from None


@torch.no_grad()
def measure_runtime(
    runtime: str,
    model: nn.Module,
    size: tuple[int, int],
    channels: int,
    *,
    batch: int,
    runs: int,
    device: torch.device,
) -> RuntimeSpeed:
    """Latency at batch 1 and throughput at `batch` of `model` run in `runtime`."""
    generator = torch.Generator().manual_seed(0)
    single = torch.randn(1, channels, *size, generator=generator).to(device)
    several = torch.randn(batch, channels, *size, generator=generator).to(device)
    try:
        call = runtime_callable(runtime, model, single, device)
    except RuntimeUnavailable as reason:
        return RuntimeSpeed(runtime, skipped=str(reason))
    synchronise = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def timed(images: torch.Tensor) -> list[float]:
        return time_calls(lambda: (call(images), synchronise()), runs)

    latency, latency_iqr = median_and_iqr(timed(single))
    per_batch = timed(several)
    throughputs = [batch / seconds for seconds in per_batch]
    throughput, throughput_iqr = median_and_iqr(throughputs)
    return RuntimeSpeed(
        runtime,
        latency_ms=latency * 1000,
        latency_iqr_ms=latency_iqr * 1000,
        throughput_img_s=throughput,
        throughput_iqr_img_s=throughput_iqr,
    )


def profile_model(
    model: nn.Module,
    size: tuple[int, int],
    channels: int,
    *,
    name: str = "model",
    source: str = "",
    batch: int = 8,
    runs: int = 10,
    runtimes: tuple[str, ...] = RUNTIMES,
    device: torch.device | None = None,
    on_runtime: Callable[[str], None] | None = None,
) -> ModelProfile:
    """Counts at `size` (padded up to the model's size divisor) and each runtime's speed."""
    if batch < 1 or runs < 1:
        raise UsageError(f"--batch {batch} and --runs {runs} must be at least 1")
    unknown = [runtime for runtime in runtimes if runtime not in RUNTIMES]
    if unknown:
        raise UsageError(f"unknown runtime {unknown[0]!r}; valid: {', '.join(RUNTIMES)}")
    device = device or torch.device("cpu")
    model = model.to(device).eval()
    size = padded_size(size, size_divisor(model))
    image = torch.zeros(1, channels, *size, device=device)
    profile = ModelProfile(
        model=name,
        source=source,
        input_size=size,
        channels=channels,
        device=str(device),
        parameters=count_parameters(model),
        flops=count_flops(model, image),
        peak_activation_bytes=peak_activation_bytes(model, image),
        batch=batch,
        runs=runs,
    )
    for runtime in runtimes:
        if on_runtime:
            on_runtime(runtime)
        profile.speeds.append(
            measure_runtime(runtime, model, size, channels, batch=batch, runs=runs, device=device)
        )
    return profile


def save_run_profile(profile: ModelProfile, checkpoint: Path) -> Path | None:
    """`profile` written to RUN/profile.json when the profiled checkpoint is a run's (its
    folder holds config.toml), replacing an earlier one; None for a checkpoint elsewhere."""
    run_dir = Path(checkpoint).parent
    if not (run_dir / "config.toml").is_file():
        return None
    path = run_dir / PROFILE_FILE
    with atomic_write(path) as stream:
        stream.write(json.dumps(profile.as_json(), indent=2).encode())
    return path


def model_to_profile(
    target: Path | None,
    model_name: str | None,
    size: tuple[int, int] | None,
    runs_dir: Path,
) -> tuple[nn.Module, str, str, tuple[int, int], int]:
    """(model, its name, where it came from, input size, image channels) for `segcli profile`:
    a run's (or checkpoint's) model at its input size, or a registered model freshly built."""
    if target is not None and model_name is not None:
        raise UsageError(
            "give a run or checkpoint, or --model NAME, not both",
            hint="--model profiles a freshly built model of that name",
        )
    if model_name is not None:
        from segcli.building import build_model
        from segcli.config import build_config
        from segcli.data.format import ClassInfo, DatasetInfo

        config = build_config({"model": {"name": model_name}})
        config.model.backbone_weights = None  # random weights cost the same to run
        info = DatasetInfo(
            name="profile",
            classes=[ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "object", (255, 0, 0))],
            splits={},
        )
        model = build_model(config, info)
        chosen = size or (int(config.input.size[0]), int(config.input.size[1]))
        return model, model_name, "freshly built", chosen, info.image_channels
    from segcli.inference.predictor import Predictor
    from segcli.runs.folders import find_checkpoint

    checkpoint = find_checkpoint(target, runs_dir)
    predictor = Predictor(checkpoint, "cpu", amp="off")
    if predictor.exported:
        raise UsageError(
            f"{checkpoint} is an exported model; profile its checkpoint or run folder",
            hint="profile measures every runtime from the PyTorch model",
        )
    chosen = size or (tuple(predictor.size) if predictor.size else None)
    if chosen is None:
        raise UsageError(
            f"{checkpoint} was trained at native image sizes, so there is no input size to profile",
            hint="give one with --size HxW, e.g. --size 512x512",
        )
    return predictor.model, predictor.config.model.name, str(checkpoint), chosen, predictor.channels


def parse_size(text: str) -> tuple[int, int]:
    """`HxW` (or one number for a square) as (height, width)."""
    parts = text.lower().split("x")
    try:
        sides = [int(part) for part in parts]
    except ValueError:
        sides = []
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or min(sides) < 1:
        raise UsageError(f"--size {text!r} is not HxW", hint="e.g. --size 256x256 or --size 256")
    return sides[0], sides[1]
