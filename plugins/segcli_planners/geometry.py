"""The `default` planner's sizing: what the network sees (input size or native crops, depth,
batch, base width) so that the budget affords the target passes over the data, at the speed
the table gives or the machine measured."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segcli import Fingerprint, Hardware, Timer

from .constants import (
    BOTTLENECK_SIDE,
    COMFORTABLE_THICKNESS,
    DEEPER_ROUNDING,
    ENOUGH_SAMPLES,
    EPOCHS_AT_1000_IMAGES,
    MAX_EPOCHS,
    MAX_VALIDATION_PASS_SHARE,
    MILD_DOWNSCALE,
    MIN_EPOCHS,
    MIN_SIDE,
    MIN_THICKNESS,
    NATIVE_SLACK,
    SURPLUS_PASSES,
    TARGET_STEPS,
    TRAINING_SHARE,
    WIDER,
)
from .pretrained import (
    ENCODER_LEVELS,
    PRETRAINED_MIN_SIDE,
    PRETRAINED_MODEL,
    PRETRAINED_PASS_SHARE,
    Encoder,
)


@dataclass(frozen=True)
class _Geometry:
    """What the network sees: input size ([] = native), crop, depth, batch, and why."""

    size: list[int]
    crop: list[int] | None
    depth: int
    batch: int
    trained_pixels: int  # per training sample
    val_pixels: int  # per validation image
    why: str
    width: int  # the U-Net's base width
    width_why: str = ""
    encoder: str | None = None  # a pretrained encoder's name (unet-resnet), None for the U-Net
    target_epochs: float = 0.0  # the passes it was sized for
    affordable: float = 0.0  # pixels per image the budget affords at those passes


class _GeometryRules:
    """A plan's state (the dataset, the machine, the budget, the speeds, the layer being
    written) and the rules that size the network's input from it."""

    def __init__(
        self,
        fp: Fingerprint,
        hardware: Hardware,
        budget: float,
        timer: Timer | None,
        requested: Mapping[str, Any],
    ) -> None:
        self.fp, self.hw, self.budget, self.timer = fp, hardware, budget, timer
        self.requested = requested
        self.layer: dict[str, Any] = {}
        self.reasons: dict[str, str] = {}
        self.estimates: dict[str, Any] = {}
        self.height, self.width = round(fp.height.median), round(fp.width.median)
        self.train_images = max(1, fp.splits.get("train", 0))
        self.val_images = fp.splits.get("val", 0)
        self.base_width = 16 if hardware.device == "cpu" else 32
        # pixels per second of the base-width net (a wider one costs width^2 more): training
        # steps, validation forward passes; and seconds already spent measuring (in the budget)
        self.train_speed = self.val_speed = 0.0
        self.measuring_seconds = 0.0
        # pixels per second measured for each U-Net width, on the way of running chosen
        self.width_speeds: dict[int, float] = {}
        # the pretrained encoder at hand (None: none, or the rule does not apply), its cost per
        # pixel over the base-width U-Net's, and what the U-Net's reason says about it
        self.encoder: Encoder | None = None
        self.encoder_cost, self.encoder_cost_source = 1.0, ""
        self.encoder_note = ""

    def training_seconds(self) -> float:
        return max(1.0, TRAINING_SHARE * self.budget - self.measuring_seconds)

    def target_epochs(self) -> float:
        wanted = EPOCHS_AT_1000_IMAGES * math.sqrt(1000 / self.train_images)
        return min(MAX_EPOCHS, max(MIN_EPOCHS, wanted))

    def _batch_size(
        self, pixels: int, net_width: int | None = None, *, memory_bound: bool = True
    ) -> int:
        """Half the memory for activations; on a CPU small batches keep the steps many."""
        ceiling = (16 if pixels <= 128 * 128 else 8) if self.hw.device == "cpu" else 32
        if not memory_bound:
            return ceiling
        activations = _activation_bytes(net_width or self.base_width, pixels, self.fp.channels)
        fits = int(0.5 * self.hw.memory_bytes // activations)
        return max(1, min(ceiling, fits))

    def _geometry(self, encoder: str | None = None) -> _Geometry:
        """Input size (or native crops), depth and batch that afford the target passes over
        the data and steps at the current speed: of the U-Net, or of `unet-resnet` with the
        pretrained `encoder` (its own cost, and PRETRAINED_PASS_SHARE of the passes)."""
        fp = self.fp
        height, width = self.height, self.width
        native = height * width
        pass_share = PRETRAINED_PASS_SHARE if encoder else 1.0
        # the smallest side: the naive U-Net's, or the encoder's (4 px at its 1/32 stride)
        min_side = PRETRAINED_MIN_SIDE if encoder else MIN_SIDE
        epochs = self.target_epochs() * pass_share
        seconds = self.training_seconds()
        batch = self._batch_size(native, memory_bound=False)
        samples = max(self.train_images * epochs, TARGET_STEPS * batch)
        speed = self.train_speed / self._model_cost(encoder, self.base_width)
        affordable = speed * seconds / samples
        budget_text = (
            f"{self.train_images} images x {epochs:.0f} passes (or {TARGET_STEPS} steps) in "
            f"~{seconds:.0f} s at ~{speed / 1e6:.2f} Mpx/s afford "
            f"~{affordable:.0f} px per image"
        )
        sized_for = {"encoder": encoder, "target_epochs": epochs, "affordable": affordable}
        thickness = _foreground_thickness(fp)
        # structures thick at the native size are drawn as well smaller: they want the passes
        # that show the model ENOUGH_SAMPLES images before they want every pixel
        wanted_epochs = epochs
        if thickness is not None and thickness > COMFORTABLE_THICKNESS:
            wanted_epochs = max(epochs, pass_share * ENOUGH_SAMPLES / self.train_images)
        at_wanted_passes = affordable * epochs / wanted_epochs
        depth = _levels(min(height, width), encoder)
        size = [_round_up(height, 2**depth), _round_up(width, 2**depth)]
        pixels = size[0] * size[1]
        # judged on the rounded-up size the model is fed: TGS's 101 px became 112 px, 1.5x the
        # affordable pixels, and 12 of the 16 passes the budget was meant to buy
        if pixels <= at_wanted_passes * NATIVE_SLACK:
            net_width, width_why = (
                (self.base_width, "")
                if encoder
                else self._wider(at_wanted_passes / pixels, wanted_epochs)
            )
            model = PRETRAINED_MODEL if encoder else "U-Net"
            return _Geometry(
                size, None, depth, self._batch_size(pixels, net_width), pixels, pixels,
                f"median image {height}x{width} rounded up to a multiple of {2**depth} (the "
                f"{model}'s size divisor): every pixel kept, as {budget_text} (within "
                f"{NATIVE_SLACK:g}x is close enough)",
                net_width, width_why, **sized_for,
            )  # fmt: skip
        floor = min(1.0, min_side / min(height, width))
        scale = max(floor, math.sqrt(affordable / native))
        uniform = fp.height.min == fp.height.max and fp.width.min == fp.width.max
        thin = thickness is not None and thickness * scale < MIN_THICKNESS
        comfortable = (
            thickness is not None
            and thickness * scale > COMFORTABLE_THICKNESS
            and wanted_epochs > epochs
        )
        if comfortable:
            enough_samples = math.sqrt(at_wanted_passes / native)
            scale = max(floor, COMFORTABLE_THICKNESS / thickness, enough_samples)
        # a mild downscale saves little time but still blurs thin-ish structures
        mild = thickness is not None and scale >= MILD_DOWNSCALE
        thin_ish = mild and thickness * scale < COMFORTABLE_THICKNESS
        if (thin or thin_ish) and uniform and scale < 1:
            crop_geometry = self._native_crops(affordable, thickness, scale, budget_text, sized_for)
            if crop_geometry is not None:
                return crop_geometry
        if scale >= 1:
            depth = _levels(min(height, width), encoder)
            size = [_round_up(height, 2**depth), _round_up(width, 2**depth)]
            pixels = size[0] * size[1]
            return _Geometry(
                size, None, depth, self._batch_size(pixels), pixels, pixels,
                f"median image {height}x{width} kept whole although {budget_text}: smaller "
                f"than {min_side} px would lose more than fewer passes do",
                self.base_width, **sized_for,
            )  # fmt: skip
        target_h, target_w = round(height * scale), round(width * scale)
        depth = ENCODER_LEVELS if encoder else _depth_for(target_h, target_w)
        size = [_round_up(target_h, 2**depth), _round_up(target_w, 2**depth)]
        pixels = size[0] * size[1]
        if thickness is None:
            detail = "no objects to lose"
        elif thin and not uniform:
            detail = (
                f"images of varying size ({fp.height.min}-{fp.height.max} x {fp.width.min}-"
                f"{fp.width.max}) need one size to be batched, although the thinnest "
                f"structures shrink to {thickness * scale:.1f} px"
            )
        elif thin:
            detail = (
                f"its thin structures ({thickness:.1f} px) shrink to "
                f"{thickness * scale:.1f} px, but native-resolution validation would take "
                f"more than {MAX_VALIDATION_PASS_SHARE:.0%} of the budget"
            )
        else:
            detail = (
                f"its structures stay {thickness * scale:.1f} px thick (from "
                f"{thickness:.1f} px; >= {MIN_THICKNESS:.0f} px needed)"
            )
            if comfortable:
                passes = epochs * affordable / pixels
                detail += (
                    f"; thicker than {COMFORTABLE_THICKNESS:g} px they would buy pixels that "
                    f"more passes serve better: downscaled to {COMFORTABLE_THICKNESS:g} px "
                    f"thick or until {ENOUGH_SAMPLES // 1000}k training samples fit "
                    f"({wanted_epochs:.0f} passes), whichever keeps more pixels "
                    f"(~{passes:.0f} passes afforded)"
                )
        limit = f" (the {min_side} px floor)" if scale == floor else ""
        return _Geometry(
            size, None, depth, self._batch_size(pixels), pixels, pixels,
            f"median image {height}x{width} downscaled by {scale:.2f}{limit}, as {budget_text}; "
            f"{detail}",
            self.base_width, **sized_for,
        )  # fmt: skip

    def _width_cost(self, width: int) -> float:
        """How much slower than the base width a net of `width` trains: as measured here when
        both widths were timed, else width^2."""
        measured = self._measured_width_cost(width)
        return (width / self.base_width) ** 2 if measured is None else measured

    def _measured_width_cost(self, width: int) -> float | None:
        speeds = self.width_speeds
        if width in speeds and self.base_width in speeds:
            return speeds[self.base_width] / speeds[width]
        return None

    def _model_cost(self, encoder: str | None, width: int) -> float:
        """How much slower per pixel than the base-width U-Net a model trains."""
        return self.encoder_cost if encoder else self._width_cost(width)

    def _cost(self, geometry: _Geometry) -> float:
        return self._model_cost(geometry.encoder, geometry.width)

    def _expected_passes(self, geometry: _Geometry) -> float:
        pixels = self.train_images * geometry.trained_pixels * self._cost(geometry)
        return self.training_seconds() * self.train_speed / pixels

    def _enough_passes(self, geometry: _Geometry) -> float:
        """The passes a geometry must afford: its target, within the native size's slack."""
        return geometry.target_epochs / NATIVE_SLACK

    def _wider(self, surplus: float, epochs: float) -> tuple[int, str]:
        """The base width for a budget that affords `surplus` times the target passes at the
        native size: passes first, up to SURPLUS_PASSES times the target, then width."""
        chosen = self.base_width
        for factor in WIDER:
            width = round(self.base_width * factor)
            if surplus >= SURPLUS_PASSES * self._width_cost(width):
                chosen = width
        if chosen == self.base_width:
            return chosen, ""
        cost = self._width_cost(chosen)
        source = "width^2" if self._measured_width_cost(chosen) is None else "measured here"
        return chosen, (
            f"the budget affords {surplus:.1f}x the {epochs:.0f} target passes at the native "
            f"size: past {SURPLUS_PASSES:g}x, more passes stop paying and a wider net (cost "
            f"{cost:.1f}x, {source}) can use the time (~{epochs * surplus / cost:.0f} passes "
            f"at width {chosen})"
        )

    def _native_crops(
        self,
        affordable: float,
        thickness: float,
        scale: float,
        budget_text: str,
        sized_for: dict[str, Any],
    ) -> _Geometry | None:
        """Crops at native resolution for thin structures; None when validating whole native
        images would cost too much of the budget."""
        height, width = self.height, self.width
        encoder = sized_for["encoder"]
        val_speed = self.val_speed / self._model_cost(encoder, self.base_width)
        val_pass = self.val_images * height * width / max(val_speed, 1e-9)
        if val_pass > MAX_VALIDATION_PASS_SHARE * self.budget:
            return None
        side = max(PRETRAINED_MIN_SIDE if encoder else MIN_SIDE, int(math.sqrt(affordable)))
        depth = _levels(side, encoder)
        side = max(2**depth, side // 2**depth * 2**depth)
        crop = [min(side, _round_up(height, 2**depth)), min(side, _round_up(width, 2**depth))]
        return _Geometry(
            [], crop, depth, self._batch_size(crop[0] * crop[1]), crop[0] * crop[1],
            height * width,
            f"median image {height}x{width} is more than the budget affords ({budget_text}); "
            f"its thinnest structures ({thickness:.1f} px) would shrink to "
            f"{thickness * scale:.1f} px if downscaled "
            + (
                f"(< {MIN_THICKNESS:.0f})"
                if thickness * scale < MIN_THICKNESS
                else f"by {scale:.2f} (< {COMFORTABLE_THICKNESS:g}), to save only "
                f"{1 - scale**2:.0%} of the time"
            )
            + ", so training uses "
            f"{crop[0]}x{crop[1]} crops at native resolution and validates whole images "
            f"(~{val_pass:.0f} s a pass)",
            self.base_width, **sized_for,
        )  # fmt: skip


def _activation_bytes(base_width: int, pixels: int, channels: int) -> int:
    # a U-Net keeps ~12 maps of base_width channels per pixel at full resolution (convs,
    # norms, activations, skips) and as much again in the coarser levels; float32, doubled
    # for the gradients
    return int(pixels * (24 * base_width + 2 * channels) * 4 * 2)


def _depth(side: int) -> int:
    return max(2, min(5, int(math.log2(max(side, 1) / BOTTLENECK_SIDE))))


def _levels(side: int, encoder: str | None) -> int:
    """Downsampling levels: a pretrained encoder's are fixed, the U-Net's follow the side."""
    return ENCODER_LEVELS if encoder else _depth(side)


def _depth_for(height: int, width: int) -> int:
    """The depth for an input of about `height` x `width`: one level deeper than its short
    side calls for when rounding up to the deeper size divisor adds at most DEEPER_ROUNDING
    of the pixels. TGS downscaled to 85 px is fed at 96 px instead of 88: on the 2-core Xeon
    at 8 minutes, depth 4 at 96 px reached a salt IoU of 0.788 in 14 and in 13 epochs, depth
    3 at 88 px 0.774 in 18 (and at 90 px, depth 4 0.780 after 12 of 16 epochs, depth 3 0.772
    after all 16)."""
    depth = _depth(min(height, width))
    deeper = [_round_up(height, 2 ** (depth + 1)), _round_up(width, 2 ** (depth + 1))]
    shallow = [_round_up(height, 2**depth), _round_up(width, 2**depth)]
    affordable = deeper[0] * deeper[1] <= DEEPER_ROUNDING * shallow[0] * shallow[1]
    if affordable and _depth(min(deeper)) > depth:
        return depth + 1
    return depth


def _round_up(value: int, divisor: int) -> int:
    return max(divisor, math.ceil(value / divisor) * divisor)


def _foreground_thickness(fp: Fingerprint) -> float | None:
    """The thickness of what the model must draw: the pixel-weighted median thickness of the
    classes other than the most common one (the background, in most data)."""
    present = [c for c in fp.classes if c.pixel_share > 0]
    if len(present) < 2:
        return None
    largest = max(present, key=lambda c: c.pixel_share)
    measured = sorted(
        (c.thickness, c.pixel_share)
        for c in present
        if c is not largest and c.thickness is not None
    )
    if not measured:
        return None
    half, total = sum(share for _, share in measured) / 2, 0.0
    for thickness, share in measured:
        total += share
        if total >= half:
            return thickness
    return measured[-1][0]
