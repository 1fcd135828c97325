"""The `default` planner's settings for a chosen geometry: model, batch, loss and metrics,
optimizer and schedule, validation, augmentation, normalisation and how the steps run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from segcli import ClassStats, Fingerprint

from .constants import (
    AUGMENT_PASSES,
    BOTTLENECK_SIDE,
    LOAD_SCALE,
    NEVER_BINDING_EPOCHS,
    RARE_PIXEL_SHARE,
    RESIZE_ONCE_AREA,
    SMALL_DATASET,
    SYMMETRY_TOLERANCE,
    VALIDATION_SHARE,
)
from .geometry import _Geometry, _GeometryRules
from .pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRETRAINED_LR,
    PRETRAINED_MODEL,
    PRETRAINED_PASS_SHARE,
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


class _SettingRules(_GeometryRules):
    """The rules that write each planned key, with its reason, into the plan's layer."""

    def set(self, key: str, value: Any, reason: str) -> None:
        table = self.layer
        *parents, last = key.split(".")
        for part in parents:
            table = table.setdefault(part, {})
        table[last] = value
        self.reasons[key] = reason

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

    def _load_scale(self, geometry: _Geometry) -> None:
        """Training images resized once, when read: with zoom to LOAD_SCALE x the input, so
        that zooms keep their detail; without, to the input itself when the median image has
        RESIZE_ONCE_AREA times its pixels or more (the loader's one resize, done once)."""
        if not geometry.size:
            return
        zoom = "scale" in self.layer.get("augment", {})
        scale = LOAD_SCALE if zoom else 1.0
        loaded = [round(side * scale) for side in geometry.size]
        fewer = self.height * self.width / (loaded[0] * loaded[1])
        if fewer <= 1 or (not zoom and fewer < RESIZE_ONCE_AREA):
            return
        self.set(
            "input.load_scale",
            scale,
            f"training images are resized once, when read, to {loaded[0]}x{loaded[1]} (the "
            f"median is {self.height}x{self.width}): "
            + (
                f"zooms keep their detail and the loader augments {fewer:.0f}x fewer pixels"
                if zoom
                else f"the loader reads {fewer:.0f}x fewer pixels and resizes none of them"
            ),
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
        if "tgs" in metrics:
            self.set(
                "train.post_process_guard",
                ["tgs/score"],
                "post-processing that raises the IoU is kept only if the per-image score "
                "stays: on TGS a lower threshold raised the IoU 0.7831 -> 0.7876 and cost the "
                "score (0.709)",
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
