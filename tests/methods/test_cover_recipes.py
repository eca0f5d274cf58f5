"""COVER's loss recipes: each is its documented objective, and unknown names fail in one line."""

import numpy as np
import pytest
import torch
from tests.methods.test_contract import TINY, tiny_views

from cover.errors import ConfigError
from cover.geometry import warp
from cover.losses.masked import consistency_loss
from cover.methods import build_method
from cover.methods.cover import DEFAULT_RECIPE, RECIPES
from cover.nn.backbones import build_backbone


def recipe_method(recipe, dim=2, seed=0, **options):
    torch.manual_seed(seed)
    backbone = build_backbone("unet", dim, 1, channels=TINY.channels)
    return build_method("cover", backbone, TINY, {"recipe": recipe, **options})


def numpy_cosine_loss(fb, fa, mask):
    """1 - masked mean cosine, one pixel at a time."""
    fb, fa, mask = fb.detach().double().numpy(), fa.detach().double().numpy(), mask.numpy()
    total, count = 0.0, 0.0
    for index in np.ndindex(mask.shape[0], *mask.shape[2:]):
        b, spatial = index[0], index[1:]
        u, v = fb[(b, slice(None), *spatial)], fa[(b, slice(None), *spatial)]
        cos = u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-6)
        total += mask[(b, 0, *spatial)] * cos
        count += mask[(b, 0, *spatial)]
    return 1.0 - total / count


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_trains_the_backbone(recipe, dim):
    method = recipe_method(recipe, dim)
    views = tiny_views(dim)
    losses = method(views)
    assert set(method.logged) <= set(losses) and method.recipe == recipe
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    losses["loss"].backward()
    assert method.backbone.encoder[0][0].weight.grad.abs().sum() > 0


def test_paper_recipe_is_l_vec_plus_l_con_on_raw_finest_features():
    method = recipe_method("paper", vec_weight=1.0, con_weight=1.0)
    views = tiny_views(2)
    with torch.no_grad():
        losses = method(views)
        pyramid = method.backbone(torch.cat([views.view_a, views.view_b]))
        fa, fb = pyramid[-1][:2], pyramid[-1][2:]
        phi = method.head([f[:2] for f in pyramid], [f[2:] for f in pyramid])
    mask = views.mask.numpy()
    l1 = np.abs(phi.double().numpy() - views.phi_gt.double().numpy()).sum(axis=1, keepdims=True)
    l_vec = (l1 * mask).sum() / mask.sum()
    l_con = numpy_cosine_loss(fb, warp(fa, views.phi_gt), views.mask)
    assert abs(float(losses["loss_vec"]) - l_vec) < 1e-4
    assert abs(float(losses["loss_con"]) - l_con) < 1e-5
    assert abs(float(losses["loss"]) - (l_vec + l_con)) < 1e-4
    assert set(losses) == {"loss", "loss_vec", "loss_con"}


def test_centred_recipe_compares_features_without_their_spatial_mean():
    method = recipe_method("centred")
    views = tiny_views(2)
    with torch.no_grad():
        losses = method(views)
        pyramid = method.backbone(torch.cat([views.view_a, views.view_b]))
    fa, fb = pyramid[-1][:2].double(), pyramid[-1][2:].double()
    fa = fa - fa.mean(dim=(2, 3), keepdim=True)
    fb = fb - fb.mean(dim=(2, 3), keepdim=True)
    expected = numpy_cosine_loss(fb, warp(fa.float(), views.phi_gt), views.mask)
    assert abs(float(losses["loss_con"]) - expected) < 1e-5
    with torch.no_grad():
        paper = recipe_method("paper")(views)
    assert abs(float(paper["loss_con"]) - expected) > 1e-3  # a different objective


def test_predictor_recipe_stops_the_gradient_of_the_target_branch():
    method = recipe_method("predictor")
    assert method.predictor is not None and any(k.startswith("predictor.") for k in method.state_dict())
    views = tiny_views(2)
    pyramid_a, pyramid_b = method.encode_pair(views)
    finest_b = pyramid_b[-1].detach().requires_grad_(True)
    finest_a = pyramid_a[-1].detach().requires_grad_(True)
    loss = method._recipe_consistency(finest_a, finest_b, views)
    aligned = warp(finest_a.detach(), views.phi_gt)
    # Oracle: the two halves written out, with the targets as constants.
    expected = 0.5 * (
        numpy_cosine_loss(method.predictor(finest_b.detach()), aligned, views.mask)
        + numpy_cosine_loss(method.predictor(aligned), finest_b.detach(), views.mask)
    )
    assert abs(float(loss) - expected) < 1e-5
    # Only the predictor path carries gradient: the gradient w.r.t. view b's features equals
    # that of the first half alone (the second half's target is detached).
    grad_b, grad_a = torch.autograd.grad(loss, (finest_b, finest_a))
    half = 0.5 * consistency_loss(method.predictor(finest_b), aligned, views.mask)
    (grad_half,) = torch.autograd.grad(half, finest_b)
    torch.testing.assert_close(grad_b, grad_half)
    # Likewise view a's features get gradient only through the predictor of the second half.
    other = 0.5 * consistency_loss(method.predictor(warp(finest_a, views.phi_gt)), finest_b.detach(), views.mask)
    (grad_other,) = torch.autograd.grad(other, finest_a)
    torch.testing.assert_close(grad_a, grad_other)


def test_vicreg_recipe_adds_the_variance_and_covariance_terms():
    views = tiny_views(2)
    paper = recipe_method("paper")(views)
    vicreg = recipe_method("vicreg")(views)
    assert {"loss_var", "loss_cov"} <= set(vicreg)
    weights = RECIPES["vicreg"]
    expected = paper["loss"] + weights["var_weight"] * vicreg["loss_var"] + weights["cov_weight"] * vicreg["loss_cov"]
    torch.testing.assert_close(vicreg["loss"], expected)


def test_balanced_recipe_divides_l_vec_by_the_zero_field_error():
    views = tiny_views(2)
    method = recipe_method("balanced")
    with torch.no_grad():
        losses = method(views)
    mask = views.mask
    zero = float((views.phi_gt.abs().sum(dim=1, keepdim=True) * mask).sum() / mask.sum())
    expected = float(losses["loss_vec"]) / zero + float(losses["loss_con"])
    assert abs(float(losses["loss"]) - expected) < 1e-5


def test_options_override_the_recipe_and_bad_names_fail_in_one_line():
    method = recipe_method("vicreg", var_weight=0.5)
    assert method.var_weight == 0.5 and method.cov_weight == RECIPES["vicreg"]["cov_weight"]
    with pytest.raises(ConfigError, match="recipe: 'papr' is unknown \\(allowed: paper"):
        recipe_method("papr")
    with pytest.raises(ConfigError, match="'temperature' is not an option of method 'cover' \\(allowed: recipe"):
        recipe_method("paper", temperature=0.1)
    with pytest.raises(ConfigError, match="con_features: 'fancy' is not allowed"):
        recipe_method("paper", con_features="fancy")
    assert DEFAULT_RECIPE in RECIPES
