"""Training augmentation: flips act only along ``flip_axes``; the default draws are unchanged."""

from __future__ import annotations

import torch

from cover.downstream.augment import augment_batch
from cover.downstream.config import AugmentConfig

FLIPS_ONLY = {"rotation_deg": 0.0, "shear_deg": 0.0, "scale_range": (1.0, 1.0), "contrast_range": (1.0, 1.0)}
FLIPS_ONLY |= {"brightness": 0.0, "noise_std": 0.0}


def test_flips_act_only_along_flip_axes():
    images = torch.arange(2 * 1 * 5 * 7, dtype=torch.float32).reshape(2, 1, 5, 7)  # no symmetry
    labels = torch.arange(2 * 5 * 7).reshape(2, 5, 7) % 6
    config = AugmentConfig(flip_prob=1.0, flip_axes=(1,), **FLIPS_ONLY)
    out, out_labels = augment_batch(images, labels, config, torch.Generator().manual_seed(0))
    assert torch.allclose(out, images.flip(3)) and torch.equal(out_labels, labels.flip(2))
    config = AugmentConfig(flip_prob=1.0, flip_axes=(), **FLIPS_ONLY)
    out, out_labels = augment_batch(images, labels, config, torch.Generator().manual_seed(0))
    assert torch.allclose(out, images) and torch.equal(out_labels, labels)


def test_unset_flip_prob_draws_like_the_former_default_and_flip_axes_keeps_the_draws():
    images = torch.randn(16, 1, 12, 10, generator=torch.Generator().manual_seed(1))
    labels = (images[:, 0] > 0).long() + (images[:, 0] > 1).long()

    def run(**flips):
        return augment_batch(images, labels, AugmentConfig(**flips), torch.Generator().manual_seed(5))

    unset, half = run(), run(flip_prob=0.5)  # the full default augmentation, flip_prob unset vs the old 0.5
    assert torch.equal(unset[0], half[0]) and torch.equal(unset[1], half[1])
    # Oracle: one uniform draw per sample and axis, in axis order, flip where it is below 0.5;
    # an axis left out of flip_axes still draws, so the other axes' flips stay the same.
    draws = torch.Generator().manual_seed(5)
    along = [torch.rand(16, generator=draws) < 0.5 for _ in range(2)]
    assert 0 < int(along[0].sum()) < 16 and 0 < int(along[1].sum()) < 16
    for axes in ((0, 1), (1,), (0,)):
        out, out_labels = run(flip_prob=0.5, flip_axes=axes, **FLIPS_ONLY)
        for i in range(16):
            expected, expected_labels = images[i], labels[i]
            for axis in axes:
                if along[axis][i]:
                    expected, expected_labels = expected.flip(axis + 1), expected_labels.flip(axis)
            # the intensity step (contrast 1 about the mean) may move the last bit
            assert torch.allclose(out[i], expected, atol=1e-6) and torch.equal(out_labels[i], expected_labels)
