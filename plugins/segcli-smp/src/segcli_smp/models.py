"""Model factories: one per smp architecture, any smp encoder, published or local weights.

Each factory is ``(num_classes, in_channels, *, encoder, encoder_depth, backbone_weights)``
as segcli's ``register_models`` hook asks; its keyword options are what ``--set
model.encoder=...`` sets. The module is smp's own (its state-dict keys stay smp's), with
three additions segcli reads: ``size_divisor`` (smp refuses sides that are not multiples
of the encoder's output stride; segcli pads to it), and batch-norm layers that accept a
batch of one image (``segcli.nn.make_single_value_safe``).

``backbone_weights`` is segcli's ``model.backbone_weights`` key, so a model rebuilt from a
checkpoint (predict, evaluate, export) never fetches them again.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download
from torch import nn

from segcli import (
    CheckpointError,
    ConfigError,
    WeightsFile,
    WeightsUnavailable,
    make_single_value_safe,
    read_state_dict,
    record_pretrained,
    weights_cache_dir,
)

DEFAULT_ENCODER = "resnet34"
TIMM_PREFIX = "tu-"
TIMM_WEIGHTS = "imagenet"  # for tu- encoders: the weights the timm name's tag selects
WEIGHTS_FILE = "model.safetensors"


def build_model(
    architecture: str,
    num_classes: int,
    in_channels: int,
    encoder: str,
    encoder_depth: int,
    backbone_weights: str | None,
) -> nn.Module:
    """smp's `architecture` (a key of ``smp.MODEL_ARCHITECTURES_MAPPING``) with `encoder`,
    its encoder loaded from `backbone_weights` (a published name or a local file)."""
    check_encoder(encoder)
    model_class = smp.MODEL_ARCHITECTURES_MAPPING[architecture]
    weights = _local_file(backbone_weights)
    timm_pretrained = encoder.startswith(TIMM_PREFIX) and backbone_weights and not weights
    if timm_pretrained and backbone_weights != TIMM_WEIGHTS:
        raise ConfigError(
            f"backbone_weights {backbone_weights!r} is not a file, and {encoder} has one "
            f"published set, {TIMM_WEIGHTS!r}",
            hint="a timm encoder's weights are chosen by its name's tag, e.g. tu-resnet18.a1_in1k",
        )
    if backbone_weights and not encoder.startswith(TIMM_PREFIX) and not weights:
        weights = published_weights(encoder, backbone_weights)
    build_channels = 3 if weights and not encoder.startswith(TIMM_PREFIX) else in_channels
    try:
        model = model_class(
            encoder_name=encoder,
            encoder_depth=encoder_depth,
            encoder_weights=True if timm_pretrained else None,
            in_channels=build_channels,
            classes=num_classes,
        )
    except OSError as exc:  # timm's own download, offline or refused
        raise _timm_weights_missing(encoder, exc) from exc
    if weights:
        _load_encoder(model.encoder, weights.path)
        if build_channels != in_channels:
            # smp's own adaptation of pretrained RGB kernels to other channel counts
            model.encoder.set_in_channels(in_channels, pretrained=True)
        record_pretrained(model, "backbone_weights", weights)  # file and SHA-256, in the run
    make_single_value_safe(model)
    _freeze_unused_stages(model.encoder, encoder_depth)
    if model_class.requires_divisible_input_shape:
        model.size_divisor = model.encoder.output_stride
    _freeze_biases_before_batch_norm(model)
    if architecture == "pan":
        # its pyramid attention halves the encoder's output three times
        model.min_input_size = 8 * model.encoder.output_stride
    return model


def _freeze_unused_stages(encoder: nn.Module, depth: int) -> None:
    """smp builds every stage of an encoder and runs the first `depth`: the others' weights
    would get no gradient (and break DDP, which expects one for each). They stay in the
    state dict, so published weights and checkpoints keep their keys."""
    stages = getattr(encoder, "get_stages", None)
    for stride, modules in (stages() if stages else {}).items():
        if stride > 2**depth:
            for module in modules:
                module.requires_grad_(False)


def check_encoder(encoder: str) -> None:
    """A ConfigError naming the closest encoders when smp (or timm, for ``tu-``) lacks it;
    smp's own KeyError lists all several hundred."""
    if encoder.startswith(TIMM_PREFIX):
        if timm.is_model(encoder.removeprefix(TIMM_PREFIX)):
            return
        known = [TIMM_PREFIX + name for name in timm.list_models()]
    else:
        known = smp.encoders.get_encoder_names()
        if encoder in known:
            return
    close = difflib.get_close_matches(encoder, known, n=3)
    raise ConfigError(
        f"unknown smp encoder {encoder!r}"
        + (f"; did you mean {', '.join(close)}?" if close else ""),
        hint="smp's encoders are listed at https://smp.readthedocs.io/en/latest/encoders.html; "
        "any timm model works as tu-<name>",
    )


