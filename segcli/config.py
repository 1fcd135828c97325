"""Run configuration: defaults <- recipe <- --config TOML <- --set key=value, validated.

The schema is a set of pydantic models: every key has a type, a range or a list of choices,
and an unknown key is an error, except in the open option tables of the components a
plugin provides (`model`, `loss`, `train.optimizer`, `train.scheduler` and each `augment`
transform), which are checked against the plugin's factory. What needs plugins or the
machine (components and their options, the monitor key's metric, the device, amp,
tensorboard) is checked by `segcli.engine.preflight` before a run folder exists.

The resolved configuration is saved in every run folder as config.toml; passing that file
back with `segcli train --config` repeats the run.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

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
Probability = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    # strict: a string is not a number nor a boolean here; floats still take integers.
    # No inf or nan anywhere: `train.lr=inf` or `input.mean=nan` only trains NaN weights.
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False
    )


class DatasetConfig(_Section):
    name: Name = "shapes"
    path: Name | None = None  # default: data/<name>
    train_split: Name = "train"
    val_split: Name = "val"
    # decoded training and validation images kept in memory: auto = when they fit
    cache: Literal["auto", "memory", "off"] = "auto"


class ModelConfig(_Section):
    name: Name = "unet"
    weights: Name | None = None
    backbone_weights: Name | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class LossConfig(_Section):
    name: Name = "ce"
    options: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(_Section):
    """`[train.optimizer]`: a name from `segcli list optimizers`, the other keys its options."""

    name: Name = "adam"
    options: dict[str, Any] = Field(default_factory=dict)


class SchedulerConfig(_Section):
    """`[train.scheduler]`: a name from `segcli list schedulers`, the other keys its options."""

    name: Name = "none"
    options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Section):
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
    # decay of an exponential moving average of the weights; 0 = off
    ema: float = Field(0.0, ge=0, lt=1)

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not _DEVICE.fullmatch(device):
            raise ValueError("auto, cpu, mps, cuda or cuda:N")
        return device


class LogConfig(_Section):
    """`[log]`: experiment trackers, besides the metrics files every run writes."""

    # names from `segcli list loggers`, each told every epoch's record
    loggers: Annotated[list[Name], BeforeValidator(_one_to_list), AfterValidator(_distinct)] = (
        Field(default_factory=list)
    )
    # logger name -> its options: `[log.options.mlflow] tracking_uri = "sqlite:///mlflow.db"`
    options: dict[Name, dict[str, Any]] = Field(default_factory=dict)


class InputConfig(_Section):
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


def _default_augment() -> dict[str, dict[str, Any]]:
    return {"hflip": {"p": 0.5}}


class _InvalidKey(ValueError):
    """A check across sections, naming the key it is about."""

    def __init__(self, key: str, expects: str) -> None:
        super().__init__(expects)
        self.key = key
        self.expects = expects


class RunConfig(_Section):
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
    augment: dict[Name, dict[str, Any]] = Field(default_factory=_default_augment)
    log: LogConfig = Field(default_factory=LogConfig)
    runs_dir: Name = "runs"

    # where each key's value came from ("train.lr" -> "--set train.lr=0.1"), for messages
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _monitor_names_a_metric(self) -> RunConfig:
        monitor = self.train.monitor
        if monitor in LOSS_MONITORS or any(monitor.startswith(f"{m}/") for m in self.metrics):
            return self
        raise _InvalidKey("train.monitor", f"one of: {monitor_choices(self.metrics)}")

    def __eq__(self, other: object) -> bool:
        # the values make the configuration, not where they came from
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    def dataset_path(self) -> Path:
        return Path(self.dataset.path or Path("data") / self.dataset.name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def source_of(self, key: str) -> str:
        """Which layer set `key` ("recipe", a file, "--set ..."), or "defaults"."""
        return _source(key.split("."), self._sources)

    def invalid(self, key: str, expects: str, *, hint: str | None = None) -> ConfigError:
        """The one-line error for a value of `key` found wrong after the schema (by pre-flight)."""
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part)
        return ConfigError(_must_be(key, expects, value, self.source_of(key)), hint=hint)


def monitor_choices(metrics: list[str]) -> str:
    keys = [*LOSS_MONITORS, *(f"{m}/<key>" for m in metrics)]
    return ", ".join(keys)


# Sections whose unknown keys are options for the plugin (validated by the plugin's factory).
_OPEN_SECTIONS = (ModelConfig, LossConfig, OptimizerConfig, SchedulerConfig)
# Sections whose options belong to the chosen name: a layer naming another one drops the
# options given for the first (`model.weights` and `backbone_weights` are not options: kept).
_COMPONENT_SECTIONS = (ModelConfig, LossConfig, OptimizerConfig, SchedulerConfig)


def build_config(
    recipe: dict[str, Any] | None = None,
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    recipe_source: str = "recipe",
) -> RunConfig:
    """Merge the layers in order, then validate every key, type, range and choice.

    `recipe_source` names where the first layer came from in error messages (a recipe, or
    the configuration saved in a checkpoint)."""
    data: dict[str, Any] = {"augment": _default_augment()}
    sources: dict[str, str] = {}
    if recipe:
        _merge(data, RunConfig, recipe, recipe_source, sources)
    if config_file is not None:
        _merge(data, RunConfig, load_toml(config_file), str(config_file), sources)
    for override in overrides:
        key, value = parse_override(override)
        _set_path(data, key.split("."), value, f"--set {override}", sources)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors(include_url=False)[0], data, sources)) from None
    config._sources = sources
    return config


def load_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"configuration file {path} is a folder, not a TOML file",
            hint=f"pass {path / 'config.toml'}, the run's configuration"
            if (path / "config.toml").is_file()
            else "pass a .toml file: a run's config.toml, or one of your own",
        )
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None


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
        if raw.startswith("[") and raw.endswith("]"):  # bare words: --set metrics=[a,b]
            return key.strip(), [word.strip().strip("'\"") for word in raw[1:-1].split(",")]
        value = raw  # a bare word is a string: --set model.name=unet
    return key.strip(), value


def to_toml(config: RunConfig) -> str:
    """The resolved configuration as TOML; `build_config(config_file=...)` reads it back equal."""
    return tomli_w.dumps(_without_none(config.to_dict()))


def _without_none(table: dict[str, Any]) -> dict[str, Any]:
    # TOML has no null: an optional key left out reads back as its default, None
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in table.items()
        if value is not None
    }


def _merge(
    data: dict[str, Any],
    schema: type[BaseModel],
    values: dict[str, Any],
    source: str,
    sources: dict[str, str],
    prefix: str = "",
) -> None:
    for key, value in values.items():
        path = f"{prefix}{key}"
        section = _section(schema, key)
        if section in _COMPONENT_SECTIONS and isinstance(value, str):
            value = {"name": value}  # `--set train.scheduler=cosine`, `--set model=tiny`
        if section is not None and isinstance(value, dict):
            if not isinstance(data.get(key), dict):
                data[key] = {}
            elif section in _COMPONENT_SECTIONS:
                _drop_options_of_another_name(data[key], section, value.get("name"))
            _merge(data[key], section, value, source, sources, f"{path}.")
        elif schema is RunConfig and key == "augment" and isinstance(value, dict):
            # a recipe or file lists its whole pipeline: the order is part of it
            data[key] = {
                name: dict(options) for name, options in value.items() if options is not None
            }
            sources[path] = source
        elif issubclass(schema, _OPEN_SECTIONS) and key not in schema.model_fields:
            _set_option(data, key, value)
            sources[path] = source
        elif issubclass(schema, _OPEN_SECTIONS) and key == "options" and isinstance(value, dict):
            for name, option in value.items():
                _set_option(data, name, option)
                sources[f"{prefix}{name}"] = source
        else:
            data[key] = value
            sources[path] = source


def _drop_options_of_another_name(
    earlier: dict[str, Any], section: type[BaseModel], name: Any
) -> None:
    """A later layer naming another component: the earlier layers' options were for the old
    one (`depth` of unet means nothing to another model)."""
    current = earlier.get("name", section.model_fields["name"].default)
    if name is not None and name != current:
        earlier.pop("options", None)


def _set_option(section: dict[str, Any], key: str, value: Any) -> None:
    options = section.setdefault("options", {})
    if value is None:  # `--set model.depth=none`: back to the factory's default
        options.pop(key, None)
    else:
        options[key] = value


def _set_path(
    data: dict[str, Any], parts: list[str], value: Any, source: str, sources: dict[str, str]
) -> None:
    if parts[0] == "augment":
        _set_augment(data, parts, value, source, sources)
        return
    schema: type[BaseModel] = RunConfig
    for index, part in enumerate(parts[:-1]):
        if issubclass(schema, _OPEN_SECTIONS) and (
            part == "options" or part not in schema.model_fields
        ):
            # `loss.dice.smooth` -> options["dice.smooth"]: an option of one part of a sum
            start = index + 1 if part == "options" else index
            _set_option(data, ".".join(parts[start:]), value)
            return
        section = _section(schema, part)
        if section is None:
            path = ".".join(parts[: index + 1])
            if part in schema.model_fields:
                raise ConfigError(
                    f"configuration key {path!r} is a value, not a table, so "
                    f"{'.'.join(parts)!r} does not exist (from {source})"
                )
            raise ConfigError(_unknown_key(path, schema, source))
        if not isinstance(data.get(part), dict):
            data[part] = {}
        if section in _COMPONENT_SECTIONS and parts[-1] == "name" and index == len(parts) - 2:
            # `--set model.name=tiny` names another component, as `--set model=tiny` does
            _drop_options_of_another_name(data[part], section, value)
        data, schema = data[part], section
    _merge(data, schema, {parts[-1]: value}, source, sources, "".join(f"{p}." for p in parts[:-1]))


def _set_augment(
    data: dict[str, Any], parts: list[str], value: Any, source: str, sources: dict[str, str]
) -> None:
    """`augment.rotate.degrees=15` adds or changes an option, `augment.hflip=none` removes a
    transform, `augment=none` removes them all; new transforms go last."""
    key = ".".join(parts)
    pipeline = data.setdefault("augment", {})
    if len(parts) == 1:
        if value is not None and not isinstance(value, dict):
            raise ConfigError(
                f"augment must be a table of transforms or none, got {value!r} (from {source})"
            )
        data["augment"] = {} if value is None else value
    elif len(parts) == 2:
        name = parts[1]
        if value is None:
            pipeline.pop(name, None)
        elif isinstance(value, dict):
            pipeline[name] = value
        else:
            raise ConfigError(
                f"{key} must be a table of options or none, got {value!r} (from {source})",
                hint=f"e.g. --set {key}.OPTION=VALUE (`segcli list transforms`)",
            )
    else:
        options = pipeline.setdefault(parts[1], {})
        option = ".".join(parts[2:])
        if value is None:
            options.pop(option, None)
        else:
            options[option] = value
    sources[key] = source


def _section(schema: type[BaseModel], key: str) -> type[BaseModel] | None:
    field = schema.model_fields.get(key)
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _describe(error: dict[str, Any], data: dict[str, Any], sources: dict[str, str]) -> str:
    """pydantic's error as one line: key, value, where it came from, what it must be."""
    problem = error.get("ctx", {}).get("error")
    if isinstance(problem, _InvalidKey):
        parts, expects = problem.key.split("."), problem.expects
    else:
        # an error in one item of a list is reported on the whole list
        parts = [str(p) for p in error["loc"] if isinstance(p, str)]
        expects = str(problem) if problem is not None else None
    key = ".".join(parts)
    source = _source(parts, sources)
    schema, field = _field(parts)
    if error["type"] == "extra_forbidden":
        return _unknown_key(key, schema, source)
    value: Any = data
    for part in parts:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None and problem is not None:  # a default that a cross check refused
        value = _default(parts)
    if expects is None:
        expects = _expects(field.annotation, field.metadata, field.description)
    if error["type"] == "finite_number":
        expects += " (finite)"
    return _must_be(key, expects, value, source)


