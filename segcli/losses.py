"""Building a loss from its name, including weighted sums written ``ce+dice`` or ``ce:1+dice:0.5``.

Options for a sum's parts, in the ``[loss]`` section of a recipe or TOML file:

- nested under the part's name: ``[loss.dice] smooth = 0.1`` (or ``options["dice"] =
  {"smooth": 0.1}``), or dotted: ``options["dice.smooth"] = 0.1`` (what ``--set
  loss.options.dice.smooth=0.1`` gives);
- flat (``--set loss.smooth=0.1``) when exactly one part accepts that option; an option
  that several parts accept must be given per part, so nothing is set by surprise.

Each part is built by its registered factory; factories that declare ``class_pixels``
receive the training split's per-class pixel counts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from segcli.errors import ConfigError, PluginError
from segcli.factories import option_names
from segcli.registry import Registry

_POSITIONAL = ("num_classes", "ignore_index")
_SUPPLIED = ("class_pixels",)


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"ce:1.0+dice:0.5"`` -> ``[("ce", 1.0), ("dice", 0.5)]``; a missing weight is 1."""
    parts = []
    for text in spec.split("+"):
        name, _, weight_text = text.strip().partition(":")
        name = name.strip()
        if not name:
            raise ConfigError(
                f"loss {spec!r} has an empty part", hint="write e.g. ce+dice or ce:1.0+dice:0.5"
            )
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise ConfigError(
                f"loss {spec!r}: weight {weight_text!r} of {name!r} is not a number",
                hint="write e.g. ce:1.0+dice:0.5",
            ) from None
        if weight < 0:
            raise ConfigError(f"loss {spec!r}: weight of {name!r} must not be negative")
        if name in (n for n, _ in parts):
            raise ConfigError(f"loss {spec!r} names {name!r} twice", hint="give it one weight")
        parts.append((name, weight))
    return parts


def _split_options(
    parts: list[str], factories: Mapping[str, Callable[..., Any]], options: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    # what the user may set of each part: the options its factory takes after (num_classes,
    # ignore_index), less those segcli supplies; None when it takes any (**options)
    accepted = {
        name: None
        if (taken := option_names(factories[name], len(_POSITIONAL))) is None
        else [option for option in taken if option not in _SUPPLIED]
        for name in parts
    }

    def takes(name: str, key: str) -> bool:
        options = accepted[name]
        return options is None or key in options

    def listed(name: str) -> str:
        options = accepted[name]
        return "any" if options is None else ", ".join(options) or "none"

    per_part: dict[str, dict[str, Any]] = {name: {} for name in parts}
    for key, value in options.items():
        head, dot, rest = key.partition(".")
        if head in per_part and isinstance(value, Mapping) and not dot:
            per_part[head].update(value)
        elif head in per_part and dot:
            per_part[head][rest] = value
        else:
            takers = [name for name in parts if takes(name, key)]
            if not takers and len(parts) > 1:
                raise ConfigError(
                    f"no part of loss {'+'.join(parts)} has option {key!r} "
                    f"({'; '.join(f'{n}: {listed(n)}' for n in parts)})"
                )
            if len(takers) > 1 and len(parts) > 1:
                raise ConfigError(
                    f"loss option {key!r} is accepted by {' and '.join(takers)}; say which",
                    hint=f"e.g. --set loss.options.{takers[0]}.{key}={value!r}",
                )
            per_part[takers[0] if takers else parts[0]][key] = value
    for name, chosen in per_part.items():
        unknown = [key for key in chosen if not takes(name, key)]
        if unknown:
            raise ConfigError(
                f"loss {name!r} has no option {unknown[0]!r}; its options: {listed(name)}"
            )
    return per_part


class WeightedLossSum(nn.Module):
    """sum_i weight_i * loss_i(logits, target). `single_logit` if any part needs one logit."""

    def __init__(
        self, names: list[str], weights: list[float], losses: list[Callable], single_logit: bool
    ) -> None:
        super().__init__()
        self.names = names
        self.weights = weights
        self.single_logit = single_logit
        # modules are registered so .to(device) moves their buffers (class weights)
        self.parts = nn.ModuleList(loss for loss in losses if isinstance(loss, nn.Module))
        self._losses = losses

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, loss in zip(self.weights, self._losses, strict=True):
            value = loss(logits, target) * weight
            total = value if total is None else total + value
        return total

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights, strict=True))


def is_single_logit(registry: Registry[Any], spec: str) -> bool:
    """Whether the model for this loss needs one output (a part marked `single_logit`)."""
    return any(
        getattr(registry.get(name), "single_logit", False) for name, _ in parse_loss_spec(spec)
    )


def build_loss(
    registry: Registry[Any],
    spec: str,
    num_classes: int,
    ignore_index: int = 255,
    options: Mapping[str, Any] | None = None,
    class_pixels: list[int] | None = None,
) -> WeightedLossSum:
    """The loss named `spec` (one registered name or a weighted sum), built with its options."""
    parsed = parse_loss_spec(spec)
    names = [name for name, _ in parsed]
    factories = {name: registry.get(name) for name in names}
    per_part = _split_options(names, factories, options or {})
    losses = []
    for name in names:
        factory = factories[name]
        kwargs = dict(per_part[name])
        if "class_pixels" in inspect.signature(factory).parameters:
            kwargs["class_pixels"] = class_pixels
        with registry.factory_errors(name, per_part[name]):
            loss = factory(num_classes, ignore_index, **kwargs)
        if not callable(loss):
            raise PluginError(
                f"loss {name!r} from plugin {registry.entry(name).origin} returned "
                f"{type(loss).__name__}, not a callable"
            )
        losses.append(loss)
    single = any(getattr(factories[name], "single_logit", False) for name in names)
    return WeightedLossSum(names, [w for _, w in parsed], losses, single)
