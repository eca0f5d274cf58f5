"""COVER's losses inside the method: which features the consistency loss compares, in which
direction they are aligned, and how the total is formed, against NumPy references.

A stub backbone maps each voxel's intensity to features by a fixed affine map. Linear
interpolation commutes with such a map wherever a sample's neighbours lie inside the image, so
for views with ``view_b = warp(view_a, phi_gt)`` the finest features satisfy
``F_b = warp(F_a, phi_gt)`` exactly on the valid mask: the consistency loss is zero there only
when view a's features are warped by ``phi_gt`` (not by ``-phi_gt``, not left unwarped).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from _support import oracles
from cover.methods.cover import CoverMethod
from cover.views import ViewConfig, ViewGenerator, ViewPair

WEIGHTS = torch.tensor([[1.0, 0.2], [-1.0, 0.9], [2.0, -0.7], [0.5, 0.1]])  # feature = W @ (x, 1)


class PointwiseBackbone(torch.nn.Module):
    """A two-level 'pyramid': per-voxel affine features of the image, and their 2x average pool."""

    spatial_dims = 2
    pyramid_channels = (4, 4)
    divisor = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (WEIGHTS[:, 0].view(1, -1, 1, 1) * x + WEIGHTS[:, 1].view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fine = self.features(x)
        coarse = F.avg_pool2d(fine, 2) * torch.tensor([1.0, -1.0, 0.5, 2.0]).view(1, 4, 1, 1)
        return [coarse, fine]


def method(vec_weight: float = 1.0, con_weight: float = 1.0) -> CoverMethod:
    torch.manual_seed(0)
    return CoverMethod(
        PointwiseBackbone(), heads=(1, 1), head_dim=4, window_radius=1, vec_weight=vec_weight, con_weight=con_weight
    )


def views(appearance: bool) -> ViewPair:
    config = ViewConfig.reference(2)
    if not appearance:
        config.noise_std_max = config.blur_sigma_max = config.brightness_std = 0.0
        config.contrast_range = (1.0, 1.0)
        config.max_blocks = 0
    grid = oracles.grid((48, 48))
    source = torch.from_numpy(0.5 + 0.45 * np.sin(grid[0] / 3.1) * np.cos(grid[1] / 4.3)).float()
    source = torch.stack([source, source.T.contiguous()])[:, None]
    return ViewGenerator(config, (32, 32))(source, torch.Generator().manual_seed(4))


def consistency_reference(feat_b: np.ndarray, feat_a: np.ndarray, phi: np.ndarray, mask: np.ndarray) -> float:
    """``1 - mean over valid voxels of cos(F_b(p), F_a(p + phi(p)))`` for a batch of ``(C, *S)``."""
    total, count = 0.0, 0.0
    for b in range(feat_b.shape[0]):
        aligned = oracles.warp(feat_a[b], phi[b])
        dot = (feat_b[b] * aligned).sum(0)
        norms = np.maximum(np.linalg.norm(feat_b[b], axis=0) * np.linalg.norm(aligned, axis=0), 1e-12)
        total += float((dot / norms * mask[b, 0]).sum())
        count += float(mask[b, 0].sum())
    return 1.0 - total / count


def test_consistency_loss_is_zero_only_when_view_a_features_are_warped_by_phi_gt():
    pair = views(appearance=False)
    assert 0.2 < float(pair.mask.mean()) < 0.95 and float(pair.phi_gt.abs().mean()) > 2.0
    losses = method()(pair)
    assert float(losses["loss_con"].detach()) < 1e-4
    backbone = PointwiseBackbone()
    with torch.no_grad():
        fa, fb = backbone.features(pair.view_a).numpy(), backbone.features(pair.view_b).numpy()
    phi, mask = pair.phi_gt.numpy(), pair.mask.numpy()
    assert consistency_reference(fb, fa, phi, mask) < 1e-4  # the reference agrees: F_b = warp(F_a, phi_gt)
    assert consistency_reference(fb, fa, -phi, mask) > 0.02  # the inverse warp is wrong
    assert consistency_reference(fb, fa, 0 * phi, mask) > 0.02  # so is no warp
    assert consistency_reference(fa, fb, phi, mask) > 0.02  # and warping view b's features instead


@pytest.mark.parametrize("weights", [(1.0, 1.0), (2.0, 3.0)])
def test_cover_losses_and_total_match_the_references(weights):
    """With appearance changes, both losses are non-zero: each and the weighted total are checked."""
    pair = views(appearance=True)
    model = method(*weights)
    losses = model(pair)
    with torch.no_grad():
        backbone = model.backbone
        fa, fb = backbone.features(pair.view_a).numpy(), backbone.features(pair.view_b).numpy()
        phi = model.predict_field(pair.view_a, pair.view_b).numpy()
    gt, mask = pair.phi_gt.numpy(), pair.mask.numpy()
    expected_con = consistency_reference(fb, fa, gt, mask)
    expected_vec = float((np.abs(phi - gt).sum(1, keepdims=True) * mask).sum() / mask.sum())
    assert expected_con > 0.01 and expected_vec > 1.0
    assert float(losses["loss_con"].detach()) == pytest.approx(expected_con, abs=1e-5)
    assert float(losses["loss_vec"].detach()) == pytest.approx(expected_vec, rel=1e-5)
    total = weights[0] * expected_vec + weights[1] * expected_con
    assert float(losses["loss"].detach()) == pytest.approx(total, rel=1e-5)


@pytest.mark.slow
def test_vicreg_recipe_at_384_squared_in_float16_equals_float32():
    """The default recipe at the paper's 2D crop, batch 1, under fp16 autocast: finite, within 1 % of float32.

    A narrow U-Net (8-32 channels) keeps the CPU's slow float16 convolutions to seconds; the
    variance/covariance reduction over 2 x 384^2 pixels is the part that overflowed.
    """
    from cover.config import resolve_pretrain_config
    from cover.models.networks import build_model
    from cover.views import ViewGenerator

    model_values = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}
    config = resolve_pretrain_config({"dim": 2, "size": 384, "batch_size": 1, "steps": 1, "model": model_values})
    torch.manual_seed(0)
    model = build_model(config)
    assert model.recipe == "vicreg"
    source = torch.rand(1, 1, 576, 576, generator=torch.Generator().manual_seed(1))
    views = ViewGenerator(config.views, config.size)(source, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(views)
        with torch.autocast("cpu", dtype=torch.float16):
            half = model(views)
    for key, value in full.items():
        assert torch.isfinite(half[key]), key
        assert abs(float(half[key]) - float(value)) <= 0.01 * abs(float(value)) + 1e-6, (key, half[key], value)