def _must_be(key: str, expects: str, value: Any, source: str) -> str:
    return f"{key} must be {expects}, got {value!r} (from {source})"


def _source(parts: list[str], sources: dict[str, str]) -> str:
    """The layer that set the key `parts` or, failing that, the nearest table holding it."""
    for end in range(len(parts), 0, -1):
        source = sources.get(".".join(parts[:end]))
        if source is not None:
            return source
    return "defaults"


def _field(parts: list[str]) -> tuple[type[BaseModel], Any]:
    """The section holding the key `parts`, and the key's field (None if unknown)."""
    schema: type[BaseModel] = RunConfig
    for part in parts[:-1]:
        schema = _section(schema, part) or schema
    return schema, schema.model_fields.get(parts[-1]) if parts else None


def _default(parts: list[str]) -> Any:
    value: Any = RunConfig()
    for part in parts:
        value = getattr(value, part, None)
    return value


def _unknown_key(path: str, schema: type[BaseModel], source: str) -> str:
    valid = ", ".join(sorted(schema.model_fields))
    return f"unknown configuration key {path!r} (from {source}); valid keys here: {valid}"


_TYPE_NAMES = {int: "int", float: "float", str: "a string", bool: "true or false"}
_PLURAL = {int: "ints", float: "floats", str: "strings", bool: "booleans"}
_BOUNDS = {
    annotated_types.Ge: (">=", "ge"),
    annotated_types.Gt: (">", "gt"),
    annotated_types.Le: ("<=", "le"),
    annotated_types.Lt: ("<", "lt"),
}


