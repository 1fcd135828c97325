"""Datasets: the canonical prepared format, the prepare pipeline and the torch Dataset."""
