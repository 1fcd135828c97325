"""Prediction: from a checkpoint and image files to index masks (and colour pictures).

Images are loaded in background workers, resized to the size the model was trained at,
run in batches, and the logits resized back to each image's original size, so every
output mask has exactly its input's size.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from segcli.config import build_config
from segcli.data.dataset import normalisation
from segcli.data.format import IMAGE_SUFFIXES, ClassInfo, DatasetInfo
from segcli.data.io import read_image, write_png_atomic
from segcli.engine.build import build_model, forward, predictions, resolve_device
from segcli.engine.checkpoint import load_checkpoint
from segcli.errors import CheckpointError, DataError, OutputError, UsageError
from segcli.palette import colorize


@dataclass
class PredictReport:
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    out_dir: str = ""


class Predictor:
    """A model restored from a checkpoint with the preprocessing it was trained with."""

    def __init__(self, checkpoint_path: Path, device: str = "auto") -> None:
        checkpoint = load_checkpoint(checkpoint_path)
        meta = checkpoint.meta
        try:
            self.config = build_config(meta["config"])
            self.classes = [ClassInfo(c["id"], c["name"], tuple(c["color"])) for c in meta["classes"]]
            self.channels = int(meta["image_channels"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{checkpoint_path} lacks segcli metadata ({exc})") from None
        self.config.model.backbone_weights = None  # the checkpoint holds all weights
        info = DatasetInfo(name=meta.get("dataset", "?"), classes=self.classes, splits={}, image_channels=self.channels)
        self.device = resolve_device(device)
        self.model = build_model(self.config, info)
        try:
            self.model.load_state_dict(checkpoint.model_state)
        except RuntimeError as exc:
            raise CheckpointError(f"{checkpoint_path} does not fit model {self.config.model.name!r}: {str(exc).splitlines()[0]}") from None
        self.model.to(self.device).eval()
        self.mean, self.std = normalisation(self.config.input, self.channels)
        self.size = list(self.config.input.size) if self.config.input.size else None
        self.threshold = self.config.train.threshold
        self.palette = [c.color for c in self.classes]

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
        if self.size:
            tensor = F.interpolate(tensor[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (tensor - mean) / std

    @torch.no_grad()
    def predict_batch(self, batch: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        logits = forward(self.model, batch.to(self.device)).float()
        masks = []
        for row, (height, width) in zip(logits, sizes, strict=True):
            if row.shape[-2:] != (height, width):
                row = F.interpolate(row[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            masks.append(predictions(row[None], self.threshold)[0].to(torch.uint8).cpu().numpy())
        return masks


def discover_inputs(inputs: Iterable[Path | str], recursive: bool = False) -> list[tuple[Path, Path]]:
    """(image, path relative to its input root) for files, folders and glob patterns."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise DataError(f"no files match {text!r}")
            found += [(m, Path(m.name)) for m in matches if m.is_file()]
            continue
        path = Path(item)
        if path.is_file():
            found.append((path, Path(path.name)))
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            images = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(p, p.relative_to(path)) for p in images]
        else:
            raise DataError(f"input {path} does not exist")
    if not found:
        raise DataError(
            f"no images found in {', '.join(str(i) for i in inputs)}",
            hint=f"supported: {', '.join(IMAGE_SUFFIXES)}; use --recursive for subfolders",
        )
    return found


class _ImageFiles(Dataset):
    def __init__(self, files: list[tuple[Path, Path]], predictor: Predictor) -> None:
        self.files = files
        self.predictor = predictor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, relative = self.files[index]
        try:
            image = read_image(path, self.predictor.channels)
        except DataError as exc:
            return {"path": path, "relative": relative, "error": str(exc)}
        return {"path": path, "relative": relative, "image": image, "tensor": self.predictor.preprocess(image)}


def default_output_dir(inputs: list[Path | str]) -> Path:
    first = Path(str(inputs[0]).split("*")[0].rstrip("/") or ".")
    base = first if first.is_dir() else first.parent
    return base.parent / f"{base.resolve().name}-pred"


def predict_paths(
    checkpoint: Path,
    inputs: list[Path | str],
    out_dir: Path | None = None,
    *,
    colorize_masks: bool = False,
    recursive: bool = False,
    batch_size: int = 4,
    workers: int = 2,
    device: str = "auto",
    progress: Any = None,
) -> PredictReport:
    """Predict every input image; a broken image is reported in `failed`, the rest go on."""
    files = discover_inputs(inputs, recursive)
    out_dir = Path(out_dir) if out_dir else default_output_dir(inputs)
    for item in inputs:
        if Path(item).is_dir() and _inside(out_dir, Path(item)):
            raise UsageError(
                f"output folder {out_dir} is inside the input folder {item}",
                hint="choose an --out outside the input, so inputs and outputs never mix",
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK):
        raise OutputError(f"cannot write into {out_dir}: permission denied")
    predictor = Predictor(checkpoint, device)
    loader = DataLoader(
        _ImageFiles(files, predictor), batch_size=batch_size, num_workers=workers if len(files) > batch_size else 0,
        collate_fn=list, pin_memory=predictor.device.type == "cuda",
    )
    report = PredictReport(out_dir=str(out_dir))
    for items in loader:
        good = [item for item in items if "error" not in item]
        report.failed += [(str(item["path"]), item["error"]) for item in items if "error" in item]
        if good:
            if predictor.size:
                batches = [(good, torch.stack([item["tensor"] for item in good]))]
            else:  # native sizes differ: one image per forward pass
                batches = [([item], item["tensor"][None]) for item in good]
            for group, tensor in batches:
                masks = predictor.predict_batch(tensor, [item["image"].shape[:2] for item in group])
                for item, mask in zip(group, masks, strict=True):
                    target = out_dir / item["relative"].with_suffix(".png")
                    write_png_atomic(target, mask)
                    report.written.append(str(target))
                    if colorize_masks:
                        write_png_atomic(target.with_name(f"{target.stem}.color.png"), colorize(mask, predictor.palette))
        if progress:
            progress(len(items))
    return report


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False