def _expects(
    annotation: Any, metadata: list[Any], description: str | None = None, plural: bool = False
) -> str:
    """What a key's annotation asks for, in words: "int >= 1", "one of: off, bf16, fp16"."""
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        # a Field(...) inside Annotated (a list item's range) carries its own constraints
        unpacked = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        return _expects(base, [*metadata, *unpacked], description, plural)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        text = "one of: " + ", ".join(str(a) for a in args)
    elif origin in (typing.Union, types.UnionType):
        choices = [_expects(a, metadata) for a in args if a is not type(None)]
        text = " or ".join(choices) + (" or none" if type(None) in args else "")
    elif origin is list:
        lengths = [m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)]
        fixed = [m.max_length for m in metadata if isinstance(m, annotated_types.MaxLen)]
        items = _expects(args[0], [], plural=True)
        if fixed and lengths == fixed:
            text = f"a list of {fixed[0]} {items}"
        else:
            text = f"a {'non-empty ' if lengths and lengths[0] else ''}list of {items}"
    elif origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        text = "a table"
    else:
        names = _PLURAL if plural else _TYPE_NAMES
        text = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
        bounds = [
            f"{symbol} {getattr(m, attribute)}"
            for m in metadata
            for kind, (symbol, attribute) in _BOUNDS.items()
            if isinstance(m, kind)
        ]
        if bounds:
            text += " " + " and ".join(bounds)
        elif annotation is str and any(isinstance(m, annotated_types.MinLen) for m in metadata):
            text = "non-empty " + ("strings" if plural else "string")
            text = text if plural else "a " + text
    return f"{description}, {text}" if description else text
