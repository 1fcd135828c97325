"""The torch device a name (auto, cpu, cuda[:N]) stands for, checked against this machine."""

from __future__ import annotations

import torch

from segcli.errors import ConfigError


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """The torch device `name` (auto, cpu, cuda[:N]) stands for; `option` is where it was
    given, a configuration key or a command's option (`--device`), so the hint fits it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use = f"{option} " if option.startswith("--") else f"--set {option}="
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} was asked for but CUDA is not available", hint=f"{use}cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}", hint=f"{use}auto, cpu or cuda[:N]") from None
