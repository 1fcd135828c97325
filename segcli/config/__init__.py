"""Run configuration: defaults <- recipe <- --config TOML <- --set key=value, validated.

The schema is a set of pydantic models: every key has a type, a range or a list of choices,
and an unknown key is an error, except in the open option tables of the components a
plugin provides (`model`, `loss`, `train.optimizer`, `train.scheduler` and each `augment`
transform), which are checked against the plugin's factory. What needs plugins or the
machine (components and their options, the monitor key's metric, the device, amp,
loggers) is checked by `segcli.training.preflight` before a run folder exists.

The resolved configuration is saved in every run folder as config.toml; passing that file
back with `segcli train --config` repeats the run.

By job: `schema` (the sections and their keys), `layers` (merging the layers, TOML, turning
pydantic's errors into one line), `words` (what a key must be, in words, and which layer set
it). This package imports only pydantic, TOML and `segcli.errors`; everything is used from
here, `from segcli.config import build_config`.
"""

from segcli.config.layers import build_config, load_toml, parse_override, to_toml
from segcli.config.schema import (
    AMP_MODES,
    LOSS_MONITORS,
    MAX_EPOCHS,
    MAX_TIME_SECONDS,
    MIN_TIME_SECONDS,
    DatasetConfig,
    InputConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    SchedulerConfig,
    TrainConfig,
    monitor_choices,
    parse_duration,
)

__all__ = [
    "AMP_MODES",
    "LOSS_MONITORS",
    "MAX_EPOCHS",
    "MAX_TIME_SECONDS",
    "MIN_TIME_SECONDS",
    "DatasetConfig",
    "InputConfig",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RunConfig",
    "SchedulerConfig",
    "TrainConfig",
    "build_config",
    "load_toml",
    "monitor_choices",
    "parse_duration",
    "parse_override",
    "to_toml",
]
