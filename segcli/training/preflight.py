"""Checks of a run's configuration that need plugins, the dataset or this machine.

`segcli.config` validates every key on its own when the configuration is built; what is
left is checked here, before a run folder exists, so that a bad value never leaves a run
folder without a checkpoint behind: the monitor key against the keys the chosen metrics
report, the device against this machine, amp against the device, and the optimiser, the
scheduler, each augmentation and each logger against its plugin (name, option names, option
values; a logger's own check for its package and store), and the model against the input
size and the device's memory (built on the `meta` device: no memory, no time).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from segcli.building import build_metrics, build_model
from segcli.config import LOSS_MONITORS, RunConfig
from segcli.data.format import DatasetInfo
from segcli.errors import ConfigError, ResourceError, SegcliError, UnknownNameError
from segcli.factories import call_factory, option_names
from segcli.inference.preprocessing import size_divisor
from segcli.memory import available_memory
from segcli.plugins import Plugins, get_plugins
from segcli.registry import Registry, plural

logger = logging.getLogger(__name__)

# A metric is asked for its keys with one tiny all-background batch of this size.
_PROBE_SIZE = 8
# Training holds each parameter at least twice (weights and gradients; an optimiser such as
# Adam adds two more), in float32.
_BYTES_PER_PARAMETER = 2 * 4


def check_run(config: RunConfig, info: DatasetInfo, plugins: Plugins | None = None) -> None:
    """Raise the ConfigError a run of `config` on `info` would otherwise hit later."""
    device = check_device(config)
    check_amp(config, device)
    check_monitor(config, info, plugins)
    check_loggers(config, plugins)
    check_components(config, plugins)
    check_model_fits(config, info, device, plugins)


def check_model_fits(
    config: RunConfig, info: DatasetInfo, device: torch.device, plugins: Plugins | None = None
) -> None:
    """Refuse a model that cannot train here before it is built: a bottleneck below one
    pixel (its `size_divisor` larger than the input), or parameters and activations beyond
    the device's free memory (`model.depth=12` on 32 px input asks for tens of GB).

    The model is built on the `meta` device, which allocates nothing, and one batch is run
    through it to add up the activations its layers produce (the least that backward keeps).
    A plugin model that cannot be built or run on `meta` is not checked here."""
    probe = config.model_copy(deep=True)
    probe.model.backbone_weights = None  # sizes do not depend on them; never download here
    try:
        with torch.device("meta"):
            model = build_model(probe, info, plugins)
    except SegcliError:
        raise
    except Exception as exc:  # a plugin that needs real tensors: the run itself will tell
        logger.debug("model %r not checked on the meta device: %r", config.model.name, exc)
        return
    size = config.input.size
    divisor = size_divisor(model)
    if size and divisor > min(size):
        deepest = int(math.log2(min(size))) if divisor & (divisor - 1) == 0 else None
        raise ConfigError(
            f"model {config.model.name!r} pads its input to a multiple of {divisor} px, but "
            f"input.size is {size}: its bottleneck would be below 1 px",
            hint=f"{min(size)} px allows model.options.depth={deepest} at most; lower it, or "
            "raise input.size"
            if deepest
            else "raise input.size, or choose a smaller model",
        )
    parameters = sum(p.numel() for p in model.parameters())
    needed = parameters * _BYTES_PER_PARAMETER
    activations = _activation_bytes(model, config, info, divisor) if size else 0
    free = _free_memory(device)
    if needed + activations > free:
        raise ResourceError(
            f"model {config.model.name!r} ({_options(config)}) needs at least "
            f"{_gb(needed + activations)} to train: {parameters / 1e6:,.1f} M parameters "
            f"({_gb(needed)} with their gradients) and {_gb(activations)} of activations for "
            f"a batch of {config.train.batch_size} at {size}; {device.type} has {_gb(free)} free",
            hint="choose smaller model options (depth, base_width), input.size or train.batch_size",
        )


def _activation_bytes(model: nn.Module, config: RunConfig, info: DatasetInfo, divisor: int) -> int:
    """Bytes of the outputs of the model's innermost layers for one training batch (on meta);
    0 when the model cannot run on meta."""
    height, width = (-(-side // divisor) * divisor for side in config.input.size)
    element = 2 if config.train.amp != "off" else 4
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * element

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [leaf.register_forward_hook(count) for leaf in leaves]
    try:
        images = torch.empty(
            config.train.batch_size, info.image_channels, height, width, device="meta"
        )
        model(images)
    except Exception as exc:  # a plugin model that needs real tensors
        logger.debug("activations of %r not estimated on meta: %r", config.model.name, exc)
        return 0
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory()


def _options(config: RunConfig) -> str:
    options = ", ".join(f"{k}={v}" for k, v in config.model.options.items())
    return f"options {options}" if options else "default options"


def _gb(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def check_components(config: RunConfig, plugins: Plugins | None = None) -> None:
    """The optimiser, the scheduler and every augmentation: a registered name, options its
    factory takes, values it accepts (each factory is called once, on a probe)."""
    plugins = plugins or get_plugins()
    optimizer, scheduler = config.train.optimizer, config.train.scheduler
    probe = [torch.nn.Parameter(torch.zeros(1))]
    check_component(
        config,
        "train.optimizer",
        plugins.optimizers,
        optimizer.name,
        optimizer.options,
        probe,
        config.train.lr,
    )
    check_component(
        config,
        "train.scheduler",
        plugins.schedulers,
        scheduler.name,
        scheduler.options,
        config.train.epochs,
        1,
    )
    for name, options in config.augment.items():
        check_component(config, f"augment.{name}", plugins.transforms, name, options)


def check_component(
    config: RunConfig,
    key: str,
    registry: Registry[Any],
    name: str,
    options: dict[str, Any],
    *args: Any,
) -> None:
    """Build `name` from `registry` with `options` as the run will, or raise a ConfigError that
    names the configuration key, its value, where it came from and what is valid."""
    name_key = key if key.startswith("augment.") else f"{key}.name"
    try:
        factory = registry.get(name)
    except UnknownNameError as error:
        source = _source(config, name_key, options)
        raise ConfigError(f"{name_key}: {error.message} (from {source})") from None
    accepted = option_names(factory, len(args))
    for option, value in options.items():
        if accepted is not None and option not in accepted:
            raise ConfigError(
                f"{key}.{option} = {value!r} (from {config.source_of(f'{key}.{option}')}) is not "
                f"an option of {registry.kind} {name!r}; its options: "
                f"{', '.join(accepted) or 'none'}",
                hint=f"`segcli list {plural(registry.kind)}` describes each {registry.kind}",
            )
    try:
        call_factory(registry, name, *args, **options)
    except ConfigError as error:
        source = _source(config, key, options)
        raise ConfigError(f"{key}: {error.message} (from {source})", hint=error.hint) from None


def _source(config: RunConfig, key: str, options: dict[str, Any]) -> str:
    """Where a component came from: its own key, or else the first of its options given."""
    sources = [config.source_of(key), *(config.source_of(f"{key}.{o}") for o in options)]
    return next((source for source in sources if source != "defaults"), "defaults")


def check_device(config: RunConfig) -> torch.device:
    """The device the run will use; an error if this machine does not have it."""
    name = config.train.device
    available = _available_devices()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type not in available:
        raise config.invalid(
            "train.device",
            f"one of: auto, {', '.join(available)} on this machine",
            hint="--set train.device=cpu",
        )
    count = torch.cuda.device_count() if device.type == "cuda" else None
    if count is not None and device.index is not None and device.index >= count:
        raise config.invalid(
            "train.device", f"cuda or cuda:0 to cuda:{count - 1} ({count} GPU(s) here)"
        )
    return device


def _available_devices() -> list[str]:
    available = ["cpu"]
    if torch.cuda.is_available():
        available.append("cuda")
    if torch.backends.mps.is_available():
        available.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        available.append("xpu")
    return available


def check_amp(config: RunConfig, device: torch.device) -> None:
    if config.train.amp == "fp16" and device.type != "cuda":
        raise config.invalid(
            "train.amp",
            f"off or bf16 on {device.type} (fp16 needs a CUDA device)",
            hint="--set train.amp=bf16",
        )


def check_monitor(config: RunConfig, info: DatasetInfo, plugins: Plugins | None = None) -> None:
    """train.monitor must be a number that the loss or one of the metrics reports, and each
    of train.post_process_guard one that a metric reports."""
    keys = list(LOSS_MONITORS)
    trusted: list[str] = []  # metrics that cannot say their keys: any key under their name
    for name, metric in build_metrics(config, info, plugins).items():
        reported = scalar_keys(metric)
        if reported is None:
            trusted.append(name)
            keys.append(f"{name}/<key>")
        else:
            keys.extend(f"{name}/{key}" for key in reported)

    def reported(key: str) -> bool:
        return key in keys or any(key.startswith(f"{name}/") for name in trusted)

    if not reported(config.train.monitor):
        raise config.invalid("train.monitor", f"one of: {', '.join(keys)}")
    if not all(reported(key) for key in config.train.post_process_guard):
        metric_keys = ", ".join(key for key in keys if key not in LOSS_MONITORS)
        raise config.invalid("train.post_process_guard", f"a list of: {metric_keys}")


def scalar_keys(metric: Any) -> list[str] | None:
    """The keys of the single numbers `metric.compute()` reports, found by feeding it one tiny
    all-background batch on the CPU (metric plugins declare no key list); None if it fails."""
    batch = torch.zeros((1, _PROBE_SIZE, _PROBE_SIZE), dtype=torch.long)
    try:
        metric.reset()
        metric.update(batch, batch)
        results = metric.compute()
        metric.reset()
    except Exception:  # a third-party metric may not take this batch; the run will tell
        return None
    if not isinstance(results, dict):
        return None
    return [
        key
        for key, value in results.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]


def check_loggers(config: RunConfig, plugins: Plugins | None = None) -> None:
    """Each logger of `log.loggers`: a registered name, options its factory takes, and what its
    `check` says (a package not installed, a store it cannot open); no options table for a
    logger that is not chosen. Loggers are not built here: building one starts its run."""
    registry = (plugins or get_plugins()).loggers
    source = config.source_of("log.loggers")
    for name in config.log.options:
        if name not in config.log.loggers:
            raise ConfigError(
                f"log.options.{name} (from {config.source_of(f'log.options.{name}')}) is for "
                f"a logger that log.loggers does not choose: {config.log.loggers}",
                hint=f"add {name!r} to log.loggers, or drop the table",
            )
    for name in config.log.loggers:
        options = config.log.options.get(name, {})
        try:
            factory = registry.get(name)
        except UnknownNameError as error:
            raise ConfigError(f"log.loggers: {error.message} (from {source})") from None
        accepted = option_names(factory, 2)
        for option, value in options.items():
            if accepted is not None and option not in accepted:
                raise ConfigError(
                    f"log.options.{name}.{option} = {value!r} "
                    f"(from {config.source_of(f'log.options.{name}')}) is not an option of "
                    f"logger {name!r}; its options: {', '.join(accepted) or 'none'}",
                    hint="`segcli list loggers` describes each logger",
                )
        check = getattr(factory, "check", None)
        if check is not None:
            with registry.factory_errors(name, options):
                check(config, **options)
