"""Loss names, weighted sums and options (segcli.losses), and the built-in losses' values."""

from __future__ import annotations

import math

import pytest
import torch
from segcli_losses.cross_entropy import class_weights_from_pixels
from segcli_losses.lovasz import build_lovasz
from torch import nn

from segcli.errors import ConfigError, DataError, UnknownNameError
from segcli.losses import build_loss, is_single_logit, parse_loss_spec
from segcli.plugins import get_plugins

LOSSES = get_plugins().losses


def _batch(channels=3, classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, channels, 6, 7, generator=generator)
    target = torch.randint(0, classes, (2, 6, 7), generator=generator)
    target[0, 0] = 255
    return logits, target


def test_spec_parsing():
    assert parse_loss_spec("ce") == [("ce", 1.0)]
    assert parse_loss_spec("ce:1.0+dice:0.5") == [("ce", 1.0), ("dice", 0.5)]
    assert parse_loss_spec(" ce + dice:2 ") == [("ce", 1.0), ("dice", 2.0)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("ce+", "empty part"), ("ce:x", "not a number"), ("ce+ce", "twice"), ("ce:-1", "negative")],
)
def test_bad_specs_are_explained(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_loss_spec(spec)


def test_unknown_part_lists_valid_losses():
    with pytest.raises(UnknownNameError, match="did you mean 'dice'"):
        build_loss(LOSSES, "ce+dise", 3)


def test_weighted_sum_equals_the_parts():
    logits, target = _batch()
    total = build_loss(LOSSES, "ce:1.0+dice:0.5", 3)(logits, target)
    ce = build_loss(LOSSES, "ce", 3)(logits, target)
    dice = build_loss(LOSSES, "dice", 3)(logits, target)
    assert total == pytest.approx(float(ce + 0.5 * dice), abs=1e-6)


def test_options_nested_dotted_and_flat():
    nested = build_loss(LOSSES, "ce+dice", 3, options={"dice": {"smooth": 0.5}})
    dotted = build_loss(LOSSES, "ce+dice", 3, options={"dice.smooth": 0.5})
    flat = build_loss(LOSSES, "ce+dice", 3, options={"smooth": 0.5, "label_smoothing": 0.1})
    for loss in (nested, dotted, flat):
        assert loss.parts[1].smooth == 0.5
    assert flat.parts[0].label_smoothing == 0.1


def test_ambiguous_flat_option_must_name_its_part():
    with pytest.raises(ConfigError, match="accepted by dice and tversky"):
        build_loss(LOSSES, "dice+tversky", 3, options={"smooth": 0.5})


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="has no option 'gama'; its options: gamma, alpha"):
        build_loss(LOSSES, "focal", 3, options={"gama": 2})
    with pytest.raises(ConfigError, match="no part of loss ce\\+dice has option 'gama'"):
        build_loss(LOSSES, "ce+dice", 3, options={"gama": 2})


def test_loss_options_are_read_from_the_factory_as_every_plugin_kind_reads_them():
    """One rule (segcli.factories.option_names): the options follow the two positional
    arguments whatever they are called; a factory taking **options takes any option."""
    from segcli.registry import Origin, Registry

    def positional_named_otherwise(classes, ignored, *, scale=1.0, class_pixels=None):
        return nn.CrossEntropyLoss(ignore_index=ignored)

    def any_option(num_classes, ignore_index, **options):
        assert options == {"anything": 3}
        return nn.CrossEntropyLoss(ignore_index=ignore_index)

    losses: Registry = Registry("loss")
    losses.add("named", positional_named_otherwise, "", Origin("test"))
    losses.add("open", any_option, "", Origin("test"))
    build_loss(losses, "open", 3, options={"anything": 3})
    with pytest.raises(ConfigError, match="has no option 'classes'; its options: scale$"):
        build_loss(losses, "named", 3, options={"classes": 4})
    with pytest.raises(ConfigError, match="accepted by named and open; say which"):
        build_loss(losses, "named+open", 3, options={"scale": 2.0})


def test_single_logit_is_known_before_building():
    assert is_single_logit(LOSSES, "bce+dice")
    assert not is_single_logit(LOSSES, "ce+dice")
    assert build_loss(LOSSES, "bce:1+dice:1", 2).single_logit


