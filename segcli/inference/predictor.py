"""The prediction runtime: a model loaded from a checkpoint or an export, with the
preprocessing it was trained with, turning images into class probabilities."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segcli.building import autocast_for, forward, probabilities, rebuild_model
from segcli.config import RunConfig, build_config
from segcli.data.format import ClassInfo, DatasetInfo
from segcli.devices import resolve_device
from segcli.errors import CheckpointError, ConfigError, UsageError
from segcli.inference.exported_models import load_exported
from segcli.inference.postprocessing import PostProcessing
from segcli.inference.preprocessing import recorded_preprocessing, resize_in_strips, size_divisor
from segcli.inference.tiling import DEFAULT_OVERLAP, sliding_window
from segcli.runs.checkpoint_file import load_checkpoint, load_model_state
from segcli.runs.cross_validation import (
    ENSEMBLE_POST_PROCESSING_FILE,
    fold_checkpoints,
    read_ensemble_post_processing,
)

# flip dimensions of each test-time view; the views' probabilities are averaged
TTA_VIEWS: dict[str, list[tuple[int, ...]]] = {
    "none": [()],
    "flip": [(), (3,)],
    "flip-hv": [(), (3,), (2,), (2, 3)],
}
# the test-time augmentation training chose on the validation images (recorded with the
# post-processing), or none; `post_processing=False` turns it off as it does the rules
LEARNED_TTA = "auto"
AMP_MODES = ("auto", "off", "bf16", "fp16")
EXPORT_SUFFIXES = (".onnx", ".pt", ".xml")


def reuse_freed_memory() -> None:
    """Let glibc keep freed activation buffers for the next batch instead of unmapping them.

    A batch's convolution activations are tens of MB, above glibc's largest automatic mmap
    threshold (32 MB), so by default every forward pass maps fresh pages, faults them in
    zeroed and unmaps them again: on CPU that cost about a quarter of inference time
    (benchmarks/predict_throughput.py). Buffers up to 256 MB now come from the heap and up to
    512 MB of free heap is kept; larger ones (whole decoded images) are still returned.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 256 << 20)
    mallopt(m_trim_threshold, 512 << 20)


