"""`plan`: a whole training chosen by rules from a fingerprint, the hardware and a time budget.

Every rule is one line in docs/planning.md: what it sets, from which fingerprint value, and
why. The result is a configuration layer (the place of a recipe: `--config` and `--set`
still override any planned value) and one reason per planned key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from segcli.data.fingerprint import ClassStats, Fingerprint
from segcli.planning.hardware import Hardware, estimate_pixels_per_second

DEFAULT_BUDGET_SECONDS = 600.0
# where a planned value comes from, in the configuration's record of sources
PLAN_SOURCE = "plan"
# Share of the budget the optimizer steps get: validation is kept to ~10 %, setup and
# checkpoints take the rest.
TRAINING_SHARE = 0.85
VALIDATION_SHARE = 0.10
# Enough optimizer steps for AdamW with a warm-up and a decay to converge on small data.
TARGET_STEPS = 1000
# A class below this share of the labelled pixels is rare: the loss gets a Dice term.
RARE_PIXEL_SHARE = 0.10
# Objects whose typical side would shrink below this many pixels are not downscaled: a few
# 3x3 convolutions across an object must see more than its boundary.
SMALLEST_OBJECT_SIDE = 32
# A U-Net's bottleneck should still see a few pixels: depth so that side / 2**depth >= 6.
BOTTLENECK_SIDE = 6
# Classes whose pixels sit this close to the middle vertically (top_share) show no up or down:
# over many images even a small lean is systematic (TGS salt: 0.48, i.e. it sits low).
SYMMETRY_TOLERANCE = 0.01
SMALL_DATASET = 500
# Images per second a validation forward pass is faster than a training step, roughly.
FORWARD_SPEED_UP = 3.0
NEVER_BINDING_EPOCHS = 10_000


class Timer(Protocol):
    """Training pixels per second of a `unet` of `base_width` on the hardware's device, e.g.
    `segcli.planning.hardware.measure_pixels_per_second`."""

    def __call__(
        self, hardware: Hardware, base_width: int, *, channels_last: bool, bf16: bool
    ) -> float: ...


@dataclass
class Plan:
    """A configuration layer and, per planned key (dotted), the one-line reason for it."""

    layer: dict[str, Any]
    reasons: dict[str, str]
    # the estimates the rules worked from, saved with the plan
    estimates: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "reasons": self.reasons, "estimates": self.estimates}


def plan(
    fingerprint: Fingerprint,
    hardware: Hardware,
    budget_seconds: float,
    *,
    timer: Timer | None = None,
) -> Plan:
    """Choose model, input size, batch, loss, schedule, augmentation and metrics."""
    planner = _Planner(fingerprint, hardware, budget_seconds, timer)
    planner.run()
    return Plan(planner.layer, planner.reasons, planner.estimates)


class _Planner:
    def __init__(
        self, fp: Fingerprint, hardware: Hardware, budget: float, timer: Timer | None
    ) -> None:
        self.fp, self.hw, self.budget, self.timer = fp, hardware, budget, timer
        self.layer: dict[str, Any] = {}
        self.reasons: dict[str, str] = {}
        self.estimates: dict[str, float] = {}
        self.crop_reason = ""

    def set(self, key: str, value: Any, reason: str) -> None:
        table = self.layer
        *parents, last = key.split(".")
        for part in parents:
            table = table.setdefault(part, {})
        table[last] = value
        self.reasons[key] = reason

    def run(self) -> None:
        fp, hw = self.fp, self.hw
        height, width = round(fp.height.median), round(fp.width.median)
        train_images = max(1, fp.splits.get("train", 0))
        val_images = fp.splits.get("val", 0)

        channels_last, bf16 = self._speed()
        base_width = 16 if hw.device == "cpu" else 32
        speed = self._pixels_per_second(base_width, channels_last, bf16)
        train_seconds = TRAINING_SHARE * self.budget
        # the batch the step count is planned with; memory may lower it once the input is known
        batch = self._batch_size(base_width, height * width, fp.channels, memory_bound=False)
        affordable = speed * train_seconds / (TARGET_STEPS * batch)
        self.estimates.update(
            pixels_per_second=round(speed), affordable_pixels_per_image=round(affordable)
        )

        size, crop, depth = self._input_size(height, width, affordable)
        trained_pixels = crop[0] * crop[1] if crop else size[0] * size[1]
        batch = self._batch_size(base_width, trained_pixels, fp.channels)
        self.set("model.name", "unet", "segcli's U-Net: same-size output, any size, fast on CPU")
        self.set(
            "model.depth",
            depth,
            f"the {min(crop or size)} px input keeps a bottleneck of >= {BOTTLENECK_SIDE} px",
        )
        self.set(
            "model.base_width",
            base_width,
            "what a small CPU trains fast enough"
            if hw.device == "cpu"
            else f"a {hw.device} GPU affords a wider net",
        )
        self.set("model.batch_norm", True, "keeps AdamW at a high learning rate stable")

        self.set(
            "train.batch_size",
            batch,
            f"fits {hw.memory_bytes / 2**30:.1f} GiB of {hw.device} memory "
            f"(~{_activation_bytes(base_width, trained_pixels, fp.channels) / 2**20:.0f} MiB "
            "of activations per image)"
            + (
                "; moderate on a CPU so the budget holds enough steps" if hw.device == "cpu" else ""
            ),
        )
        self._loss_and_metrics()
        self._optimisation(train_images, trained_pixels, batch, speed, train_seconds)
        self._validation(train_images, val_images, trained_pixels, height * width, speed)
        self._augmentation(train_images, crop)
        self._normalisation()
        self._machine(channels_last, bf16)

    # -- the rules -------------------------------------------------------------------------

    def _speed(self) -> tuple[bool, bool]:
        if self.hw.device == "mps":
            return False, False
        return True, self.hw.bf16

    def _pixels_per_second(self, base_width: int, channels_last: bool, bf16: bool) -> float:
        if self.timer is not None:
            return self.timer(self.hw, base_width, channels_last=channels_last, bf16=bf16)
        return estimate_pixels_per_second(
            self.hw, base_width, channels_last=channels_last, bf16=bf16
        )

    def _batch_size(
        self, base_width: int, pixels: int, channels: int, *, memory_bound: bool = True
    ) -> int:
        """Half the memory for activations; on a CPU small batches keep the steps many."""
        ceiling = (16 if pixels <= 128 * 128 else 8) if self.hw.device == "cpu" else 32
        if not memory_bound:
            return ceiling
        fits = int(0.5 * self.hw.memory_bytes // _activation_bytes(base_width, pixels, channels))
        return max(1, min(ceiling, fits))

    def _input_size(
        self, height: int, width: int, affordable: float
    ) -> tuple[list[int], list[int] | None, int]:
        """The size images are resized to ([] = native), the crop (or None), the depth."""
        fp = self.fp
        native = height * width
        if native <= affordable:
            depth = _depth(min(height, width))
            size = [_round_up(height, 2**depth), _round_up(width, 2**depth)]
            self.set(
                "input.size",
                size,
                f"median image {height}x{width} rounded up to a multiple of {2**depth} "
                "(the U-Net's size divisor): every pixel kept, and the budget affords it "
                f"(~{affordable:.0f} px per image at {TARGET_STEPS} steps)",
            )
            return size, None, depth
        scale = math.sqrt(affordable / native)
        smallest = _smallest_object_side(fp.classes, height, width)
        small = smallest is not None and smallest * scale < SMALLEST_OBJECT_SIDE
        # validation runs on whole images, batched: only images of one size can skip the resize
        uniform = fp.height.min == fp.height.max and fp.width.min == fp.width.max
        if small and uniform:
            side = max(64, int(math.sqrt(affordable)))
            depth = _depth(side)
            side = max(2**depth, side // 2**depth * 2**depth)
            crop = [min(side, _round_up(height, 2**depth)), min(side, _round_up(width, 2**depth))]
            why = (
                f"median image {height}x{width} is more than the budget affords "
                f"(~{affordable:.0f} px per image); the smallest objects (median "
                f"{smallest:.0f} px across) would shrink below {SMALLEST_OBJECT_SIDE} px if "
                f"downscaled, so training uses {crop[0]}x{crop[1]} crops at native resolution"
            )
            self.set("input.size", [], why)
            self.crop_reason = why
            return [], crop, depth
        target_h = max(32, round(height * scale))
        target_w = max(32, round(width * scale))
        depth = _depth(min(target_h, target_w))
        size = [_round_up(target_h, 2**depth), _round_up(target_w, 2**depth)]
        if smallest is None:
            object_text = "no objects to lose"
        elif small:
            object_text = (
                f"images of varying size ({fp.height.min}-{fp.height.max} x {fp.width.min}-"
                f"{fp.width.max}) need one size to be batched, although the smallest objects "
                f"shrink to {smallest * scale:.0f} px"
            )
        else:
            object_text = (
                f"objects stay large (median {smallest:.0f} px across, "
                f"{smallest * scale:.0f} px after)"
            )
        self.set(
            "input.size",
            size,
            f"median image {height}x{width} downscaled by {scale:.2f} to what the budget "
            f"affords (~{affordable:.0f} px per image); {object_text}",
        )
        return size, None, depth

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

    def _optimisation(
        self, images: int, pixels: int, batch: int, speed: float, train_seconds: float
    ) -> None:
        epoch_seconds = images * pixels / speed
        epochs = train_seconds / epoch_seconds
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
            f"epochs of ~{epoch_seconds:.0f} s expected)",
        )
        self.set("train.lr", 3e-3, "AdamW at 3e-3 trains a batch-norm U-Net fast and stably")
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

    def _validation(
        self, train_images: int, val_images: int, pixels: int, val_pixels: int, speed: float
    ) -> None:
        epoch_seconds = train_images * pixels / speed
        val_seconds = val_images * val_pixels / (speed * FORWARD_SPEED_UP)
        share = 1 - VALIDATION_SHARE
        every = max(1, math.ceil(share / VALIDATION_SHARE * val_seconds / epoch_seconds))
        self.set(
            "train.val_every",
            every,
            f"validating {val_images} images (~{val_seconds:.1f} s) every {every} epoch(s) "
            f"of ~{epoch_seconds:.1f} s keeps validation <= {VALIDATION_SHARE:.0%} of the time",
        )

    def _augmentation(self, images: int, crop: list[int] | None) -> None:
        """Scale, rotate, crop, flips, in that order; one reason per transform."""
        fp = self.fp
        self.layer["augment"] = {}
        if images < SMALL_DATASET:
            self.set(
                "augment.scale",
                {"range": [0.75, 1.25]},
                f"{images} training images (< {SMALL_DATASET}): zoom adds the variety they lack",
            )
        free = _orientation_free(fp)
        symmetric = (
            "grey images whose classes sit evenly top and bottom (every top_share within "
            f"0.5 +- {SYMMETRY_TOLERANCE}) have no up or down"
        )
        if free:
            self.set("augment.rotate", {"degrees": 15}, symmetric)
        if crop is not None:
            self.set("augment.crop", {"size": crop}, self.crop_reason)
        self.set(
            "augment.hflip",
            {"p": 0.5},
            "mirror images are as likely as the originals"
            + ("" if free else f"; no vflip or rotate: {_orientation_evidence(fp)}"),
        )
        if free:
            self.set("augment.vflip", {"p": 0.5}, symmetric)

    def _normalisation(self) -> None:
        fp = self.fp
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

    def _machine(self, channels_last: bool, bf16: bool) -> None:
        hw = self.hw
        self.set(
            "train.channels_last",
            channels_last,
            "channels-last convolutions are ~1.6x faster on CPU and use tensor cores on GPU"
            if channels_last
            else f"no gain on {hw.device}",
        )
        if bf16:
            self.set("train.amp", "bf16", f"the {hw.device} runs bf16 natively (~1.8x faster)")
        elif hw.device == "cuda":
            self.set("train.amp", "fp16", "this GPU has no bf16: fp16 with a gradient scaler")
        else:
            self.set("train.amp", "off", f"this {hw.device} has no native bf16: emulated is slower")
        if hw.device == "cpu":
            workers = 0 if hw.cpu_cores <= 2 else min(4, hw.cpu_cores // 4)
            why = (
                f"{hw.cpu_cores} cores: loader workers would steal the model's cores "
                "(decoded images are cached)"
                if workers == 0
                else f"{hw.cpu_cores} cores: a quarter for loading, the rest for the model"
            )
        else:
            workers = max(0, min(8, hw.cpu_cores - 1))
            why = f"{hw.cpu_cores} cores feed the GPU, one left for the training process"
        self.set("train.workers", workers, why)


def _activation_bytes(base_width: int, pixels: int, channels: int) -> int:
    # a U-Net keeps ~12 maps of base_width channels per pixel at full resolution (convs,
    # norms, activations, skips) and as much again in the coarser levels; float32, doubled
    # for the gradients
    return int(pixels * (24 * base_width + 2 * channels) * 4 * 2)


def _depth(side: int) -> int:
    return max(2, min(5, int(math.log2(max(side, 1) / BOTTLENECK_SIDE))))


def _round_up(value: int, divisor: int) -> int:
    return max(divisor, math.ceil(value / divisor) * divisor)


def _smallest_object_side(classes: tuple[ClassStats, ...], height: int, width: int) -> float | None:
    """The typical side in pixels of the smallest class's objects (the median component)."""
    areas = [c.median_object_area for c in classes if c.median_object_area]
    if not areas:
        return None
    return math.sqrt(min(areas) * height * width)


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


_HEADER = re.compile(r"^\[([^\]]+)\]\s*$")
_KEY = re.compile(r'^("[^"]+"|[A-Za-z0-9_-]+)\s*=')


def render_plan(toml_text: str, reasons: dict[str, str], source_of: Callable[[str], str]) -> str:
    """The resolved configuration's TOML with `# reason` after each planned key.

    `source_of`: the layer that set a key last (`RunConfig.source_of`); a planned key that a
    file or --set overrode says where it came from instead. The text stays a valid --config
    file."""
    lines = []
    table = ""
    for line in toml_text.splitlines():
        header = _HEADER.match(line)
        if header:
            table = header.group(1)
            key = table
        else:
            match = _KEY.match(line)
            key = None
            if match:
                name = match.group(1).strip('"')
                # model/loss options are saved under `options` but planned as model.<option>
                owner = table.removesuffix(".options") if table.endswith(".options") else table
                key = f"{owner}.{name}" if owner else name
        reason = reasons.get(key) if key else None
        if reason is not None:
            source = source_of(key)
            if source != PLAN_SOURCE:
                reason = f"from {source} (planned: {reason})"
            line = f"{line}  # {reason}"
        lines.append(line)
    return "\n".join(lines) + "\n"
