"""Turning a configuration into modules: model, loss, metrics, through the plugin registries."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segcli.config import RunConfig
from segcli.data.format import IGNORE_INDEX, DatasetInfo
from segcli.errors import ConfigError, PluginError
from segcli.losses import build_loss as build_weighted_loss
from segcli.losses import is_single_logit
from segcli.plugins import Plugins, get_plugins


def call_factory(
    kind: str, name: str, factory: Callable[..., Any], *args: Any, **options: Any
) -> Any:
    """Call a plugin factory, turning unknown options into an error that lists the valid ones."""
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    positional = [p for p in parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD][: len(args)]
    accepted = [
        n for n, p in parameters.items() if p not in positional and p.kind is not p.VAR_KEYWORD
    ]
    unknown = [key for key in options if key not in parameters]
    if unknown and not takes_any:
        raise ConfigError(
            f"{kind} {name!r} has no option {unknown[0]!r}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    try:
        return factory(*args, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {name!r} rejected its options {options}: {exc}") from None


def single_logit(config: RunConfig, plugins: Plugins | None = None) -> bool:
    """A loss marked `single_logit` (binary cross-entropy) wants a model with one output."""
    return is_single_logit((plugins or get_plugins()).losses, config.loss.name)


def build_model(config: RunConfig, info: DatasetInfo, plugins: Plugins | None = None) -> nn.Module:
    plugins = plugins or get_plugins()
    factory = plugins.models.get(config.model.name)
    outputs = 1 if single_logit(config, plugins) else info.num_classes
    options = dict(config.model.options)
    if config.model.backbone_weights:
        options["backbone_weights"] = config.model.backbone_weights
    model = call_factory(
        "model", config.model.name, factory, outputs, info.image_channels, **options
    )
    if not isinstance(model, nn.Module):
        raise PluginError(
            f"model {config.model.name!r} factory returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model


def build_loss(config: RunConfig, info: DatasetInfo, plugins: Plugins | None = None) -> Callable:
    plugins = plugins or get_plugins()
    return build_weighted_loss(
        plugins.losses,
        config.loss.name,
        info.num_classes,
        IGNORE_INDEX,
        dict(config.loss.options),
        info.class_pixels.get(config.dataset.train_split),
    )


def build_metrics(
    config: RunConfig, info: DatasetInfo, plugins: Plugins | None = None
) -> dict[str, Any]:
    plugins = plugins or get_plugins()
    metrics = {}
    for name in config.metrics:
        factory = plugins.metrics.get(name)
        metrics[name] = call_factory("metric", name, factory, info.num_classes, IGNORE_INDEX)
    return metrics


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits at the input's size, whatever the model needs.

    Models with `size_divisor` get their input padded (bottom/right) to a multiple and the
    logits cropped back; a model whose output still differs in size (valid convolutions)
    has its logits resized bilinearly. Training, evaluation and prediction all go through
    here, so they treat every model the same way.
    """
    height, width = images.shape[-2:]
    divisor = int(getattr(_unwrap(model), "size_divisor", 1) or 1)
    pad_h, pad_w = -height % divisor, -width % divisor
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "constant"
        images = F.pad(images, [0, pad_w, 0, pad_h], mode=mode)
    logits = model(images)
    if isinstance(logits, dict):  # torchvision-style outputs
        logits = logits["out"]
    if pad_h or pad_w:
        logits = logits[..., : logits.shape[-2] - pad_h or None, : logits.shape[-1] - pad_w or None]
    if logits.shape[-2:] != (height, width):
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits


def predictions(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class indices from logits; one logit means binary with a probability threshold."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > _logit(threshold)).long()
    return logits.argmax(1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) class probabilities; a single logit becomes two classes."""
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits.float())
        return torch.cat([1 - positive, positive], 1)
    return torch.softmax(logits.float(), 1)


def _logit(probability: float) -> float:
    probability = min(max(probability, 1e-6), 1 - 1e-6)
    return float(torch.logit(torch.tensor(probability)))


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", getattr(model, "_orig_mod", model))


def autocast_for(amp: str, device: torch.device):
    if amp == "off":
        return nullcontext()
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError(
                "train.amp=fp16 needs a CUDA device", hint="use --set train.amp=bf16 on CPU"
            )
        return torch.autocast("cuda", dtype=torch.float16)
    raise ConfigError(f"unknown train.amp {amp!r}; valid: off, bf16, fp16")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} was asked for but CUDA is not available",
            hint="--set train.device=cpu",
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
