"""Turning a configuration into modules through the plugin registries (model, loss, metrics),
rebuilding a checkpoint's model from its record, and running a model (`forward`: padding to its
size divisor, logits resized to the input; `PluginCalls`: the model's and the loss's calls
checked against their plugin contracts). Training, inference, evaluation and planning all
build and run models through it, so it sits in the models layer, below all of them; it may
import the data format, the losses, the checkpoint file format and the preprocessing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from segcli.config import RunConfig
from segcli.data.format import IGNORE_INDEX, DatasetInfo
from segcli.errors import CheckpointError, ConfigError, PluginError, SegcliError
from segcli.factories import call_factory
from segcli.inference.preprocessing import crop_padding, pad_to_multiple, resize, size_divisor
from segcli.losses import build_loss as build_weighted_loss
from segcli.losses import is_single_logit, parse_loss_spec
from segcli.plugins import Plugins, get_plugins
from segcli.registry import Origin, one_line
from segcli.runs.checkpoint_file import ANOTHER_CHECKPOINT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelHead:
    """The model's last layer: one logit per class, or one logit (sigmoid) for binary."""

    num_classes: int
    single_logit: bool

    @property
    def outputs(self) -> int:
        return 1 if self.single_logit else self.num_classes


def single_logit(config: RunConfig, plugins: Plugins | None = None) -> bool:
    """A loss marked `single_logit` (binary cross-entropy) wants a model with one output."""
    return is_single_logit((plugins or get_plugins()).losses, config.loss.name)


def head_for_training(
    config: RunConfig, info: DatasetInfo, plugins: Plugins | None = None
) -> ModelHead:
    """The head a training run builds: the loss decides between one logit and one per class."""
    return ModelHead(info.num_classes, single_logit(config, plugins))


def build_model(
    config: RunConfig,
    info: DatasetInfo,
    plugins: Plugins | None = None,
    head: ModelHead | None = None,
) -> nn.Module:
    """The configured model with `head` (by default the one the loss asks for)."""
    plugins = plugins or get_plugins()
    head = head or head_for_training(config, info, plugins)
    options = dict(config.model.options)
    if config.model.backbone_weights:
        options["backbone_weights"] = config.model.backbone_weights
    name = config.model.name
    model = call_factory(plugins.models, name, head.outputs, info.image_channels, **options)
    if not isinstance(model, nn.Module):
        raise PluginError(
            f"model {name!r} from plugin {plugins.models.entry(name).origin} returned "
            f"{type(model).__name__}, not a torch.nn.Module"
        )
    return model


def model_record(
    config: RunConfig, info: DatasetInfo, plugins: Plugins | None = None
) -> dict[str, Any]:
    """What a checkpoint stores about its model besides the configuration: the head, and
    which plugin (distribution, version) built the model and the loss it was trained with."""
    plugins = plugins or get_plugins()
    head = head_for_training(config, info, plugins)
    return {
        "outputs": head.outputs,
        "single_logit": head.single_logit,
        "num_classes": head.num_classes,
        "built_by": plugins.models.entry(config.model.name).origin.as_dict(),
        "loss_built_by": {
            part: plugins.losses.entry(part).origin.as_dict()
            for part, _ in parse_loss_spec(config.loss.name)
        },
    }


