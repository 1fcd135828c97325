"""The torch side of a prepared dataset: reading samples and joint image/mask transforms.

Augmentation randomness is a pure function of (seed, epoch, sample index): the sampler
yields those triples and each sample seeds its own generator. A run therefore sees the
same augmented data whatever the number of loader workers, and a resumed run sees
exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from segcli.config import AugmentConfig, InputConfig
from segcli.data.format import (
    IGNORE_INDEX,
    DatasetInfo,
    check_mask_values,
    describe_classes,
    read_dataset_info,
    split_files,
)
from segcli.data.io import read_image, read_mask
from segcli.errors import DataError


def build_transforms(
    input_config: InputConfig,
    augment: AugmentConfig | None,
    channels: int,
) -> v2.Compose:
    """Joint transforms: masks are only ever resampled nearest-neighbour, filled with ignore."""
    steps: list[v2.Transform] = []
    if augment is not None:
        if augment.rotate or tuple(augment.scale) != (1.0, 1.0):
            steps.append(
                v2.RandomAffine(
                    degrees=augment.rotate,
                    scale=tuple(augment.scale),
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX},
                )
            )
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.vflip:
            steps.append(v2.RandomVerticalFlip(augment.vflip))
        if augment.color_jitter:
            jitter = augment.color_jitter
            steps.append(
                v2.ColorJitter(brightness=jitter, contrast=jitter)
                if channels == 1
                else v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)
            )
    if input_config.size:
        steps.append(v2.Resize(list(input_config.size), antialias=True))
    mean, std = input_config.normalisation(channels)
    steps += [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean, std),
    ]
    return v2.Compose(steps)


class SegmentationDataset(Dataset):
    """One split of a prepared dataset; items are (image float CHW, mask int64 HW)."""

    def __init__(
        self,
        root: Path,
        split: str,
        transform: v2.Compose,
        seed: int = 0,
        info: DatasetInfo | None = None,
    ) -> None:
        self.root = Path(root)
        self.info = info or read_dataset_info(self.root)
        self.split = split
        self.pairs = [(image, mask) for image, mask in split_files(self.root, split) if mask]
        if not self.pairs:
            raise DataError(
                f"split {split!r} of {root} has no labelled images",
                hint=f"labelled splits: {', '.join(self.info.labelled_splits) or 'none'}",
            )
        check_mask_values(self.root, split, self.info)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, self.info.image_channels)
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path} is {mask.shape[::-1]} but {image_path} is {image.shape[1::-1]}"
            )
        undeclared = _undeclared_values(mask, self.info)
        if undeclared:
            raise DataError(
                f"mask {mask_path} has value {undeclared[0]}, but dataset.json lists "
                f"{describe_classes(self.info)}",
                hint="write the dataset again with `segcli prepare ... --force`",
            )
        image_tensor = tv_tensors.Image(
            torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        )
        mask_tensor = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, epoch, index))
            image_out, mask_out = self.transform(image_tensor, mask_tensor)
        return image_out.as_subclass(torch.Tensor), mask_out.as_subclass(torch.Tensor).long()


def _undeclared_values(mask: np.ndarray, info: DatasetInfo) -> list[int]:
    if mask.size == 0 or mask.max() < info.num_classes:
        return []
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return [int(v) for v in present if v >= info.num_classes and v != info.ignore_index]


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index) % (2**63)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index): a seeded permutation per epoch, optionally from a later position.

    `start` skips the first samples of the epoch without loading them (resume mid-epoch);
    `rank`/`world_size` give each distributed process its own share.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.size))
        else:
            generator = torch.Generator().manual_seed(self.seed * 9_973 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        if self.world_size > 1:
            per_rank = (
                self.size // self.world_size if self.drop_last else -(-self.size // self.world_size)
            )
            order = (order * 2)[: per_rank * self.world_size]
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._order()[self.start :]:
            yield self.epoch, index

    def __len__(self) -> int:
        return len(self._order()) - self.start


def collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(masks)
