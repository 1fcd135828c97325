"""The default planner's pretrained-encoder rule: which photographs get a U-Net on an
ImageNet-pretrained ResNet (`unet-resnet`), when its weights are at hand, and the figures the
rule plans with. `rules.py` sizes and times the candidate like any other.

Only the machine's own cache is looked at (torch hub's checkpoints folder: a file there or
not); nothing is downloaded while planning. Weights that are not at hand are one reason line
with the command that fetches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segcli import Fingerprint, published_weights

PRETRAINED_MODEL = "unet-resnet"
DEFAULT_ENCODER = "resnet18"
# Training time per pixel of `unet-resnet` over the width-16 U-Net's (the planner's base
# speed). Measured with bf16, channels-last, 128 px, batch 8, AdamW on the 2-core Xeon
# (AMX/AVX512-BF16), steps interleaved: resnet18 3.5x (71.0 vs 20.2 img/s, the calmest of
# five runs on a shared machine, which ranged 1.5x-4.0x) and resnet34 1.6x resnet18's. The
# planner times the candidate itself when it measures: this figure only sizes the first try.
ENCODER_COST = {"resnet18": 3.5, "resnet34": 5.5}
# the encoder downsamples 5 times: the model's size divisor
ENCODER_LEVELS = 5
# The statistics ImageNet weights were trained with (torchvision's): a pretrained encoder's
# first layer expects its inputs normalised this way, not by the dataset's own statistics.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Colour channels whose means and stds all lie this close are a grey image stored as RGB
# (R = G = B): no colour for ImageNet's colour features to read. Car-damage photographs
# differ by 0.023 in mean, IDD-Lite by 0.014.
GREY_SPREAD = 0.005
# AdamW's learning rate for a pretrained encoder: a third of the from-scratch U-Net's 3e-3. The
# decoder starts from random weights and its first large gradients would wreck the encoder's
# ImageNet features at the scratch rate (the warm-up protects them too); segmentation_models'
# and the TGS Kaggle solutions' fine-tuning used Adam at 1e-4 to 1e-3, the high end for runs of
# minutes. Not measured here: no ImageNet weights could be fetched on the planning machine.
PRETRAINED_LR = 1e-3
# A pretrained encoder is planned for half the target passes: its features are learnt already,
# only the decoder and the fine-tuning are not (an assumption from common practice, like the
# rate above, not yet measured here).
PRETRAINED_PASS_SHARE = 0.5
# The smallest input side the encoder is planned at: 128 px leaves 4 px at its 1/32 stride
# (the TGS Kaggle solutions' ResNet-34 encoders took 101 px padded to 128); smaller images
# are planned at their own size rounded up to 32.
PRETRAINED_MIN_SIDE = 128
# Structures thinner than this (pixels, at the native size) stay with the U-Net: the encoder's
# first convolution has stride 2 and its decoder no full-resolution skip (DRIVE's vessels,
# 3.9 px, are drawn by the U-Net's full-resolution level).
MIN_THICKNESS = 6.0


@dataclass(frozen=True)
class Encoder:
    """A pretrained encoder the plan may use: its name, and its weights (``imagenet`` from
    the cache, planned; or the user's own `model.backbone_weights`, which the plan leaves
    to the user's layer)."""

    name: str
    weights: str
    planned_weights: bool
    where: str  # the weights, in words, for the reasons


def is_photograph(fp: Fingerprint) -> bool:
    """Three channels that are not one grey value copied thrice."""
    if fp.channels != 3:
        return False
    spread = max(max(values) - min(values) for values in (fp.mean, fp.std))
    return spread > GREY_SPREAD


def encoder_at_hand(
    fp: Fingerprint, requested: Mapping[str, Any], thickness: float | None
) -> tuple[Encoder | None, str]:
    """The pretrained encoder a plan for `fp` may use, or None and why not in words (empty
    when the rule does not apply: grey or microscopy data, or a model the user chose).
    `thickness`: the foreground's, in pixels at the native size."""
    chosen_model = requested.get("model.name")
    if not is_photograph(fp) or chosen_model not in (None, PRETRAINED_MODEL):
        return None, ""
    if thickness is not None and thickness < MIN_THICKNESS:
        return None, (
            "no pretrained encoder: its first features are at half resolution and only the "
            "decoder's last block sees every pixel, while the thinnest structures here are "
            f"{thickness:.1f} px (< {MIN_THICKNESS:g}); the U-Net keeps a full-resolution level"
        )
    name = requested.get("model.encoder")
    name = name if name in ENCODER_COST else DEFAULT_ENCODER
    given = requested.get("model.backbone_weights")
    if given:
        return Encoder(name, str(given), False, f"given as model.backbone_weights={given}"), ""
    published = next((w for w in published_weights(PRETRAINED_MODEL) if w.name == name), None)
    if published is not None and published.cached:
        return Encoder(name, "imagenet", True, f"in the local cache: {published.path}"), ""
    folder = published.path.parent if published is not None else "torch hub's cache"
    return None, (
        f"ImageNet weights for a {name} encoder are not in {folder}: "
        f"`segcli weights fetch {name}` (once, with internet access) lets plans of photographs "
        f"use {PRETRAINED_MODEL}, an encoder that has already learnt edges, textures and parts "
        "from 1.28 M photographs, instead of learning them from these images alone"
    )
