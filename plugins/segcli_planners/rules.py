"""The `default` planner: a whole training chosen by rules from a fingerprint, the hardware
and a time budget.

Every rule is one line in docs/planning.md: what it sets, from which fingerprint value, and
why. The result is a configuration layer (the place of a recipe: `--config` and `--set`
still override any planned value) and one reason per planned key. It uses only segcli's
public API (`from segcli import NAME`), as any third-party planner would.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segcli import (
    ClassStats,
    Fingerprint,
    Hardware,
    Measurement,
    Plan,
    Timer,
    estimate_pixels_per_second,
    requirements,
)

from .pretrained import (
    ENCODER_COST,
    ENCODER_LEVELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRETRAINED_LR,
    PRETRAINED_MIN_SIDE,
    PRETRAINED_MODEL,
    PRETRAINED_PASS_SHARE,
    Encoder,
    encoder_at_hand,
)

# Share of the budget the optimizer steps get: validation is kept to ~10 %, start-up, setup
# and checkpoints take the rest.
TRAINING_SHARE = 0.85
VALIDATION_SHARE = 0.10
# Enough optimizer steps for AdamW with a warm-up and a decay to converge on small data. A
# floor for tiny sets, where it buys steps with smaller crops: ISBI (25 images) at 8 minutes
# on 2 CPU cores reached 0.779 mIoU with 224 px crops (1244 steps), 0.778 with 160 px (1708)
# and 0.785-0.787 with 256 px (784-844); DRIVE (20) 0.819 vessel Dice at 320 px (701).
TARGET_STEPS = 750
# Training images larger than this multiple of the input are resized once, when read: the
# largest zoom planned is 1.25x. Scale augmentation of a 640 px image took 22 ms a sample on
# one core, at 168 px 1.5 ms: car damage at 112 px was loader-bound at ~39 img/s.
LOAD_SCALE = 1.5
# A class below this share of the labelled pixels is rare: the loss gets a Dice term.
RARE_PIXEL_SHARE = 0.10
# Passes over the training data a plan must afford: 30 for 1,000 images, more for fewer (each
# pass teaches less), fewer for more. Measured on 2 CPU cores: street scenes (367 images) at
# 8 epochs of native crops lost to 109 epochs at 64 px by 0.20 mIoU; TGS (3,400 images) at
# 14 epochs of its native 101 px reached 0.78 salt IoU.
EPOCHS_AT_1000_IMAGES = 30
MIN_EPOCHS, MAX_EPOCHS = 10, 300
# Every pixel is kept when the native size costs at most this much more than the target
# passes afford: a little fewer passes lose less than a downscale does (TGS: 101 -> 96 px
# blurs the salt edges its IoU is scored on at 101 px).
NATIVE_SLACK = 1.3
# The smallest side a plan downscales to: the naive 64 px run is the floor to beat.
MIN_SIDE = 64
# Structures still thicker than this after the affordable downscale buy passes, not pixels:
# the plan downscales further, to this thickness, until the run shows the model ENOUGH_SAMPLES
# training images. Measured on 2 CPU cores, 10 minutes: car-damage photos (394 at 640 px,
# damage 92 px thick) at 144 px (20 px thick, 40 passes: 16k samples) reached 0.151 mIoU, at
# 64 px (9 px thick, 105 passes: 42k samples) 0.169; IDD-Lite at 10.5 px thick (36k samples)
# beat 64 px (6.6 px) by 0.117; TGS at 96 px (58k samples) beat 64 px by 0.106.
COMFORTABLE_THICKNESS = 10.0
ENOUGH_SAMPLES = 40_000
# A downscale by this much or less saves under half the time; when it would leave structures
# thinner than COMFORTABLE_THICKNESS, crops at native resolution (most of the image each)
# keep the pixels instead: ISBI at 30 minutes would otherwise train its 7.7 px membranes at
# 448 px, 6.7 px thick, and be scored at 512.
MILD_DOWNSCALE = 0.75
# A class is thin when its thickness (band width, blob radius) would fall below this many
# pixels: a stack of 3x3 convolutions needs a few pixels inside a band besides its two
# edges, and the prediction is scored at native size (ISBI membranes: 7.7 px at 512 px).
MIN_THICKNESS = 6.0
# Native-resolution crops validate on whole native images: not when one validation pass
# would take more than this share of the budget.
MAX_VALIDATION_PASS_SHARE = 0.15
# A U-Net's bottleneck should still see a few pixels: depth so that side / 2**depth >= 6.
BOTTLENECK_SIDE = 6
# Classes whose pixels sit this close to the middle vertically (top_share) show no up or down:
# over many images even a small lean is systematic (TGS salt: 0.48, i.e. it sits low).
SYMMETRY_TOLERANCE = 0.01
SMALL_DATASET = 500
# Images per second a validation forward pass is faster than a training step, roughly (the
# table's guess; a measurement replaces it).
FORWARD_SPEED_UP = 3.0
NEVER_BINDING_EPOCHS = 10_000
# A budget affording more than this many times the target passes at the native size spends
# the rest on width (x1.25 to x2: cost width^2); a plan of AUGMENT_PASSES times the target
# passes or more adds zoom augmentation: a longer run sees every image more often. Measured on
# TGS, 2-core Xeon: 8 minutes (17 passes, 1x the target) reached salt IoU 0.795, 30 minutes at
# the same width (41 passes with zoom) only 0.800, its training loss still at its validation
# loss (0.28, 0.30): past ~1.5x the passes the small net, not the data, was the limit.
SURPLUS_PASSES = 1.5
AUGMENT_PASSES = 2.0
WIDER = (1.25, 1.5, 2.0)
# Measurements after the first: the plan is re-made from each until its input size settles.
MAX_REMEASUREMENTS = 2
# Measuring is part of the budget: after the first measurement, another is taken only while
# all of them stay within this share of it.
MEASURING_SHARE = 0.04
# Below this budget a measurement (a few seconds, more on a busy machine) costs more than a
# better plan could win back: the table plans it.
MIN_MEASURED_BUDGET = 60.0
SETTLED = 0.3  # relative change of the trained pixels below which a plan has settled


def plan(
    fingerprint: Fingerprint,
    hardware: Hardware,
    budget_seconds: float,
    *,
    timer: Timer | None = None,
    requested: Mapping[str, Any] | None = None,
) -> Plan:
    """Choose model, input size, batch, loss, schedule, augmentation and metrics; with a
    `timer`, from speeds measured on the machine, else from the built-in speed table.
    `requested`: what --config and --set ask for (they override the plan), by dotted key;
    `model.backbone_weights` there makes a plan of photographs use a pretrained encoder."""
    planner = _Planner(fingerprint, hardware, budget_seconds, timer, requested or {})
    planner.run()
    return Plan(planner.layer, planner.reasons, planner.estimates)


# Every name a plan of these rules may use, with the built-in plugin that provides it: a
# disabled or missing one is named before planning starts.
plan.needs = (  # type: ignore[attr-defined]
    *requirements("models", "segcli", model=["unet", PRETRAINED_MODEL]),
    *requirements("losses", "segcli", loss=["ce", "dice", "bce"]),
    *requirements("metrics", "segcli", metric=["confusion", "binary", "tgs"]),
    *requirements("optim", "segcli", optimizer=["adamw"], scheduler=["cosine"]),
    *requirements("transforms", "segcli", transform=["scale", "rotate", "crop", "hflip", "vflip"]),
)


@dataclass(frozen=True)
class _Machine:
    """How the steps run: memory format, precision, loader workers."""

    channels_last: bool
    bf16: bool
    workers: int

    def label(self) -> str:
        precision = "bf16" if self.bf16 else "fp32"
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{precision} {layout}, {self.workers} loader worker(s)"


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


class _Planner:
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
        # the pretrained encoder at hand (None: none, or the rule does not apply), its cost per
        # pixel over the base-width U-Net's, and what the U-Net's reason says about it
        self.encoder: Encoder | None = None
        self.encoder_cost, self.encoder_cost_source = 1.0, ""
        self.encoder_note = ""

    def set(self, key: str, value: Any, reason: str) -> None:
        table = self.layer
        *parents, last = key.split(".")
        for part in parents:
            table = table.setdefault(part, {})
        table[last] = value
        self.reasons[key] = reason

    def run(self) -> None:
        machines = self._machines()
        machine = machines[0]
        self.train_speed = estimate_pixels_per_second(
            self.hw, self.base_width, channels_last=machine.channels_last, bf16=machine.bf16
        )
        self.val_speed = self.train_speed * FORWARD_SPEED_UP
        self.estimates["table_pixels_per_second"] = round(self.train_speed)
        geometry = self._geometry()
        if self.timer is not None and self.budget < MIN_MEASURED_BUDGET:
            self.timer = None
        if self.timer is not None:
            machine, geometry = self._measured(machines, geometry)
        geometry = self._with_pretrained_encoder(geometry, machine)
        self._apply(geometry, machine)
        self.estimates.update(
            pixels_per_second=round(self.train_speed),
            val_pixels_per_second=round(self.val_speed),
            speed_source="measured" if self.timer is not None else "table",
        )

    def _apply(self, geometry: _Geometry, machine: _Machine) -> None:
        """Write the whole plan for `geometry` and `machine` into the layer."""
        self.layer.clear()
        self.reasons.clear()
        self.estimates.update(
            target_epochs=round(geometry.target_epochs, 1),
            affordable_pixels_per_image=round(geometry.affordable),
        )
        self.set("input.size", geometry.size, geometry.why)
        if geometry.encoder is not None:
            self._pretrained_model(geometry)
        else:
            self._unet(geometry)
        activations = _activation_bytes(geometry.width, geometry.trained_pixels, self.fp.channels)
        self.set(
            "train.batch_size",
            geometry.batch,
            f"fits {self.hw.memory_bytes / 2**30:.1f} GiB of {self.hw.device} memory "
            f"(~{activations / 2**20:.0f} MiB of activations per image)"
            + (
                "; moderate on a CPU so the budget holds enough steps"
                if self.hw.device == "cpu"
                else ""
            ),
        )
        self._loss_and_metrics()
        self._optimisation(geometry)
        self._validation(geometry)
        self._augmentation(geometry)
        self._load_scale(geometry)
        self._normalisation(geometry)
        self._machine(machine)

    def _unet(self, geometry: _Geometry) -> None:
        side = min(geometry.crop or geometry.size or [self.height, self.width])
        self.set(
            "model.name",
            "unet",
            "segcli's U-Net: same-size output, any size, fast on CPU"
            + (f"; {self.encoder_note}" if self.encoder_note else ""),
        )
        bottleneck = side / 2**geometry.depth
        self.set(
            "model.depth",
            geometry.depth,
            f"a {side} px input leaves {bottleneck:.0f} px at the bottleneck"
            + (
                f" (the deepest of 2-5 levels that keeps >= {BOTTLENECK_SIDE} px)"
                if bottleneck >= BOTTLENECK_SIDE
                else " (the shallowest U-Net: 2 levels)"
            ),
        )
        self.set(
            "model.base_width",
            geometry.width,
            geometry.width_why
            or (
                "what a small CPU trains fast enough"
                if self.hw.device == "cpu"
                else f"a {self.hw.device} GPU affords a wider net"
            ),
        )
        self.set("model.batch_norm", True, "keeps AdamW at a high learning rate stable")

    def _pretrained_model(self, geometry: _Geometry) -> None:
        encoder = self.encoder
        assert encoder is not None
        passes = self._expected_passes(geometry)
        self.set(
            "model.name",
            PRETRAINED_MODEL,
            f"photographs, and ImageNet weights for a {encoder.name} encoder are at hand "
            f"({encoder.where}): a U-Net decoder on that pretrained encoder, ~"
            f"{self.encoder_cost:.1f}x the U-Net's time per pixel"
            + (f" ({self.encoder_cost_source})" if self.encoder_cost_source else "")
            + f", ~{passes:.0f} passes (a pretrained encoder is planned for "
            f"{PRETRAINED_PASS_SHARE:.0%} of the target passes)"
            + (
                ""
                if passes >= self._enough_passes(geometry)
                else "; fewer than it wants, kept because the weights were asked for"
            ),
        )
        self.set(
            "model.encoder",
            encoder.name,
            "as asked for"
            if "model.encoder" in self.requested
            else "the cheaper of resnet18 and resnet34 (--set model.encoder=resnet34 for more)",
        )
        if encoder.planned_weights:
            self.set(
                "model.backbone_weights",
                encoder.weights,
                f"torchvision's ImageNet weights for {encoder.name}, {encoder.where}",
            )

    # -- speed: the table, or measurements -----------------------------------------------

    def _machines(self) -> list[_Machine]:
        """The ways of running the steps worth measuring, the table's favourite first."""
        hw = self.hw
        if hw.device == "mps":
            return [_Machine(False, False, 0)]
        if hw.device != "cpu":
            return [_Machine(True, hw.bf16, max(0, min(8, hw.cpu_cores - 1)))]
        workers = 1 if hw.cpu_cores <= 2 else min(4, hw.cpu_cores // 4)
        candidates = [_Machine(True, hw.bf16, workers)]
        if hw.bf16:  # emulated or slow bf16 kernels exist: fp32 may win on this CPU
            candidates.append(_Machine(True, False, workers))
        if hw.cpu_cores <= 2:  # a loader process may steal more from the model than it gives
            candidates.append(_Machine(True, hw.bf16, 0))
        return candidates

    def _measured(
        self, machines: list[_Machine], geometry: _Geometry
    ) -> tuple[_Machine, _Geometry]:
        """Measure each way of running on the table's plan, keep the fastest, then re-plan
        from the measured speed until the input size settles."""
        assert self.timer is not None
        results = []
        for machine in machines:
            if results and not self._another_measurement_fits():
                break
            self._apply(geometry, machine)
            results.append((self._timed(geometry, machine), machine))
        measurement, machine = max(results, key=lambda item: item[0].train_images_per_second)
        self.estimates["machines"] = {
            m.label(): round(r.train_images_per_second, 1) for r, m in results
        }
        self._use(measurement, geometry)
        for _ in range(MAX_REMEASUREMENTS):
            replanned = self._geometry()
            change = abs(replanned.trained_pixels / geometry.trained_pixels - 1)
            settled = (
                change < SETTLED
                and replanned.crop == geometry.crop
                and replanned.width == geometry.width
            )
            if settled or not self._another_measurement_fits():
                return machine, replanned
            geometry = replanned
            self._apply(geometry, machine)
            self._use(self._timed(geometry, machine), geometry)
        return machine, self._geometry()

    def _another_measurement_fits(self) -> bool:
        taken = len(self.estimates.get("measurements", ()))
        typical = self.measuring_seconds / max(1, taken)
        return self.measuring_seconds + typical <= MEASURING_SHARE * self.budget

    def _timed(self, geometry: _Geometry, machine: _Machine) -> Measurement:
        assert self.timer is not None
        measurement = self.timer(copy.deepcopy(self.layer))
        self.measuring_seconds += measurement.seconds
        self.estimates.setdefault("measurements", []).append(
            {
                "input": geometry.crop or geometry.size or [self.height, self.width],
                "batch": geometry.batch,
                "machine": machine.label(),
                "train_images_per_second": round(measurement.train_images_per_second, 2),
                "val_images_per_second": round(measurement.val_images_per_second, 2),
                "seconds": round(measurement.seconds, 2),
            }
        )
        return measurement

    def _use(self, measurement: Measurement, geometry: _Geometry) -> None:
        cost = self._width_cost(geometry.width)  # back to the base width's speed
        self.train_speed = measurement.train_images_per_second * geometry.trained_pixels * cost
        if math.isfinite(measurement.val_images_per_second):
            self.val_speed = measurement.val_images_per_second * geometry.val_pixels * cost

    # -- the rules -------------------------------------------------------------------------

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
        """How much slower than the base width a net of `width` trains (width^2)."""
        return (width / self.base_width) ** 2

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

    def _with_pretrained_encoder(self, geometry: _Geometry, machine: _Machine) -> _Geometry:
        """`geometry` of the U-Net, or of unet-resnet when the rule applies (photographs,
        ImageNet weights at hand) and the budget affords it enough passes (its input is never
        below PRETRAINED_MIN_SIDE, or the images' own size): timed like any candidate when the
        measuring share allows. Weights the user gave are used whatever the budget."""
        self.encoder, self.encoder_note = encoder_at_hand(
            self.fp, self.requested, _foreground_thickness(self.fp)
        )
        if self.encoder is None:
            return geometry
        name = self.encoder.name
        self.encoder_cost = ENCODER_COST[name] * (16 / self.base_width) ** 2
        self.encoder_cost_source = "segcli's table"
        candidate = self._geometry(name)
        if self.timer is not None and self._another_measurement_fits():
            self._apply(candidate, machine)
            measured = self._timed(candidate, machine)
            pixel_speed = measured.train_images_per_second * candidate.trained_pixels
            self.encoder_cost = self.train_speed / max(pixel_speed, 1e-9)
            self.encoder_cost_source = "measured here"
            candidate = self._geometry(name)
        side = min(candidate.crop or candidate.size)
        passes, enough = self._expected_passes(candidate), self._enough_passes(candidate)
        if passes >= enough or not self.encoder.planned_weights:
            return candidate
        self.encoder_note = (
            f"ImageNet weights for {name} are at hand ({self.encoder.where}), but "
            f"{PRETRAINED_MODEL} at ~{self.encoder_cost:.1f}x the U-Net's time per pixel "
            f"({self.encoder_cost_source}) would afford ~{passes:.0f} passes at {side} px, "
            f"its smallest input (it wants >= {enough:.0f}): a longer --time buys it"
        )
        self.encoder = None
        return geometry

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
        passes = epochs * surplus / self._width_cost(chosen)
        return chosen, (
            f"the budget affords {surplus:.1f}x the {epochs:.0f} target passes at the native "
            f"size: past {SURPLUS_PASSES:g}x, more passes stop paying and a wider net (cost "
            f"width^2) can use the time (~{passes:.0f} passes at width {chosen})"
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

    def _load_scale(self, geometry: _Geometry) -> None:
        """Only with zoom augmentation: without it, the loader's work is one resize."""
        if not geometry.size or "scale" not in self.layer.get("augment", {}):
            return
        loaded = [round(side * LOAD_SCALE) for side in geometry.size]
        if self.height * self.width <= loaded[0] * loaded[1]:
            return
        fewer = self.height * self.width / (loaded[0] * loaded[1])
        self.set(
            "input.load_scale",
            LOAD_SCALE,
            f"training images are resized once, when read, to {loaded[0]}x{loaded[1]} (the "
            f"median is {self.height}x{self.width}): zooms keep their detail and the loader "
            f"augments {fewer:.0f}x fewer pixels",
        )

    def _loss_and_metrics(self) -> None:
        classes = self.fp.classes
        present = [c for c in classes if c.pixel_share > 0]
        if len(classes) == 2:
            background, foreground = classes
            if foreground.pixel_share <= background.pixel_share:
                self._single_logit(foreground)
                return
            minority = background
            self.set(
                "loss.name",
                "ce+dice",
                f"class 0 '{minority.name}' is the minority ({minority.pixel_share:.1%} of "
                "pixels): two logits so the Dice term scores it (single-logit losses and the "
                "binary metrics score class 1)",
            )
        else:
            rare = [c for c in present if c.pixel_share < RARE_PIXEL_SHARE]
            if rare:
                self.set(
                    "loss.name",
                    "ce+dice",
                    f"{len(rare)} rare class(es) below {RARE_PIXEL_SHARE:.0%} of pixels "
                    f"('{min(rare, key=lambda c: c.pixel_share).name}' "
                    f"{min(c.pixel_share for c in rare):.1%}): Dice weighs classes equally",
                )
            else:
                self.set(
                    "loss.name",
                    "ce",
                    f"every class holds >= {RARE_PIXEL_SHARE:.0%} of the pixels: "
                    "cross-entropy alone is balanced enough",
                )
        self.set("metrics", ["confusion"], "per-class IoU and Dice, pixel accuracy")
        self.set("train.monitor", "confusion/miou", "mean IoU over the classes keeps the best")

    def _single_logit(self, foreground: ClassStats) -> None:
        share = foreground.pixel_share
        if share < 0.5:
            self.set(
                "loss.name",
                "bce+dice",
                f"two classes, class 1 '{foreground.name}' is the minority ({share:.1%} of "
                "pixels): one logit with BCE, plus Dice for the overlap the monitor measures",
            )
        else:
            self.set("loss.name", "bce", f"two balanced classes ({share:.1%} class 1)")
        metrics = ["confusion", "binary"]
        reason = f"'{foreground.name}' scored as the foreground (binary: IoU, F1, precision)"
        if foreground.image_share < 0.9:
            metrics.append("tgs")
            reason += (
                f"; {1 - foreground.image_share:.0%} of the images have no "
                f"'{foreground.name}', so the per-image TGS score (empty images count) too"
            )
        self.set("metrics", metrics, reason)
        self.set(
            "train.monitor",
            "binary/iou",
            f"IoU of '{foreground.name}' over all validation pixels keeps the best",
        )

    def _optimisation(self, geometry: _Geometry) -> None:
        images, batch = self.train_images, geometry.batch
        epoch_seconds = images * geometry.trained_pixels * self._cost(geometry) / self.train_speed
        epochs = self.training_seconds() / epoch_seconds
        self.estimates.update(epoch_seconds=round(epoch_seconds, 2), epochs=round(epochs, 1))
        self.set(
            "train.max_time",
            self.budget,
            f"the budget ({_duration(self.budget)}) bounds the run; the schedule is laid over it",
        )
        self.set(
            "train.epochs",
            NEVER_BINDING_EPOCHS,
            f"an upper bound that never binds: the budget ends the run (~{epochs:.0f} "
            f"epochs of ~{epoch_seconds:.1f} s expected)",
        )
        if geometry.encoder is None:
            self.set("train.lr", 3e-3, "AdamW at 3e-3 trains a batch-norm U-Net fast and stably")
        else:
            self.set(
                "train.lr",
                PRETRAINED_LR,
                "a third of the U-Net's 3e-3: the new decoder's first gradients would wreck "
                "the pretrained features at the scratch rate (the usual fine-tuning range is "
                "1e-4 to 1e-3)",
            )
        self.set(
            "train.optimizer",
            {"name": "adamw", "weight_decay": 1e-4},
            "AdamW with weight decay 1e-4: robust without tuning",
        )
        steps_per_epoch = max(1, images // batch)
        warmup = round(min(0.1 * epochs, max(0.03 * epochs, 50 / steps_per_epoch)), 2)
        self.set(
            "train.scheduler",
            {"name": "cosine", "warmup_epochs": warmup},
            f"linear warm-up over {warmup} epoch(s) (3 % of the run, at least 50 steps, at most "
            "10 %), "
            "then cosine decay to 0 at the end of the budget",
        )

    def _validation(self, geometry: _Geometry) -> None:
        cost = self._cost(geometry)
        epoch_seconds = self.train_images * geometry.trained_pixels * cost / self.train_speed
        val_seconds = self.val_images * geometry.val_pixels * cost / self.val_speed
        share = 1 - VALIDATION_SHARE
        every = max(1, math.ceil(share / VALIDATION_SHARE * val_seconds / epoch_seconds))
        self.estimates["validation_seconds"] = round(val_seconds, 2)
        self.set(
            "train.val_every",
            every,
            f"validating {self.val_images} images (~{val_seconds:.1f} s) every {every} "
            f"epoch(s) of ~{epoch_seconds:.1f} s keeps validation <= {VALIDATION_SHARE:.0%} "
            "of the time",
        )

    def _augmentation(self, geometry: _Geometry) -> None:
        """Scale, rotate, crop, flips, in that order; one reason per transform."""
        fp, images, crop = self.fp, self.train_images, geometry.crop
        self.layer["augment"] = {}
        passes = self.estimates.get("epochs", 0.0) / geometry.target_epochs
        if images < SMALL_DATASET:
            self.set(
                "augment.scale",
                {"range": [0.75, 1.25]},
                f"{images} training images (< {SMALL_DATASET}): zoom adds the variety they lack",
            )
        elif passes >= AUGMENT_PASSES:
            self.set(
                "augment.scale",
                {"range": [0.75, 1.25]},
                f"~{passes:.1f}x the target passes: zoom keeps a long run from memorising "
                "the images",
            )
        free = _orientation_free(fp)
        symmetric = (
            "grey images whose classes sit evenly top and bottom (every top_share within "
            f"0.5 +- {SYMMETRY_TOLERANCE}) have no up or down"
        )
        if free:
            self.set("augment.rotate", {"degrees": 15}, symmetric)
        if crop is not None:
            self.set("augment.crop", {"size": crop}, geometry.why)
        self.set(
            "augment.hflip",
            {"p": 0.5},
            "mirror images are as likely as the originals"
            + ("" if free else f"; no vflip or rotate: {_orientation_evidence(fp)}"),
        )
        if free:
            self.set("augment.vflip", {"p": 0.5}, symmetric)

    def _normalisation(self, geometry: _Geometry) -> None:
        fp = self.fp
        if geometry.encoder is not None:
            why = f"the statistics the {geometry.encoder} ImageNet weights were trained with"
            self.set("input.mean", IMAGENET_MEAN, why)
            self.set("input.std", IMAGENET_STD, why)
            self.set("dataset.cache", "auto", "decode each image once when the dataset fits memory")
            return
        self.set(
            "input.mean",
            [round(v, 4) for v in fp.mean],
            f"the training images' per-channel mean ({fp.images_measured} images measured)",
        )
        self.set(
            "input.std",
            [round(max(v, 1e-3), 4) for v in fp.std],
            "the training images' per-channel std",
        )
        self.set("dataset.cache", "auto", "decode each image once when the dataset fits memory")

    def _machine(self, machine: _Machine) -> None:
        hw = self.hw
        measured = self.estimates.get("machines")
        compared = (
            "; measured here: "
            + ", ".join(f"{label} {speed:g} img/s" for label, speed in measured.items())
            if measured and len(measured) > 1
            else ""
        )
        self.set(
            "train.channels_last",
            machine.channels_last,
            "channels-last convolutions are ~1.6x faster on CPU and use tensor cores on GPU"
            if machine.channels_last
            else f"no gain on {hw.device}",
        )
        if machine.bf16:
            self.set("train.amp", "bf16", f"the {hw.device} runs bf16 natively{compared}")
        elif hw.device == "cuda":
            self.set("train.amp", "fp16", "this GPU has no bf16: fp16 with a gradient scaler")
        elif hw.bf16:
            self.set("train.amp", "off", f"fp32 ran faster than this CPU's bf16{compared}")
        else:
            self.set("train.amp", "off", f"this {hw.device} has no native bf16: emulated is slower")
        if hw.device == "cpu":
            why = (
                f"{hw.cpu_cores} cores: decoding and augmenting in the training process "
                "(a loader process would steal the model's cores)"
                if machine.workers == 0
                else f"{hw.cpu_cores} cores: {machine.workers} loader process(es) decode and "
                "augment while the model steps"
            )
            why += compared if measured and len(measured) > 1 else ""
        else:
            why = f"{hw.cpu_cores} cores feed the GPU, one left for the training process"
        self.set("train.workers", machine.workers, why)


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
    side calls for when rounding up to the deeper size divisor adds no pixel (TGS downscaled to
    90 px is fed at 96 px either way; depth 4 reached a salt IoU of 0.780 after 12 of 16
    epochs, depth 3 0.772 after all 16)."""
    depth = _depth(min(height, width))
    deeper = [_round_up(height, 2 ** (depth + 1)), _round_up(width, 2 ** (depth + 1))]
    same_size = deeper == [_round_up(height, 2**depth), _round_up(width, 2**depth)]
    if same_size and _depth(min(deeper)) > depth:
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


def _orientation_free(fp: Fingerprint) -> bool:
    # left and right are mirrored for every dataset anyway (hflip)
    shares = [c.top_share for c in fp.classes if c.pixel_share > 0 and c.top_share is not None]
    return (
        fp.channels == 1
        and bool(shares)
        and all(abs(s - 0.5) <= SYMMETRY_TOLERANCE for s in shares)
    )


def _orientation_evidence(fp: Fingerprint) -> str:
    if fp.channels != 1:
        return f"{fp.channels}-channel images are taken to be photographs, with an up and a down"
    skewed = max(
        (c for c in fp.classes if c.top_share is not None),
        key=lambda c: abs(c.top_share - 0.5),
        default=None,
    )
    if skewed is None:
        return "no class positions measured"
    return f"'{skewed.name}' sits unevenly ({skewed.top_share:.1%} of its pixels in the top half)"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return (
        f"{minutes}m{rest:02d}s" if minutes and rest else f"{minutes}m" if minutes else f"{rest}s"
    )
