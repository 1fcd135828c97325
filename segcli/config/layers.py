"""The configuration's layers merged in order (defaults <- recipe <- --config TOML <- --set
key=value), remembering which layer set each key, then validated against the schema; reading
and writing TOML; pydantic's errors turned into one line naming key, value and layer."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from segcli.config.schema import (
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    SchedulerConfig,
    default_augment,
)
from segcli.config.words import InvalidKey, expects_in_words, layer_of, must_be, unknown_key
from segcli.errors import ConfigError

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
    data: dict[str, Any] = {"augment": default_augment()}
    sources: dict[str, str] = {}
    if recipe:
        _merge(data, RunConfig, recipe, recipe_source, sources)
    if config_file is not None:
        values = _anchored(load_toml(config_file), Path(config_file).parent)
        _merge(data, RunConfig, values, str(config_file), sources)
    for override in overrides:
        key, value = parse_override(override)
        _set_path(data, key.split("."), value, f"--set {override}", sources)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors(include_url=False)[0], data, sources)) from None
    config._sources = sources
    return config


def _anchored(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A configuration file's `values` with a relative `dataset.folds` taken from the file's
    `folder`, not the working directory: a run records its folds file relative to itself
    (`../folds.json` in a fold, `segcli.runs.folders.write_config`), so that it is found from
    any working directory and after the cross-validation run is moved or copied whole."""
    dataset = values.get("dataset")
    folds = dataset.get("folds") if isinstance(dataset, dict) else None
    if not isinstance(folds, str) or not folds or Path(folds).is_absolute():
        return values  # absent, absolute, or wrong (the schema says so, naming the file)
    return {**values, "dataset": {**dataset, "folds": os.path.abspath(folder / folds)}}


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
            raise ConfigError(unknown_key(path, schema, source))
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
    if isinstance(problem, InvalidKey):
        parts, expects = problem.key.split("."), problem.expects
    else:
        # an error in one item of a list is reported on the whole list
        parts = [str(p) for p in error["loc"] if isinstance(p, str)]
        expects = str(problem) if problem is not None else None
    key = ".".join(parts)
    source = layer_of(parts, sources)
    schema, field = _field(parts)
    if error["type"] == "extra_forbidden":
        return unknown_key(key, schema, source)
    value: Any = data
    for part in parts:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None and problem is not None:  # a default that a cross check refused
        value = _default(parts)
    if expects is None:
        expects = expects_in_words(field.annotation, field.metadata, field.description)
    if error["type"] == "finite_number":
        expects += " (finite)"
    return must_be(key, expects, value, source)


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
