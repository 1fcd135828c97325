"""The configuration schema: one pydantic model per section, every key with its type, range
or choices, and the open option tables of the components plugins provide."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from segcli.config.words import InvalidKey, layer_of, must_be
from segcli.errors import ConfigError

AMP_MODES = ("off", "bf16", "fp16")
_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")
# Monitors every run reports, whatever its metrics.
LOSS_MONITORS = ("train/loss", "val/loss")
# Range of train.epochs and train.max_time: beyond them a value is a typo, and loops, ETAs and
# budget arithmetic overflow. A budget under a second is used up before the first step.
MAX_EPOCHS = 1_000_000
MIN_TIME_SECONDS = 1.0
MAX_TIME_SECONDS = 30 * 24 * 3600.0


def _number_to_text(value: Any) -> Any:
    # TOML reads `--set dataset.val_split=2012` as a number; the key wants a name
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _tuple_to_list(value: Any) -> Any:
    # a recipe written in Python may give a size as (64, 64)
    return list(value) if isinstance(value, tuple) else value


def _one_to_list(value: Any) -> Any:
    # `--set metrics=binary` or `--set input.mean=0.5`: one value is a list of one
    if isinstance(value, tuple):
        return list(value)
    return value if isinstance(value, list) else [value]


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str | float) -> float:
    """Seconds from `90`, `90s`, `10m`, `1h` or `1h30m`; a number is seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.fullmatch(str(text).strip().lower())
    if not str(text).strip() or match is None or not any(match.groups()):
        raise ValueError("a duration such as 90s, 10m, 1h or 1h30m")
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _duration(value: Any) -> Any:
    # `--set train.max_time=10m` arrives as the text "10m"
    if value is None or isinstance(value, bool):
        return value
    try:
        return parse_duration(value)
    except ValueError:
        return value  # the schema reports it with the key's name and source


def _distinct(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError("a list of distinct names")
    return names


Name = Annotated[str, BeforeValidator(_number_to_text), Field(min_length=1)]
Positive = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    # strict: a string is not a number nor a boolean here; floats still take integers.
    # No inf or nan anywhere: `train.lr=inf` or `input.mean=nan` only trains NaN weights.
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False
    )


class DatasetConfig(Section):
    name: Name = "shapes"
    path: Name | None = None  # default: data/<name>
    train_split: Name = "train"
    val_split: Name = "val"
    # decoded training and validation images kept in memory: auto = when they fit
    cache: Literal["auto", "memory", "off"] = "auto"
    # cross-validation (`segcli train --folds K` sets both): a folds file and the fold this run
    # trains; its images then replace train_split and val_split
    folds: Name | None = None
    fold: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _fold_with_folds(self) -> DatasetConfig:
        if (self.fold is None) != (self.folds is None):
            key = "dataset.folds" if self.folds is None else "dataset.fold"
            raise InvalidKey(key, "set together with dataset.fold and dataset.folds (or neither)")
        return self


class ModelConfig(Section):
    name: Name = "unet"
    weights: Name | None = None
    backbone_weights: Name | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class LossConfig(Section):
    name: Name = "ce"
    options: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(Section):
    """`[train.optimizer]`: a name from `segcli list optimizers`, the other keys its options."""

    name: Name = "adam"
    options: dict[str, Any] = Field(default_factory=dict)


class SchedulerConfig(Section):
    """`[train.scheduler]`: a name from `segcli list schedulers`, the other keys its options."""

    name: Name = "none"
    options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    # the whole training's wall-clock budget in seconds ("10m" in a file or --set), validation
    # included; None = train for `epochs`
    max_time: Annotated[
        # the bound on the float alone: a saved configuration holds an explicit None
        Annotated[float, Field(ge=MIN_TIME_SECONDS, le=MAX_TIME_SECONDS)] | None,
        BeforeValidator(_duration),
        Field(description="a duration such as 90s, 10m or 1h"),
    ] = None
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, ge=0)  # 0 freezes the weights (tests, a baseline)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    accumulate: int = Field(1, ge=1)
    clip_grad: float = Field(0.0, ge=0)  # 0 = off
    amp: Literal[AMP_MODES] = "off"
    seed: int = Field(0, ge=0, lt=2**63)
    deterministic: bool = False
    device: str = "auto"
    workers: int = Field(2, ge=0)
    val_every: int = Field(1, ge=1)
    monitor: Name = "confusion/miou"
    monitor_mode: Literal["max", "min"] = "max"
    early_stop_patience: int = Field(0, ge=0)  # 0 = never stop early
    log_every: int = Field(20, ge=1)
    channels_last: bool = False
    compile: bool = False
    # probability above which a single-logit model predicts class 1
    threshold: float = Field(0.5, gt=0, lt=1)
    # two-class models: choose the threshold, the smallest region kept and the empty-image
    # share on the validation images after training, and record them in `best`
    post_process: bool = True
    # metrics (higher is better) that post-processing must not lower by more than 0.001: a
    # threshold that raises the monitored IoU but costs TGS's per-image score is not kept
    post_process_guard: list[Name] = Field(default_factory=list)
    # decay of an exponential moving average of the weights; 0 = off
    ema: float = Field(0.0, ge=0, lt=1)

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not _DEVICE.fullmatch(device):
            raise ValueError("auto, cpu, mps, cuda or cuda:N")
        return device