def test_ce_matches_torch_with_weights_and_smoothing():
    logits, target = _batch()
    ours = build_loss(
        LOSSES, "ce", 3, options={"class_weights": [1.0, 2.0, 0.5], "label_smoothing": 0.1}
    )
    reference = nn.CrossEntropyLoss(
        weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=255, label_smoothing=0.1
    )
    assert ours(logits, target) == pytest.approx(float(reference(logits, target)), abs=1e-6)


def test_ce_weights_from_pixel_counts():
    assert class_weights_from_pixels("inverse", [300, 100, 0]) == pytest.approx([4 / 9, 4 / 3, 0])
    assert class_weights_from_pixels("median", [600, 300, 100]) == pytest.approx([0.5, 1, 3])
    assert class_weights_from_pixels("enet", [1, 1])[0] == pytest.approx(1 / math.log(1.52))
    loss = build_loss(
        LOSSES, "ce", 3, options={"class_weights": "median"}, class_pixels=[600, 300, 100]
    )
    assert loss.parts[0].weight.tolist() == pytest.approx([0.5, 1, 3])


@pytest.mark.parametrize(
    ("options", "pixels", "message"),
    [
        ({"class_weights": "median"}, None, "needs the dataset's per-class pixel counts"),
        ({"class_weights": "mean"}, [1, 2, 3], "not a weighting"),
        ({"class_weights": [1.0, 2.0]}, None, "2 values for 3 classes"),
        ({"label_smoothing": 1.5}, None, "label_smoothing"),
    ],
)
def test_ce_option_errors(options, pixels, message):
    with pytest.raises(ConfigError, match=message):
        build_loss(LOSSES, "ce", 3, options=options, class_pixels=pixels)


def test_bce_refuses_many_classes_and_many_logits():
    with pytest.raises(ConfigError, match="two classes"):
        build_loss(LOSSES, "bce", 5)
    logits, target = _batch(channels=3, classes=2)
    with pytest.raises(DataError, match="exactly 1"):
        build_loss(LOSSES, "bce", 2)(logits, target)


def test_ce_on_a_single_logit_points_to_bce():
    logits, target = _batch(channels=1, classes=2)
    with pytest.raises(DataError, match="use bce"):
        build_loss(LOSSES, "ce", 2)(logits, target)


def _reference_lovasz_softmax(probabilities, labels):
    """Berman et al.'s reference code, with boolean filtering (fine outside the training loop)."""
    probabilities = probabilities.permute(0, 2, 3, 1).reshape(-1, probabilities.shape[1])
    labels = labels.reshape(-1)
    keep = labels != 255
    probabilities, labels = probabilities[keep], labels[keep]
    losses = []
    for c in range(probabilities.shape[1]):
        fg = (labels == c).float()
        if fg.sum() == 0:
            continue
        errors = (fg - probabilities[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        fg_sorted = fg[perm]
        gts = fg_sorted.sum()
        jaccard = 1 - (gts - fg_sorted.cumsum(0)) / (gts + (1 - fg_sorted).cumsum(0))
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        losses.append(torch.dot(errors_sorted, jaccard))
    return torch.stack(losses).mean()


def test_lovasz_softmax_matches_the_reference():
    logits, target = _batch(channels=4, classes=3, seed=3)  # class 3 absent: left out
    ours = build_lovasz(4)(logits, target)
    assert ours == pytest.approx(
        float(_reference_lovasz_softmax(logits.softmax(1), target)), abs=1e-6
    )


def test_dice_binary_and_multiclass_agree_for_two_classes_foreground():
    logits, target = _batch(channels=1, classes=2)
    value = build_loss(LOSSES, "dice", 2, options={"smooth": 1e-6})(logits, target)
    probability = torch.sigmoid(logits[:, 0])
    valid = target != 255
    truth = (target == 1) & valid
    intersection = (probability * truth).sum()
    expected = 1 - 2 * intersection / ((probability * valid).sum() + truth.sum())
    assert value == pytest.approx(float(expected), abs=1e-5)
