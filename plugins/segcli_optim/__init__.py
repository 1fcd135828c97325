"""Built-in optimisers and learning-rate schedules, registered like any third-party plugin.

Only names and import paths live here: torch is imported when an optimiser is built.
"""

import segcli

_OPTIMIZERS = [
    ("sgd", "segcli_optim.optimizers:sgd", "SGD (options: momentum=0.9, weight_decay=0, nesterov)"),
    ("adam", "segcli_optim.optimizers:adam", "Adam (options: weight_decay=0, betas, eps)"),
    (
        "adamw",
        "segcli_optim.optimizers:adamw",
        "Adam with decoupled weight decay (options: weight_decay=0, betas, eps)",
    ),
    (
        "rmsprop",
        "segcli_optim.optimizers:rmsprop",
        "RMSprop (options: momentum=0.9, weight_decay=0, alpha=0.99, eps)",
    ),
]

_SCHEDULERS = [
    ("none", "segcli_optim.schedules:constant", "Constant lr (option: warmup_epochs=0)"),
    ("constant", "segcli_optim.schedules:constant", "Constant lr (option: warmup_epochs=0)"),
    (
        "poly",
        "segcli_optim.schedules:poly",
        "Polynomial decay to 0: (1 - progress)^power (options: power=0.9, warmup_epochs=0)",
    ),
    ("cosine", "segcli_optim.schedules:cosine", "Cosine decay to 0 (option: warmup_epochs=0)"),
    (
        "step",
        "segcli_optim.schedules:step",
        "Multiply lr by gamma every step_epochs (options: step_epochs=30, gamma=0.1, "
        "warmup_epochs=0)",
    ),
    (
        "onecycle",
        "segcli_optim.schedules:onecycle",
        "Rise from 4 % for warmup_epochs (default 30 % of the run), then cosine decay",
    ),
]


@segcli.hookimpl
def register_optimizers(register):
    for name, target, description in _OPTIMIZERS:
        register(name, target, description)


@segcli.hookimpl
def register_schedulers(register):
    for name, target, description in _SCHEDULERS:
        register(name, target, description)
