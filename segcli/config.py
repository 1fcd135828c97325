"""Run configuration: defaults <- recipe <- --config TOML <- --set key=value, validated.

The resolved configuration is saved in every run folder as config.toml; passing that file
back with `segcli train --config` repeats the run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from segcli.errors import ConfigError


@dataclass
class DatasetConfig:
    name: str = "shapes"
    path: str | None = None  # default: data/<name>
    train_split: str = "train"
    val_split: str = "val"


@dataclass
class ModelConfig:
    name: str = "unet"
    weights: str | None = None
    backbone_weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    name: str = "ce"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "none"  # none | poly | cosine | step | onecycle
    warmup_epochs: float = 0.0
    step_epochs: int = 30  # step scheduler: multiply lr by gamma every step_epochs
    gamma: float = 0.1
    poly_power: float = 0.9
    accumulate: int = 1
    clip_grad: float = 0.0
    amp: str = "off"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    workers: int = 2
    val_every: int = 1
    monitor: str = "confusion/miou"
    monitor_mode: str = "max"
    early_stop_patience: int = 0
    log_every: int = 20
    channels_last: bool = False
    compile: bool = False
    threshold: float = 0.5  # probability above which a single-logit model predicts class 1
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off


@dataclass
class LogConfig:
    tensorboard: bool = False


@dataclass
class InputConfig:
    size: list[int] = field(default_factory=lambda: [128, 128])  # height, width
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def normalisation(self, channels: int) -> tuple[list[float], list[float]]:
        """Mean and std with one value per image channel (grey takes the mean of RGB values)."""
        mean, std = list(self.mean), list(self.std)
        if len(mean) != len(std):
            raise ConfigError("input.mean and input.std must have the same length")
        if len(mean) == channels:
            return mean, std
        if channels == 1 and len(mean) == 3:
            return [sum(mean) / 3], [sum(std) / 3]
        raise ConfigError(
            f"input.mean has {len(mean)} values but the images have {channels} channel(s)",
            hint=f"--set input.mean=[...] with {channels} value(s)",
        )


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.0
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    rotate: float = 0.0
    color_jitter: float = 0.0


@dataclass
class RunConfig:
    recipe: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    metrics: list[str] = field(default_factory=lambda: ["confusion"])
    train: TrainConfig = field(default_factory=TrainConfig)
    input: InputConfig = field(default_factory=InputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    log: LogConfig = field(default_factory=LogConfig)
    runs_dir: str = "runs"

    def dataset_path(self) -> Path:
        return Path(self.dataset.path or Path("data") / self.dataset.name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Sections whose unknown keys are options for the plugin (validated by the plugin's factory).
_OPEN_SECTIONS = {ModelConfig, LossConfig}


def build_config(
    recipe: dict[str, Any] | None = None,
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """Merge the layers in order and validate every key and type."""
    config = RunConfig()
    if recipe:
        _merge(config, recipe, "recipe")
    if config_file is not None:
        _merge(config, load_toml(config_file), str(config_file))
    for override in overrides:
        key, value = parse_override(override)
        _set_path(config, key, value, f"--set {override}")
    return config


def load_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value); the value is read as TOML (numbers, booleans, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set {text!r} is not of the form key=value", hint="e.g. --set train.lr=1e-3"
        )
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return key.strip(), None
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string: --set model.name=unet
    return key.strip(), value


def _merge(target: Any, data: dict[str, Any], source: str, prefix: str = "") -> None:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and _is_section(target, key):
            _merge(getattr(target, key), value, source, f"{path}.")
        elif key == "options" and type(target) in _OPEN_SECTIONS and isinstance(value, dict):
            target.options.update(value)
        else:
            _assign(target, key, value, path, source)


def _set_path(config: RunConfig, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    target: Any = config
    for index, part in enumerate(parts[:-1]):
        if type(target) in _OPEN_SECTIONS and (part == "options" or part not in _fields(target)):
            # `loss.dice.smooth` -> options["dice.smooth"]: an option of one part of a sum
            start = index + 1 if part == "options" else index
            target.options[".".join(parts[start:])] = value
            return
        if not _is_section(target, part):
            raise ConfigError(_unknown_key(target, ".".join(parts[: index + 1]), source))
        target = getattr(target, part)
    _assign(target, parts[-1], value, key, source)


def _is_section(target: Any, key: str) -> bool:
    return (
        dataclasses.is_dataclass(target)
        and key in _fields(target)
        and dataclasses.is_dataclass(getattr(target, key))
    )


def _fields(target: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(target)}


def _assign(target: Any, key: str, value: Any, path: str, source: str) -> None:
    fields = _fields(target)
    if key not in fields:
        if type(target) in _OPEN_SECTIONS:
            target.options[key] = value  # validated against the plugin's factory when built
            return
        raise ConfigError(_unknown_key(target, path, source))
    hints = typing.get_type_hints(type(target))
    setattr(target, key, _coerce(value, hints[key], path, source))


def _unknown_key(target: Any, path: str, source: str) -> str:
    valid = ", ".join(sorted(_fields(target)))
    return f"unknown configuration key {path!r} (from {source}); valid keys here: {valid}"


def _coerce(value: Any, hint: Any, path: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, args[0], path, source) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a table (from {source})")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(
            f"{path} must be {hint.__name__}, got {value!r} (from {source})",
            hint=f"e.g. --set {path}={_example(hint)}",
        )
    return value


def _example(hint: Any) -> str:
    return {int: "4", float: "0.001", bool: "true", str: "name"}.get(hint, "...")


def to_toml(config: RunConfig) -> str:
    """The resolved configuration as TOML (read back by `load_toml`)."""
    data = config.to_dict()
    lines = [
        f"{k} = {_toml_value(v)}"
        for k, v in data.items()
        if not isinstance(v, dict) and v is not None
    ]
    for section, values in data.items():
        if not isinstance(values, dict):
            continue
        lines.append(f"\n[{section}]")
        nested = {}
        for key, value in values.items():
            if isinstance(value, dict):
                nested[key] = value
            elif value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, table in nested.items():
            lines.append(f"\n[{section}.{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} to TOML")
