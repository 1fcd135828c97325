"""Inference: a trained model applied to images. The predictor loads a checkpoint or an
exported model and turns images into class probabilities (`predictor`, with `tiling` for
sliding windows and `postprocessing` for the rules a run learned); prediction finds the input
files, writes the outputs and ties them together (`input_files`, `output_files`,
`predict_files`); exported graphs are made in memory by `graphs`, run through
`exported_models`, written by `export`, quantised and re-scored by `quantization` and measured
by `profile`. `preprocessing`, the one way an image becomes a model input, sits in a
low layer of its own below the data layer (training data goes through it too) and imports only
the configuration and errors. The rest may import data, models, `segcli.building` and
`segcli.runs`; `export`, `quantization` and `profile` sit above `segcli.evaluation`, because
an export is re-scored on the labelled split. Nothing here trains, draws or parses a command line.
"""
