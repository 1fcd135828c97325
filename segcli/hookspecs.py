"""The hooks a segcli plugin can implement: one per kind of thing it adds.

Each ``register_*`` hook receives a ``register`` callable and calls it once per name::

    register(name, target, description)

``target`` is either the object itself or, preferably, a lazy ``"module:attribute"`` path
that segcli imports only when the name is used, so listing plugins stays fast and never
imports torch. ``description`` is one line shown by ``segcli list``.

What ``target`` must be depends on the kind (see the docstring of each hook); a target
that is not usable (``None``, an instance, a path resolving to a constant) is a
``PluginError`` naming the plugin and the name. Plugins load segcli's own first, then the others by
entry-point name: a name registered twice fails the plugin that registered it second.
A factory should raise ``segcli.errors`` exceptions for what the user can fix; a
``TypeError`` or ``ValueError`` is reported as wrong options, anything else as a
``PluginError`` naming the plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer


hookspec = pluggy.HookspecMarker("segcli")

Register = Callable[[str, Any, str], None]
"""``register(name, target, description)``; see the module docstring."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset preparers, used by ``segcli prepare NAME``.

    ``target``: a function ``prepare(raw: pathlib.Path | None, **options) -> DatasetPlan``
    (see ``segcli.data.prepare``). Its keyword-only parameters become the command's
    options: ``val_fraction: float = 0.15`` turns into ``--val-fraction``; annotate them
    ``Annotated[float, "help text"]`` to document them. A preparer that needs no raw folder
    (a synthetic dataset) sets ``prepare.needs_raw = False``.
    """


@hookspec
def register_models(register: Register) -> None:
    """Register segmentation architectures.

    ``target``: a factory ``(num_classes: int, in_channels: int, **options) -> torch.nn.Module``
    whose module maps ``(N, in_channels, H, W)`` float images to ``(N, K, H', W')`` logits,
    ``K = num_classes`` (or ``K = 1`` for a single-logit binary model built with
    ``num_classes=1``). Options are the factory's keyword arguments; a model whose output is
    smaller than its input (valid convolutions) or that needs sizes divisible by a stride
    sets the attributes documented in docs/models.md and the engine handles it.
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register losses.

    ``target``: a factory ``(num_classes: int, ignore_index: int, **options) -> callable``;
    the callable maps ``(logits (N,K,H,W), target (N,H,W) int64)`` to a scalar tensor and
    ignores pixels whose target is ``ignore_index``.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register metrics.

    ``target``: a factory ``(num_classes: int, ignore_index: int, **options) -> metric`` where
    the metric has ``reset()``, ``update(pred (N,H,W) int64, target (N,H,W) int64)`` (no host
    synchronisation: keep state on the tensors' device) and ``compute() -> dict[str, float |
    list[float]]``. Keys are reported as ``<metric>/<key>``; lists are per class. Keep the
    accumulated state in tensor attributes that are sums over samples (counts, totals):
    under ``torchrun`` segcli adds them up across processes before ``compute()``.
    """


@hookspec
def register_optimizers(register: Register) -> None:
    """Register optimisers, chosen by ``[train.optimizer] name = NAME``.

    ``target``: a factory ``(parameters: list[torch.nn.Parameter], lr: float, **options) ->
    torch.optim.Optimizer``. ``lr`` is ``train.lr``; the other keys of ``[train.optimizer]``
    are ``options``, checked against the factory's keyword parameters before a run starts,
    so give each option a default (``weight_decay: float = 0.0``).
    """


@hookspec
def register_schedulers(register: Register) -> None:
    """Register learning-rate schedules, chosen by ``[train.scheduler] name = NAME``.

    ``target``: a factory ``(total_steps: int, steps_per_epoch: int, **options) ->
    Callable[[int], float]``. The callable maps an optimizer step (0, 1, ...) to the factor
    that multiplies ``train.lr`` at that step. Keep it a plain function of the step (no state
    of its own): a resumed run then has exactly the learning rate an uninterrupted one would.
    Options (the other keys of ``[train.scheduler]``, e.g. ``warmup_epochs``) are checked
    against the factory's keyword parameters before a run starts.
    """


@hookspec
def register_transforms(register: Register) -> None:
    """Register training augmentations, listed in order in the ``[augment]`` table.

    ``target``: a factory ``(**options) -> transform``; ``[augment.NAME]``'s keys are its
    options, checked against the factory's keyword parameters before a run starts. The
    transform is applied to every training sample (image and mask together) in the order of
    ``[augment]``; docs/transforms.md says what it receives and returns.
    """


@hookspec
def register_loggers(register: Register) -> None:
    """Register experiment trackers, chosen by ``log.loggers = ["NAME", ...]``.

    ``target``: a factory ``(run_dir: pathlib.Path, config: RunConfig, **options) -> Logger``
    (see `Logger`), called once per run after the run folder exists; ``[log.options.NAME]``'s
    keys are its options. Give the factory a ``check(config, **options)`` attribute (a
    ``staticmethod`` of a class) that raises ``segcli.errors.ConfigError`` for what would stop
    the logger (a package not installed, a store it cannot reach): pre-flight calls it before
    the run folder exists. The metrics files are not a logger: every run writes them.
    """


class Logger:
    """What a run tells a logger, in this order; subclass it and override what you need.

    A logger that raises is reported in one warning line and dropped for the rest of the
    run: tracking never stops a training. Values are plain Python (str, int, float, bool,
    lists); records are those of metrics.jsonl.
    """

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The resolved configuration, flattened: ``{"train.lr": 0.001, ...}``. Once, first."""

    def forget_after(self, epoch: int) -> None:
        """Only when a run resumes, before its first record: it goes on after `epoch`, and
        the records of later epochs were dropped from metrics.jsonl and will come again."""

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """One epoch's record: ``epoch``, ``step``, ``lr``, ``train/loss``, ``val/loss``,
        ``<metric>/<key>`` (numbers, or per-class lists); after metrics.jsonl has it."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """The end of a run that finished: summary.json's content, after it is written."""

    def close(self) -> None:
        """Last, whether the run finished or failed (then without a `log_summary`): the
        run folder holds everything the run wrote by now."""


