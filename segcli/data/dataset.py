"""The torch side of a prepared dataset: reading samples and joint image/mask transforms.

Augmentation randomness is a pure function of (seed, epoch, sample index): the sampler
yields those triples and each sample seeds its own generator. A run therefore sees the
same augmented data whatever the number of loader workers, and a resumed run sees
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle, islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from segcli.config import InputConfig
from segcli.data.format import (
    IGNORE_INDEX,
    DatasetInfo,
    check_mask_values,
    describe_classes,
    read_dataset_info,
    split_files,
    undeclared_values,
)
from segcli.data.images import image_size, read_image, read_mask
from segcli.errors import DataError
from segcli.factories import call_factory
from segcli.inference.preprocessing import TrainingInput, configured_preprocessing, resize
from segcli.memory import available_memory
from segcli.plugins import Plugins, get_plugins


def build_transforms(
    input_config: InputConfig,
    augment: Mapping[str, Mapping[str, Any]] | None,
    channels: int,
    plugins: Plugins | None = None,
) -> v2.Compose:
    """The configured augmentations in order (`augment`: transform name -> options, from
    the transforms registry), then the resize and normalisation every image gets."""
    steps: list[Callable] = augmentations(augment or {}, plugins)
    # the one resize and normalisation prediction uses too (segcli.inference.preprocessing)
    steps.append(TrainingInput(configured_preprocessing(input_config, channels)))
    return v2.Compose(steps)


def augmentations(
    augment: Mapping[str, Mapping[str, Any]], plugins: Plugins | None = None
) -> list[Callable]:
    """One joint transform per `augment` entry, built by its registered factory."""
    registry = (plugins or get_plugins()).transforms
    return [call_factory(registry, name, **options) for name, options in augment.items()]


class SegmentationDataset(Dataset):
    """One split of a prepared dataset; items are (image float CHW, mask int64 HW)."""

    def __init__(
        self,
        root: Path,
        split: str,
        transform: v2.Compose,
        seed: int = 0,
        info: DatasetInfo | None = None,
        load_size: tuple[int, int] | None = None,
        pairs: list[tuple[Path, Path]] | None = None,
    ) -> None:
        """`pairs`: the (image, mask) files to read instead of the split's, already checked
        (a cross-validation fold's, `segcli.data.folds`); `split` then only names them."""
        self.root = Path(root)
        # images larger than this are resized to it when read (InputConfig.load_size)
        self.load_size = load_size
        self.info = info or read_dataset_info(self.root)
        self.split = split
        if pairs is None:
            pairs = [(image, mask) for image, mask in split_files(self.root, split) if mask]
            check_mask_values(self.root, split, self.info)
        self.pairs = pairs
        if not self.pairs:
            raise DataError(
                f"split {split!r} of {root} has no labelled images",
                hint=f"labelled splits: {', '.join(self.info.labelled_splits) or 'none'}",
            )
        self.transform = transform
        self.seed = seed
        # index -> (image, mask) as decoded and checked; filled by `decode_all`
        self.decoded: list[tuple[np.ndarray, np.ndarray]] | None = None

    def decoded_bytes(self) -> int:
        """What the split takes in memory once decoded, from the files' headers alone."""
        total = 0
        for image_path, _ in self.pairs:
            width, height = image_size(image_path)
            pixels = width * height
            if self.load_size is not None:
                pixels = min(pixels, self.load_size[0] * self.load_size[1])
            total += pixels * (self.info.image_channels + 1)
        return total

    def decode_all(self, threads: int | None = None) -> None:
        """Decode and check every pair once and keep it: later epochs read memory, not files.
        Loader workers started afterwards share the decoded arrays (copy-on-write)."""
        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            self.decoded = list(pool.map(self._read_pair, range(len(self.pairs))))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index, padding = key if isinstance(key, SampleKey) else SampleKey(0, key)
        image, mask = self.decoded[index] if self.decoded is not None else self._read_pair(index)
        image_tensor = tv_tensors.Image(
            torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        )
        mask_tensor = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask)))
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed also queues a seed for every other
            # device type, formatting a stack trace each time (a fifth of a sample's cost)
            torch.default_generator.manual_seed(_sample_seed(self.seed, epoch, index))
            image_out, mask_out = self.transform(image_tensor, mask_tensor)
        mask_out = mask_out.as_subclass(torch.Tensor).long()
        if padding:
            mask_out.fill_(IGNORE_INDEX)  # the value losses and metrics skip
        return image_out.as_subclass(torch.Tensor), mask_out

    def _read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, self.info.image_channels)
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path} is {mask.shape[::-1]} but {image_path} is {image.shape[1::-1]}"
            )
        undeclared = undeclared_values(mask, self.info)
        if undeclared:
            raise DataError(
                f"mask {mask_path} has value {undeclared[0]}, but dataset.json lists "
                f"{describe_classes(self.info)}",
                hint="write the dataset again with `segcli prepare ... --force`",
            )
        if self.load_size is not None:
            return _resized_pair(image, mask, self.load_size)
        return image, mask


