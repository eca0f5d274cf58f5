"""Pseudo-subjects: seeded, folding-free deformations whose labels follow the image's field."""

import numpy as np
import torch

from cover.data.demo.pseudo_subjects import REGIONS_VARIATION, pseudo_subject
from cover.geometry import field_jacobian_determinant, warp


def _blocky_template(size=(40, 36)):
    """An asymmetric 2D template: intensity ramp and 5 label blocks of different sizes."""
    image = torch.linspace(0, 1, size[0] * size[1]).reshape(1, 1, *size)
    labels = torch.zeros(1, 1, *size)
    labels[..., 5:20, 4:15] = 1
    labels[..., 22:35, 4:12] = 2
    labels[..., 8:30, 18:32] = 3
    labels[..., 12:18, 22:26] = 4
    return image, labels


def _nearest_oracle(labels, phi):
    """Plain-loop nearest-neighbour warp: out[p] = labels[round(p + phi(p))], 0 outside the grid."""
    h, w = labels.shape
    out = np.zeros_like(labels)
    for i in range(h):
        for j in range(w):
            y, x = i + phi[0, i, j], j + phi[1, i, j]
            iy, ix = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
            if 0 <= iy < h and 0 <= ix < w:
                out[i, j] = labels[iy, ix]
    return out


def test_regions_pseudo_subject_is_seeded_diffeomorphic_and_labels_follow_its_field():
    image, labels = _blocky_template()
    draws = [pseudo_subject(image, labels, torch.Generator().manual_seed(s), REGIONS_VARIATION) for s in (3, 3, 4)]
    (a_img, a_lab, a_phi), (b_img, b_lab, b_phi), (c_img, _, c_phi) = draws
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab) and torch.equal(a_phi, b_phi)
    assert not torch.allclose(a_phi, c_phi) and not torch.allclose(a_img, c_img)
    assert a_phi.abs().max() > 2.0  # a large deformation, not a near-identity
    assert field_jacobian_determinant(a_phi).min() > 0  # folding-free
    oracle = _nearest_oracle(labels[0, 0].numpy(), a_phi[0].double().numpy())
    # Pixels whose sampling point lies within 1e-4 px of a rounding boundary may round either way.
    points = a_phi[0].double().numpy() + np.indices(labels.shape[2:])
    ambiguous = (np.abs(points - np.floor(points) - 0.5) < 1e-4).any(axis=0)
    assert (a_lab[0, 0].numpy() != oracle)[~ambiguous].sum() == 0
    assert (a_lab[0, 0].numpy() != oracle).mean() < 0.01
    assert torch.equal(a_lab, warp(labels, a_phi, mode="nearest"))