def recorded_head(meta: dict[str, Any], source: object = "the checkpoint") -> ModelHead:
    """The head a checkpoint's model has, as its metadata records it. `source` names the
    checkpoint."""
    num_classes = len(meta["classes"])
    record = meta.get("model")
    if not isinstance(record, dict):
        raise CheckpointError(
            f"{source} is damaged: its metadata has no model record", hint=ANOTHER_CHECKPOINT
        )
    try:
        head = ModelHead(int(record["num_classes"]), bool(record["single_logit"]))
        outputs = int(record["outputs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: its model record is damaged ({exc!r})") from None
    if head.num_classes != num_classes or head.outputs != outputs:
        raise CheckpointError(
            f"{source}: its model record ({outputs} outputs, {head.num_classes} classes, "
            f"single_logit={head.single_logit}) disagrees with its {num_classes} classes"
        )
    return head


def rebuild_model(
    config: RunConfig,
    meta: dict[str, Any],
    info: DatasetInfo,
    plugins: Plugins | None = None,
    source: object = "the checkpoint",
) -> nn.Module:
    """The model a checkpoint describes, without its weights; no loss plugin is needed.

    The name is built by whichever plugin provides it now; a different plugin, distribution
    or version than the one recorded is logged as a warning, and a name no plugin provides
    names the distribution to install.
    """
    plugins = plugins or get_plugins()
    name = config.model.name
    head = recorded_head(meta, source)
    try:
        built_by = Origin.from_dict(meta["model"]["built_by"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: its model record is damaged ({exc!r})") from None
    if name not in plugins.models:
        installed = _loaded_release(plugins, built_by)
        if installed == built_by:
            # the very plugin and version that built it does not know the name
            raise CheckpointError(
                f"{source}: model {name!r} is recorded as built by {built_by.release} "
                f"(plugin {built_by.plugin!r}), which is installed but has no such model",
                hint="the checkpoint's metadata is damaged or was edited; use another checkpoint",
            )
        if installed is not None:
            raise PluginError(
                f"{source}: model {name!r} was built by {built_by.release} (plugin "
                f"{built_by.plugin!r}); the installed {installed.release} has no such model",
                hint=f"pip install {built_by.distribution}=={built_by.version}"
                if built_by.distribution and built_by.version
                else "see `segcli plugins`",
            )
        reason, hint = _why_missing(plugins, built_by)
        raise PluginError(
            f"{source}: model {name!r} was built by {built_by.release} (plugin "
            f"{built_by.plugin!r}), {reason}",
            hint=hint,
        )
    now = plugins.models.entry(name).origin
    if built_by != now:
        logger.warning(
            "%s: model %r was built by %s (plugin %r), now provided by %s (plugin %r)",
            source,
            name,
            built_by.release,
            built_by.plugin,
            now.release,
            now.plugin,
        )
    return build_model(config, info, plugins, head)


def _loaded_release(plugins: Plugins, origin: Origin) -> Origin | None:
    """The loaded plugin of `origin`'s name and distribution, with its installed version."""
    for status in plugins.statuses:
        if (
            status.status == "ok"
            and status.name == origin.plugin
            and status.distribution == origin.distribution
        ):
            return Origin(status.name, status.distribution, status.version)
    return None


def _why_missing(plugins: Plugins, origin: Origin) -> tuple[str, str]:
    """(why a recorded plugin provides nothing now, how to fix it) for an error message."""
    for status in plugins.statuses:
        if status.name == origin.plugin and status.distribution == origin.distribution:
            if status.status == "disabled":
                return (
                    "which is disabled",
                    "enable it: leave it out of SEGCLI_DISABLE_PLUGINS / SEGCLI_LOAD_PLUGINS",
                )
            if status.status == "failed":
                return f"which failed to load: {status.error}", "see `segcli plugins`"
    if origin.distribution is None:
        return "which is not installed", f"install the package of the plugin {origin.plugin!r}"
    pinned = f"=={origin.version}" if origin.version else ""
    return "which is not installed", f"pip install {origin.distribution}{pinned}"


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
        metrics[name] = call_factory(plugins.metrics, name, info.num_classes, IGNORE_INDEX)
    return metrics


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits at the input's size, whatever the model needs.

    Models with `size_divisor` get their input padded to a multiple and the logits cropped
    back; a model whose output still differs in size (valid convolutions) has its logits
    resized. Both follow `segcli.inference.preprocessing`'s pad and resize policy. Training,
    evaluation and prediction all go through here, so they treat every model the same way.
    """
    height, width = images.shape[-2:]
    images, pad_h, pad_w = pad_to_multiple(images, size_divisor(model))
    logits = model(images)
    if isinstance(logits, dict):  # torchvision-style outputs
        logits = logits["out"]
    return resize(crop_padding(logits, pad_h, pad_w), (height, width))


def predictions(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class indices from logits; one logit means binary with a probability threshold."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > _logit(threshold)).long()
    return logits.max(1).indices  # argmax's first-maximum rule, faster on CPU


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) class probabilities; a single logit becomes two classes."""
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits.float())
        return torch.cat([1 - positive, positive], 1)
    return torch.softmax(logits.float(), 1)


def _logit(probability: float) -> float:
    probability = min(max(probability, 1e-6), 1 - 1e-6)
    return float(torch.logit(torch.tensor(probability)))


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


@dataclass(frozen=True)
class PluginCalls:
    """The model's and the loss's calls, checked against their contracts (docs/plugins.md):
    a model returns an (N, C, H, W) Tensor (or a dict holding it under "out"), a loss a
    floating Tensor of one number. What they raise, or return instead, is a PluginError that
    names the plugin and its distribution. The checks read shapes only: no device sync."""

    model: str  # "model 'unet' from plugin segcli_models (segcli 1.0)"
    loss: str
    outputs: int | None = None  # the head width, when known

    @classmethod
    def of(
        cls, config: RunConfig, outputs: int | None = None, plugins: Plugins | None = None
    ) -> PluginCalls:
        plugins = plugins or get_plugins()

        def described(kind: str, registry: Any, name: str) -> str:
            origin = registry.entry(name).origin if name in registry else None
            return f"{kind} {name!r}" + (f" from plugin {origin}" if origin else "")

        parts = [part for part, _ in parse_loss_spec(config.loss.name)]
        loss = (
            described("loss", plugins.losses, parts[0])
            if len(parts) == 1
            else f"loss {config.loss.name!r} ("
            + ", ".join(described("loss", plugins.losses, part) for part in parts)
            + ")"
        )
        return cls(described("model", plugins.models, config.model.name), loss, outputs)

    def logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        returned: list[Any] = []  # what the model itself returned, before `forward` uses it
        hook = model.register_forward_hook(lambda module, args, output: returned.append(output))
        try:
            logits = forward(model, images)
        except (SegcliError, MemoryError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as exc:
            raw = returned[0] if returned else None
            if returned and not isinstance(raw, (torch.Tensor, dict)):
                raise self._broken(
                    self.model, f"returned {_shape_of(raw)}, not a Tensor (N, C, H, W)"
                ) from exc
            raise self._broken(self.model, f"failed: {one_line(exc)}") from exc
        finally:
            hook.remove()
        channels = self.outputs or "C"
        if not (
            isinstance(logits, torch.Tensor)
            and logits.dim() == 4
            and logits.shape[0] == images.shape[0]
            and (self.outputs is None or logits.shape[1] == self.outputs)
        ):
            raise self._broken(
                self.model,
                f"returned {_shape_of(logits)} for a batch of {images.shape[0]}, not a Tensor "
                f"of shape ({images.shape[0]}, {channels}, H, W)",
            )
        return logits

    def loss_of(self, loss_fn: Callable, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        try:
            loss = loss_fn(logits, masks)
        except (SegcliError, MemoryError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as exc:
            raise self._broken(self.loss, f"failed: {one_line(exc)}") from exc
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point()):
            raise self._broken(
                self.loss, f"returned {_shape_of(loss)}, not a Tensor holding one number"
            )
        if torch.is_grad_enabled() and logits.requires_grad and not loss.requires_grad:
            raise self._broken(self.loss, "returned a Tensor that gradients do not flow through")
        return loss.reshape(())

    @staticmethod
    def _broken(what: str, problem: str) -> PluginError:
        return PluginError(
            f"{what} {problem}",
            hint="report it to the plugin's authors; --debug shows the traceback",
        )


def _shape_of(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} Tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