class LogConfig(Section):
    """`[log]`: experiment trackers, besides the metrics files every run writes."""

    # names from `segcli list loggers`, each told every epoch's record
    loggers: Annotated[list[Name], BeforeValidator(_one_to_list), AfterValidator(_distinct)] = (
        Field(default_factory=list)
    )
    # logger name -> its options: `[log.options.mlflow] tracking_uri = "sqlite:///mlflow.db"`
    options: dict[Name, dict[str, Any]] = Field(default_factory=dict)


class InputConfig(Section):
    size: Annotated[
        list[int],
        BeforeValidator(_tuple_to_list),
        Field(description="[height, width]"),
    ] = Field(default_factory=lambda: [128, 128])
    mean: Annotated[list[float], BeforeValidator(_one_to_list), Field(min_length=1)] = Field(
        default_factory=lambda: [0.485, 0.456, 0.406]
    )
    # validated even when left at its default, which may not match a new mean
    std: Annotated[list[Positive], BeforeValidator(_one_to_list), Field(min_length=1)] = Field(
        default_factory=lambda: [0.229, 0.224, 0.225], validate_default=True
    )
    # training images are resized once, when read, to this multiple of `size` (0: kept at
    # their own size): augmentations then work on small arrays, not on the originals
    load_scale: float = 0.0

    @field_validator("size")
    @classmethod
    def _height_and_width_or_native(cls, size: list[int]) -> list[int]:
        # [] trains at each image's own size (docs/predict.md: native size)
        if len(size) not in (0, 2) or any(side < 1 for side in size):
            raise ValueError("[height, width], a list of 2 ints >= 1, or [] for native size")
        return size

    @field_validator("std")
    @classmethod
    def _one_std_per_mean(cls, std: list[float], info: ValidationInfo) -> list[float]:
        mean = info.data.get("mean")
        if mean is not None and len(mean) != len(std):
            count = f"{len(mean)} float > 0" if len(mean) == 1 else f"{len(mean)} floats > 0"
            raise ValueError(f"a list of {count}, one per value of input.mean")
        return std

    @field_validator("load_scale")
    @classmethod
    def _off_or_at_least_one(cls, load_scale: float) -> float:
        if load_scale != 0 and not 1 <= load_scale <= 8:
            raise ValueError("0 (images kept at their own size) or a factor from 1 to 8")
        return load_scale

    def load_size(self, *, augmented: bool) -> tuple[int, int] | None:
        """The size training (`augmented`) or validation images are resized to when read:
        `load_scale` x `size` for training, so zooms and rotations keep that much detail,
        exactly `size` for validation; None keeps each image's own size."""
        if not self.load_scale or not self.size:
            return None
        factor = self.load_scale if augmented else 1.0
        return round(self.size[0] * factor), round(self.size[1] * factor)

    def normalisation(self, channels: int) -> tuple[list[float], list[float]]:
        """Mean and std with one value per image channel (grey takes the mean of RGB values)."""
        mean, std = list(self.mean), list(self.std)
        if len(mean) == channels:
            return mean, std
        if channels == 1 and len(mean) == 3:
            return [sum(mean) / 3], [sum(std) / 3]
        raise ConfigError(
            f"input.mean has {len(mean)} values but the images have {channels} channel(s)",
            hint=f"--set input.mean=[...] with {channels} value(s)",
        )


def default_augment() -> dict[str, dict[str, Any]]:
    return {"hflip": {"p": 0.5}}


class RunConfig(Section):
    recipe: Name | None = None
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    metrics: Annotated[list[Name], BeforeValidator(_one_to_list), AfterValidator(_distinct)] = (
        Field(default_factory=lambda: ["confusion"])
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    # transform name -> its options, applied in this order (`segcli list transforms`)
    augment: dict[Name, dict[str, Any]] = Field(default_factory=default_augment)
    log: LogConfig = Field(default_factory=LogConfig)
    runs_dir: Name = "runs"

    # where each key's value came from ("train.lr" -> "--set train.lr=0.1"), for messages
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _monitor_names_a_metric(self) -> RunConfig:
        monitor = self.train.monitor
        if not (monitor in LOSS_MONITORS or any(monitor.startswith(f"{m}/") for m in self.metrics)):
            raise InvalidKey("train.monitor", f"one of: {monitor_choices(self.metrics)}")
        for guarded in self.train.post_process_guard:
            if not any(guarded.startswith(f"{m}/") for m in self.metrics):
                choices = ", ".join(f"{m}/<key>" for m in self.metrics)
                raise InvalidKey("train.post_process_guard", f"a list of: {choices}")
        return self

    def __eq__(self, other: object) -> bool:
        # the values make the configuration, not where they came from
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    def dataset_path(self) -> Path:
        return Path(self.dataset.path or Path("data") / self.dataset.name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def source_of(self, key: str) -> str:
        """Which layer set `key` ("recipe", a file, "--set ..."), or "defaults"."""
        return layer_of(key.split("."), self._sources)

    def invalid(self, key: str, expects: str, *, hint: str | None = None) -> ConfigError:
        """The one-line error for a value of `key` found wrong after the schema (by pre-flight)."""
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part)
        return ConfigError(must_be(key, expects, value, self.source_of(key)), hint=hint)


def monitor_choices(metrics: list[str]) -> str:
    keys = [*LOSS_MONITORS, *(f"{m}/<key>" for m in metrics)]
    return ", ".join(keys)
