"""Prediction in batches: one model call for several images gives each image the mask it
gets alone, and the files are read ahead of the model without changing what is predicted."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from segcli.data.images import read_image
from segcli.errors import DataError
from segcli.inference.predict_files import read_ahead
from segcli.inference.predictor import Predictor


def test_a_batch_gives_each_image_the_mask_and_foreground_it_gets_alone(
    trained_run, shapes_dataset
):
    predictor = Predictor(trained_run / "best.safetensors", "cpu")
    # learned post-processing is applied to each image's own mask, as for one image alone
    predictor.rules = replace(predictor.rules, min_region_share=0.05)
    files = sorted((shapes_dataset / "val" / "images").iterdir())[:3]
    images = [read_image(path, predictor.channels) for path in files]
    images[1] = np.ascontiguousarray(images[1][:40, :52])  # resized back to its own size
    alone_foreground = [np.zeros(image.shape[:2], np.float32) for image in images]
    alone = [
        predictor.predict_mask(image, foreground=foreground)
        for image, foreground in zip(images, alone_foreground, strict=True)
    ]
    batch_foreground = [np.zeros(image.shape[:2], np.float32) for image in images]
    together = predictor.predict_masks(
        torch.stack([predictor.preprocess(image) for image in images]),
        [image.shape[:2] for image in images],
        batch_foreground,
    )
    for image, mask, batched in zip(images, alone, together, strict=True):
        assert batched.shape == image.shape[:2] and np.array_equal(batched, mask)
    for one, batched in zip(alone_foreground, batch_foreground, strict=True):
        np.testing.assert_allclose(batched, one, atol=1e-6)


def test_read_ahead_keeps_the_order_raises_in_the_caller_and_stops_with_it():
    assert list(read_ahead(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise DataError("cannot read image x.png")

    got = []
    with pytest.raises(DataError, match="x.png"):
        for batch in read_ahead(failing()):
            got.append(batch)
    assert got == [1]

    read = []

    def endless():
        for index in itertools.count():
            read.append(index)
            yield index

    batches = read_ahead(endless())
    assert next(batches) == 0
    batches.close()  # as when the caller's loop ends early, by an error or an interrupt
    assert len(read) <= 3  # the one handed over, one waiting, one read: then it stopped
    assert not any(thread.name == "segcli-read-ahead" for thread in threading.enumerate())