def published_weights(encoder: str, name: str) -> WeightsFile:
    """The file of `encoder`'s published weights `name` in the Hugging Face cache, fetched
    there by huggingface_hub when missing and the machine is online."""
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if name not in settings:
        raise ConfigError(
            f"backbone_weights {name!r} is neither a file nor published weights of {encoder} "
            f"(published: {', '.join(settings) or 'none'})",
            hint="give one of those names, or the path of an encoder state dict",
        )
    repo_id, revision = settings[name]["repo_id"], settings[name]["revision"]
    url = f"https://huggingface.co/{repo_id}/resolve/{revision}/{WEIGHTS_FILE}"
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retry warnings would precede our one line
    try:
        path = Path(hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision))
        return WeightsFile(path, name=name, url=url)
    except OSError as exc:  # huggingface_hub's offline, connection and HTTP errors
        folder = hub_cache_folder(repo_id) / "snapshots" / revision
        raise WeightsUnavailable(
            f"{encoder} weights {name!r} are not in the Hugging Face cache and could not be "
            f"downloaded ({type(exc).__name__}): put {WEIGHTS_FILE} in {folder}",
            hint=f"fetch it from {url}",
        ) from exc
    finally:
        hub_logger.setLevel(level)


def hub_cache_folder(repo_id: str) -> Path:
    """Where huggingface_hub keeps `repo_id` (HF_HUB_CACHE or HF_HOME honoured)."""
    return Path(hub_constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def _timm_weights_missing(encoder: str, exc: OSError) -> WeightsUnavailable:
    config = timm.models.get_pretrained_cfg(encoder.removeprefix(TIMM_PREFIX))
    repo_id = getattr(config, "hf_hub_id", None)
    where = (
        f"{WEIGHTS_FILE} of https://huggingface.co/{repo_id} in {hub_cache_folder(repo_id)}"
        if repo_id
        else f"{getattr(config, 'url', None)} in {weights_cache_dir()}"
    )
    return WeightsUnavailable(
        f"{encoder} weights are not in the cache and could not be downloaded "
        f"({type(exc).__name__}): timm needs {where}",
        hint="download them once on a connected machine and copy the cache folder",
    )


def _freeze_biases_before_batch_norm(model: nn.Module) -> None:
    """A convolution's bias followed by a batch norm gets a zero gradient (the norm subtracts
    the batch mean); PAN's ``ConvBnRelu`` blocks (``conv`` then ``bn``) have one anyway."""
    for module in model.modules():
        conv, norm = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            if conv.bias is not None:
                conv.bias.requires_grad_(False)


def _local_file(backbone_weights: str | None) -> WeightsFile | None:
    path = Path(backbone_weights).expanduser() if backbone_weights else None
    return WeightsFile(path) if path is not None and path.is_file() else None


def _load_encoder(encoder: nn.Module, path: Path) -> None:
    """Load an encoder state dict (or a whole smp model's, keys ``encoder.*``), strictly."""
    state = read_state_dict(path)
    if any(key.startswith("encoder.") for key in state):
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k[:8] == "encoder."}
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise CheckpointError(
            f"encoder weights {path} do not fit the encoder: {first[0].strip()}",
            hint="backbone_weights takes the state dict of the same smp encoder",
        ) from exc


def _factory(architecture: str, default_depth: int) -> Callable[..., nn.Module]:
    def build(
        num_classes: int,
        in_channels: int = 3,
        *,
        encoder: str = DEFAULT_ENCODER,
        encoder_depth: int = default_depth,
        backbone_weights: str | None = None,
    ) -> nn.Module:
        return build_model(
            architecture, num_classes, in_channels, encoder, encoder_depth, backbone_weights
        )

    build.__name__ = build.__qualname__ = architecture
    build.__doc__ = (
        f"smp.{smp.MODEL_ARCHITECTURES_MAPPING[architecture].__name__}, as a segcli model"
    )
    # a cheap encoder for segcli's contract run over every registered model
    build.test_options = {"encoder": "resnet18"}
    return build


unet = _factory("unet", 5)
unetplusplus = _factory("unetplusplus", 5)
fpn = _factory("fpn", 5)
pspnet = _factory("pspnet", 3)
deeplabv3plus = _factory("deeplabv3plus", 5)
linknet = _factory("linknet", 5)
manet = _factory("manet", 5)
pan = _factory("pan", 5)
upernet = _factory("upernet", 5)
segformer = _factory("segformer", 5)