def _resized_pair(
    image: np.ndarray, mask: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The pair at `size` (height, width) unless the image is no larger: the image by the
    policy prediction resizes with, the mask nearest-neighbour."""
    height, width = image.shape[:2]
    if height <= size[0] and width <= size[1]:
        return image, mask
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    resized = resize(pixels, size).round_().clamp_(0, 255).to(torch.uint8)
    # torch's "nearest": source index floor(target index x in / out), for any mask dtype
    rows = np.arange(size[0]) * height // size[0]
    columns = np.arange(size[1]) * width // size[1]
    # contiguous: each sample then reads the pixels without copying them first
    return resized.permute(1, 2, 0).contiguous().numpy(), mask[rows[:, None], columns[None, :]]


def cache_decoded(
    datasets: Sequence[SegmentationDataset], mode: str, memory_available: int | None = None
) -> bool:
    """Decode the datasets into memory when `mode` says so: "memory" always, "auto" when
    the decoded pixels take at most a quarter of the memory available, "off" never."""
    if mode == "off":
        return False
    if mode == "auto":
        needed = sum(dataset.decoded_bytes() for dataset in datasets)
        available = memory_available if memory_available is not None else available_memory()
        if needed > available // 4:
            return False
    for dataset in datasets:
        dataset.decode_all()
    return True


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index) % (2**63)


class SampleKey(NamedTuple):
    """What the sampler hands the dataset: which sample, in which epoch, and whether it is
    padding (a repeat that evens out the processes' shares and must count for nothing)."""

    epoch: int
    index: int
    padding: bool = False


class EpochSampler(Sampler[SampleKey]):
    """Yields a seeded permutation per epoch, optionally from a later position.

    `start` skips the first samples of the epoch without loading them (resume mid-epoch);
    `rank`/`world_size` give each distributed process its own share. The shares are padded
    to equal length, so every process runs the same number of batches and collective
    operations stay in step; the padding samples come with an all-ignored mask, so each
    image counts once in the loss and the metrics (metric and loss plugins must ignore
    ignored pixels: the contract suite checks it).
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

    def _order(self) -> list[SampleKey]:
        if not self.shuffle:
            order = list(range(self.size))
        else:
            generator = torch.Generator().manual_seed(self.seed * 9_973 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        keys = [SampleKey(self.epoch, index) for index in order]
        if self.world_size > 1:
            total = self._per_rank() * self.world_size
            repeats = cycle(key._replace(padding=True) for key in keys)
            keys = keys[:total]
            keys += islice(repeats, total - len(keys))
            keys = keys[self.rank :: self.world_size]
        return keys

    def _per_rank(self) -> int:
        if self.world_size == 1:
            return self.size
        if self.drop_last:
            return self.size // self.world_size
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[SampleKey]:
        yield from self._order()[self.start :]

    def __len__(self) -> int:
        # arithmetic, not len(_order()): the DataLoader asks for it often
        return max(0, self._per_rank() - self.start)


def collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(masks)
