"""Training, evaluation, prediction and checkpoints: plain functions, no command line."""
