"""Training: `segcli.training.fit.fit` turns a configuration into a run folder with its
checkpoints. Around it: the parts an epoch works with (`setup`), the epoch and validation
loops (`loop`), the optimiser and schedule (`optimisation`), the time budget (`budget`), the
best-checkpoint rule and resuming (`resume`), the checks made before a run folder exists
(`preflight`) and multi-process training (`distributed`). It may import every layer below
it: run folders, the checkpoint file and the run log (`segcli.runs`), data, models and
`segcli.building`, inference (the post-processing a run learns) and evaluation (validation
scores); nothing that plans, draws or parses a command line.
"""
