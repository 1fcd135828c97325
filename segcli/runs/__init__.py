"""Runs: what a run leaves on disk and how it is read back. Run folders (`folders`: naming,
locking, what they record for reproducibility, finding checkpoints), the checkpoint file
format (`checkpoint_file`: safetensors with a versioned JSON header), the metrics and summary
files read without the run's code (`metrics`), the run log that writes them and tells the
loggers (`log`), and a cross-validation's parent run with its folds (`cross_validation`).
It may import only errors, the utilities, the configuration and the plugin machinery
(loggers are plugins): nothing that builds models, reads datasets, trains or predicts, so
that every workflow above it can write and read runs.
"""