LoggerFactory = Callable[..., Logger]
"""``(run_dir: Path, config: RunConfig, **options) -> Logger``; see `register_loggers`."""


@hookspec
def register_recipes(register: Register) -> None:
    """Register recipes: named training configurations, used by ``segcli train --plugin NAME``.

    ``target``: a ``dict`` in the layout of ``segcli train --print-config`` (sections
    ``dataset``, ``model``, ``loss``, ``metrics``, ``train``, ``input``, ``augment``); keys
    left out take their defaults.
    """


@hookspec
def register_planners(register: Register) -> None:
    """Register planners, used by ``segcli train --data DIR --planner NAME`` (default
    ``default``, segcli's own rules).

    ``target``: a function ``plan(fingerprint, hardware, budget_seconds, *, timer=None) ->
    segcli.planning.Plan``: the prepared dataset's ``Fingerprint``, the ``Hardware`` the run
    will use and the time budget in seconds, a configuration layer (the place of a recipe:
    ``--config`` and ``--set`` still override it) with a one-line reason per planned key out.
    ``timer(layer)``, when given, times a candidate layer's real training steps on this
    machine and returns a ``Measurement``; it takes seconds of the budget. Give the function
    a ``needs`` attribute: the ``Requirement``s (``segcli.planning.requirements``) of every
    model, loss, metric, optimizer, scheduler and transform name its plans may use, so that a
    missing plugin is named before anything runs. Everything a planner needs is segcli's
    public API: ``from segcli import Plan, requirements, Fingerprint, Hardware, ...``.
    """


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add commands to the ``segcli`` command line: ``@app.command()`` on your functions.

    ``app`` is a Typer app of your plugin's own; its commands join ``segcli``'s unless one
    is named like a built-in command or like an earlier plugin's command: then the whole
    plugin fails to load (``segcli plugins`` says why), as for any name registered twice.
    Keep heavy imports inside the command functions: this hook runs whenever the command line
    loads plugins (not when segcli is used as a library: nothing would run the commands).
    """