class Predictor:
    """A model with the preprocessing it was trained with, from a segcli checkpoint
    (`.safetensors`) or an export made by `segcli export` (`.onnx`, TorchScript `.pt`); or
    the ensemble of a cross-validation run's folds (its folder): each fold's `best` predicts
    and their probabilities are averaged, so tiles, TTA and every output work alike."""

    def __init__(
        self,
        checkpoint_path: Path,
        device: str = "auto",
        *,
        amp: str = "auto",
        tta: str = LEARNED_TTA,
        threshold: float | None = None,
        post_processing: bool = True,
    ) -> None:
        checkpoint_path = Path(checkpoint_path)
        self.device = resolve_device(device, "--device")
        # a cross-validation run: its folds, the first of which describes them all
        folds = fold_checkpoints(checkpoint_path) if checkpoint_path.is_dir() else []
        ensemble = checkpoint_path
        if folds:
            checkpoint_path = folds[0]
        self.exported = checkpoint_path.suffix in EXPORT_SUFFIXES
        if self.exported:
            meta, self.model = load_exported(checkpoint_path, self.device)
        else:
            checkpoint = load_checkpoint(checkpoint_path)
            meta = checkpoint.meta
        try:
            self.config = _saved_config(meta, checkpoint_path)
            self.classes = [
                ClassInfo(c["id"], c["name"], tuple(c["color"])) for c in meta["classes"]
            ]
            self.channels = int(meta["image_channels"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{checkpoint_path} lacks segcli metadata ({exc})") from None
        self.meta = meta
        if not self.exported:
            self.config.model.backbone_weights = None  # the checkpoint holds all weights
            self.model = rebuild_model(
                self.config, meta, self.dataset_info(), source=checkpoint_path
            )
            load_model_state(self.model, checkpoint.model_state, checkpoint_path)
            self.model.to(self.device).eval()
        # the model itself says how it must be padded, whatever an older record says
        self.preprocessing = replace(
            recorded_preprocessing(meta, checkpoint_path),
            size_divisor=size_divisor(self.model),
        )
        if self.preprocessing.image_channels != self.channels:
            raise CheckpointError(
                f"{checkpoint_path}: its preprocessing is for {self.preprocessing.image_channels}"
                f" image channel(s), its model for {self.channels}"
            )
        self.size = self.preprocessing.size
        # the other folds of an ensemble, whose probabilities are averaged with the model's
        self.other_folds = [self._fold_model(path) for path in folds[1:]]
        self.num_classes = max(2, len(self.classes))
        if threshold is not None and self.num_classes != 2:
            raise UsageError(
                f"--threshold applies to binary models; this one has {self.num_classes} classes",
                hint="leave --threshold out: the most probable class is taken",
            )
        self.rules = PostProcessing(threshold=self.config.train.threshold)
        # each fold's rules were chosen for that fold alone: an ensemble applies its own,
        # chosen on the out-of-fold predictions of all of them
        if folds:
            ensemble_record = read_ensemble_post_processing(ensemble) or {}
            learned, learned_tta = ensemble_record.get("rules"), ensemble_record.get("tta")
            source = ensemble / ENSEMBLE_POST_PROCESSING_FILE
        else:
            learned, learned_tta = meta.get("post_processing"), meta.get("tta")
            source = checkpoint_path
        if post_processing and self.num_classes == 2 and learned:
            self.rules = _recorded_rules(learned, source)
        if threshold is not None:
            self.rules = replace(self.rules, threshold=threshold)
        if not 0 < self.rules.threshold < 1:
            raise UsageError(f"--threshold {self.rules.threshold} must lie between 0 and 1")
        if tta == LEARNED_TTA:
            tta = _recorded_tta(learned_tta, source) if post_processing else "none"
        self.use_tta(tta)
        if amp not in AMP_MODES:
            raise UsageError(f"unknown --amp {amp!r}; valid: {', '.join(AMP_MODES)}")
        if amp == "auto":
            amp = "fp16" if self.device.type == "cuda" and not self.exported else "off"
        self.amp = "off" if self.exported else amp
        self.palette = [c.color for c in self.classes]

    def use_tta(self, tta: str) -> None:
        """Predict with the test-time augmentation `tta` (a name of TTA_VIEWS) from now on."""
        if tta not in TTA_VIEWS:
            valid = ", ".join([LEARNED_TTA, *TTA_VIEWS])
            raise UsageError(f"unknown --tta {tta!r}; valid: {valid}")
        self.views = TTA_VIEWS[tta]

    def _fold_model(self, path: Path) -> torch.nn.Module:
        """Another fold of an ensemble: a model that must read the same input and predict the
        same classes as the first fold's."""
        checkpoint = load_checkpoint(path)
        classes = [c.get("name") for c in checkpoint.meta.get("classes", [])]
        if classes != [c.name for c in self.classes] or replace(
            recorded_preprocessing(checkpoint.meta, path), size_divisor=0
        ) != replace(self.preprocessing, size_divisor=0):
            raise CheckpointError(
                f"{path} predicts other classes or reads its input otherwise than the first fold",
                hint="an ensemble needs folds trained with one configuration: train them again",
            )
        config = _saved_config(checkpoint.meta, path)
        config.model.backbone_weights = None  # the checkpoint holds all weights
        model = rebuild_model(config, checkpoint.meta, self.dataset_info(), source=path)
        load_model_state(model, checkpoint.model_state, path)
        return model.to(self.device).eval()

    def dataset_info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.meta.get("dataset", "?"),
            classes=self.classes,
            splits={},
            image_channels=self.channels,
        )

    def normalise(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, C) -> normalised float (C, H, W) at the image's own size (tiles)."""
        return self.preprocessing.image_input(image, resized=False)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, C) -> the model's input, exactly as in training (without augmentation)."""
        return self.preprocessing.image_input(image)

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) float32 CPU class probabilities for a preprocessed batch, averaged
        over the TTA views and the members of an ensemble."""
        batch = batch.to(self.device, non_blocking=True)
        total = None
        members = [self.model, *self.other_folds]
        for model in members:
            for dims in self.views:
                view = batch.flip(dims) if dims else batch
                with autocast_for(self.amp, self.device):
                    logits = forward(model, view)
                probs = probabilities(logits.float())
                probs = probs.flip(dims) if dims else probs
                total = probs if total is None else total + probs
        return (total / (len(self.views) * len(members))).cpu()

    def window_probabilities(self, windows: list[np.ndarray]) -> torch.Tensor:
        return self.probabilities(torch.stack([self.normalise(w) for w in windows]))

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """uint8 class indices from (K, ...) probabilities: threshold for binary, else argmax."""
        if probs.shape[0] == 2:
            return (probs[1] > self.rules.threshold).to(torch.uint8)
        # max().indices: the same first-maximum rule as argmax, several times faster on CPU
        return probs.max(0).indices.to(torch.uint8)

    def predict_image(
        self,
        image: np.ndarray,
        emit: Callable[[int, torch.Tensor], None],
        *,
        tile: int | None = None,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int = 4,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """`emit(top, (K, rows, W) probabilities)` strips covering one image at its own size."""
        if tile:
            sliding_window(
                image,
                self.window_probabilities,
                self.num_classes,
                emit,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                progress=progress,
            )
            return
        probs = self.probabilities(self.preprocess(image)[None])[0]
        emit_resized(probs, *image.shape[:2], emit=emit)
        if progress:
            progress(1)

    def predict_mask(
        self, image: np.ndarray, *, foreground: np.ndarray | None = None, **tiling: Any
    ) -> np.ndarray:
        """The (H, W) uint8 class mask of one image (uint8 H, W, C); a two-class model's
        foreground probabilities also go into `foreground` (H, W) when given."""
        return self._mask(
            lambda emit: self.predict_image(image, emit, **tiling), image.shape[:2], foreground
        )

    def predict_masks(
        self,
        batch: torch.Tensor,
        shapes: list[tuple[int, int]],
        foregrounds: list[np.ndarray | None],
    ) -> list[np.ndarray]:
        """The masks of a batch of preprocessed images (`preprocess`, stacked) predicted in
        one model call, each at its own (H, W) in `shapes`: what `predict_mask` gives for
        each image alone (without tiles), with the per-call cost paid once per batch."""
        return [
            self._mask(lambda emit, p=probs, s=shape: emit_resized(p, *s, emit=emit), shape, fg)
            for probs, shape, fg in zip(self.probabilities(batch), shapes, foregrounds, strict=True)
        ]

    def _mask(
        self,
        produce: Callable[[Callable[[int, torch.Tensor], None]], None],
        shape: tuple[int, int],
        foreground: np.ndarray | None,
    ) -> np.ndarray:
        """The post-processed mask of the strips of probabilities `produce(emit)` emits."""
        mask = np.empty(shape, np.uint8)

        def keep(top: int, probs: torch.Tensor) -> None:
            mask[top : top + probs.shape[1]] = self.decide(probs).numpy()
            if foreground is not None:
                foreground[top : top + probs.shape[1]] = probs[1].numpy()

        produce(keep)
        return self.finish(mask)

    def finish(self, mask: np.ndarray) -> np.ndarray:
        """A whole image's mask with the checkpoint's learned post-processing applied (small
        regions dropped, too little foreground made empty); unchanged without it."""
        return self.rules.clean(mask) if self.rules.cleans else mask


def emit_resized(
    probs: torch.Tensor, height: int, width: int, *, emit: Callable[[int, torch.Tensor], None]
) -> None:
    """Hand (K, h, w) probabilities resized back to (height, width) to `emit`, strip by strip."""
    for top, strip in resize_in_strips(probs, height, width):
        emit(top, strip)


def _saved_config(meta: dict[str, Any], checkpoint_path: Path) -> RunConfig:
    """The configuration a checkpoint was trained with; one this segcli refuses is the
    checkpoint's fault, not the command line's."""
    try:
        return build_config(meta["config"], recipe_source=str(checkpoint_path))
    except ConfigError as error:
        raise CheckpointError(
            f"the configuration saved in the checkpoint is not valid: {error.message}",
            hint="was it written by another segcli version? train it again, or use that version",
        ) from None


def _recorded_rules(recorded: Any, checkpoint_path: Path) -> PostProcessing:
    try:
        return PostProcessing.from_json(recorded)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{checkpoint_path}: its post-processing record is damaged ({exc})",
            hint="predict with --no-post-processing, or train the run again",
        ) from None


def _recorded_tta(recorded: Any, checkpoint_path: Path) -> str:
    """The test-time augmentation training recorded ("none" when it recorded none)."""
    if recorded is None:
        return "none"
    if not isinstance(recorded, str) or recorded not in TTA_VIEWS:
        raise CheckpointError(
            f"{checkpoint_path}: its test-time augmentation record {recorded!r} is not one of "
            f"{', '.join(TTA_VIEWS)}",
            hint="predict with --no-post-processing or --tta none, or train the run again",
        )
    return str(recorded)
