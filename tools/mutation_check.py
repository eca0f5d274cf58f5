"""Mutation check: inject known method bugs into a copy of the project and run the tests that should notice.

Each mutant replaces one exact snippet of one source file by a wrong variant (a swapped
composition order, a dropped warp, another corner convention, ...) and names the few tests
that must fail for it. The check copies ``src/``, ``tests/`` and ``pyproject.toml`` into a
temporary folder per worker, applies one mutant at a time there (never in the working tree),
runs ``pytest -x`` on the mutant's tests with ``PYTHONPATH=<copy>/src`` and restores the file.

Verdicts: ``killed`` (the tests failed), ``SURVIVED`` (they passed: the tests miss this bug),
``STALE`` (the snippet no longer occurs exactly once in the file: the code moved, update the
mutant), ``ERROR`` (pytest collected nothing or could not start). The unmutated copy is run
first on the union of all selected tests; it must pass, or every verdict would be meaningless.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python tools/mutation_check.py              # all mutants, 2 workers
    python tools/mutation_check.py --only vpa-,resize-             # mutants whose name contains either
    python tools/mutation_check.py --list                          # names and files only

Exit status 0 only when every mutant is killed (or listed in ``EQUIVALENT`` with its reason).

Cost: one pytest process per mutant, mostly start-up and imports. Measured 2026-12-01 with 51
mutants: 461 s of CPU time in all (``/usr/bin/time -v``: 421 s user + 41 s system), which
suggests about 4 minutes on 2 idle cores (estimated, not measured: the machine was never idle);
28 minutes of wall time on the shared 2-core machine under a load average above 10.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One injected bug.

    Attributes:
        name: Short identifier.
        file: Path relative to the repository root.
        original: Exact snippet that must occur once in ``file``.
        replacement: The wrong variant.
        tests: pytest node ids / paths (relative to the root) that must fail.
        why: What the bug means.
    """

    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    why: str = ""


GEOMETRY = "src/cover/geometry.py"
VPA = "src/cover/nn/vpa.py"
MOV = "src/cover/nn/mov.py"
UNET = "src/cover/nn/unet.py"
VIEWS = "src/cover/views/base.py"
AUTHORS_VIEWS = "src/cover/views/authors.py"
COVER = "src/cover/methods/cover.py"
DENSE = "src/cover/methods/dense_infonce.py"
INFONCE = "src/cover/losses/infonce.py"
LOSSES = "src/cover/losses/masked.py"
METRICS = "src/cover/downstream/metrics.py"
INFERENCE = "src/cover/downstream/inference.py"
REGISTER = "src/cover/registration/pipeline.py"
REGISTER_FIT = "src/cover/registration/fit.py"

T_GEOMETRY = "tests/test_geometry.py"
T_VPA = "tests/nn/test_vpa.py"
T_MOV = "tests/nn/test_mov.py"
T_UNET = "tests/nn/test_unet.py"
T_VIEWS = "tests/test_views.py"
T_AUTHORS_VIEWS = "tests/test_authors_views.py"
T_COVER = "tests/methods/test_cover.py"
T_RECIPES = "tests/methods/test_cover_recipes.py"
T_LOSSES = "tests/losses/test_masked.py"
T_INFONCE = "tests/losses/test_infonce.py"
T_BASELINES = "tests/methods/test_baselines.py"
T_REGISTER = "tests/registration/test_pipeline.py"
T_EVALUATE = "tests/downstream/test_evaluate.py"
T_METRICS = "tests/downstream/test_metrics.py"
T_INFERENCE = "tests/downstream/test_inference.py"

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ VPA (cover.nn.vpa)
    Mutant(
        "vpa-compose-order-swapped",
        VPA,
        "phi = residual if phi is None else residual + warp(resize_field(phi, finer), residual)",
        "phi = residual if phi is None else resize_field(phi, finer) + warp(residual, resize_field(phi, finer))",
        (T_VPA,),
        "coarse-to-fine composition in the other order",
    ),
    Mutant(
        "vpa-prewarp-dropped",
        VPA,
        "feat_a = pyramid_a[level] if phi is None else warp(pyramid_a[level], phi)",
        "feat_a = pyramid_a[level]",
        (T_VPA,),
        "view a's features not warped by the current estimate",
    ),
    Mutant(
        "vpa-last-level-sum",
        VPA,
        "phi = residual if phi is None else residual + warp(phi, residual)",
        "phi = residual if phi is None else residual + phi",
        (T_VPA,),
        "sum instead of composition at the finest level",
    ),
    Mutant(
        "vpa-residual-not-doubled",
        VPA,
        "residual = resize_field(residual, finer)",
        "residual = resize_field(residual, finer) / 2",
        (T_VPA,),
        "up-sampled residual keeps coarse-voxel units",
    ),
    # ------------------------------------------------------------ geometry (cover.geometry)
    Mutant(
        "resize-corner-convention",
        GEOMETRY,
        "resized = F.interpolate(phi, size=size, mode=linear_mode(ndim), align_corners=False)",
        "resized = F.interpolate(phi, size=size, mode=linear_mode(ndim), align_corners=True)",
        (T_GEOMETRY + "::test_resized_field_of_an_affine_map_is_the_same_map_on_the_new_grid",),
        "field resizing with the other corner convention",
    ),
    Mutant(
        "resize-values-not-rescaled",
        GEOMETRY,
        "    return resized * factors.view((1, ndim) + (1,) * ndim)",
        "    return resized",
        (T_GEOMETRY,),
        "a 2x up-sampled field keeps coarse-voxel values",
    ),
    Mutant(
        "resize-factor-inverted",
        GEOMETRY,
        "[new / old for new, old in zip(size, phi.shape[2:], strict=True)]",
        "[old / new for new, old in zip(size, phi.shape[2:], strict=True)]",
        (T_GEOMETRY,),
        "values divided instead of multiplied by the size ratio",
    ),
    Mutant(
        "compose-order-swapped",
        GEOMETRY,
        "    return u + warp(v, u)",
        "    return v + warp(u, v)",
        (T_GEOMETRY + "::test_compose_applies_u_first_then_looks_up_v",),
        "compose(u, v) applies v first",
    ),
    Mutant(
        "warp-sign",
        GEOMETRY,
        "return sample_at(x, grid + phi, mode=mode)",
        "return sample_at(x, grid - phi, mode=mode)",
        (T_GEOMETRY,),
        "warp reads x(p - phi(p))",
    ),
    Mutant(
        "sample-axis-order",
        GEOMETRY,
        "grid = normalised.movedim(1, -1).flip(-1)",
        "grid = normalised.movedim(1, -1)",
        (T_GEOMETRY,),
        "grid_sample's (x, y) order not reversed from array axes",
    ),
    Mutant(
        "sample-align-corners",
        GEOMETRY,
        "        align_corners=True,\n    )\n    return out.to(x.dtype)",
        "        align_corners=False,\n    )\n    return out.to(x.dtype)",
        (T_GEOMETRY,),
        "voxel centres not at integer coordinates",
    ),
    Mutant(
        "nearest-becomes-linear",
        GEOMETRY,
        'mode="bilinear" if mode == "linear" else "nearest",',
        'mode="bilinear",',
        (T_GEOMETRY + "::test_warp_nearest_reads_the_nearest_voxel_of_a_varying_field",),
        "label maps interpolated linearly",
    ),
    Mutant(
        "affine-about-origin",
        GEOMETRY,
        "moved = matrix @ rel + (center + translation).unsqueeze(-1)",
        "moved = matrix @ flat + translation.unsqueeze(-1)",
        (T_GEOMETRY + "::test_affine_field_reproduces_affine_map_2d_and_3d",),
        "affine map about voxel 0 instead of the centre",
    ),
    # ------------------------------------------------------------------ U-Net (cover.nn.unet)
    Mutant(
        "unet-groupnorm-groups",
        UNET,
        "groups = max(1, out_channels // 8)",
        "groups = max(1, out_channels // 4)",
        (T_UNET,),
        "GroupNorm with C/4 groups instead of C/8",
    ),
    Mutant(
        "unet-average-pooling",
        UNET,
        "self.pool = (nn.MaxPool2d, nn.MaxPool3d)[spatial_dims - 2](2)",
        "self.pool = (nn.AvgPool2d, nn.AvgPool3d)[spatial_dims - 2](2)",
        (T_UNET,),
        "average instead of max pooling",
    ),
    Mutant(
        "unet-upsampling-corners",
        UNET,
        "x = F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=False)",
        "x = F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=True)",
        (T_UNET,),
        "decoder up-sampling with the corner-aligned convention",
    ),
    Mutant(
        "unet-skip-order",
        UNET,
        "x = block(torch.cat([x, skip], dim=1))",
        "x = block(torch.cat([skip, x], dim=1))",
        (T_UNET,),
        "skip features concatenated first (weights read the wrong channels)",
    ),
    # ---------------------------------------------------------------------- MoV (cover.nn.mov)
    Mutant(
        "mov-no-temperature",
        MOV,
        "qc, kc = _padded(query, grid, rows, 1.0 / math.sqrt(dim)), _padded(key, grid, rows)",
        "qc, kc = _padded(query, grid, rows, 1.0), _padded(key, grid, rows)",
        (T_MOV + "::test_mov_float32_matches_oracle",),
        "scores not divided by sqrt(d)",
    ),
    Mutant(
        "mov-heads-summed",
        MOV,
        "field = vectors.view(batch, heads, ndim, grid.origins).mean(dim=1)",
        "field = vectors.view(batch, heads, ndim, grid.origins).sum(dim=1)",
        (T_MOV + "::test_mov_float32_matches_oracle",),
        "head vectors summed instead of averaged",
    ),
    Mutant(
        "mov-offsets-negated",
        MOV,
        "axis = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)",
        "axis = -torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)",
        (T_MOV + "::test_mov_recovers_a_known_shift",),
        "window template negated (the loop oracle shares it, the known shift does not)",
    ),
    Mutant(
        "mov-query-key-swapped",
        MOV,
        "return mixture_of_vectors(self.project(feat_b), self.project(feat_a), self.heads, self.radius, self.schedule)",
        "return mixture_of_vectors(self.project(feat_a), self.project(feat_b), self.heads, self.radius, self.schedule)",
        (T_VPA + "::test_vpa_with_mov_levels_matches_the_loop_mov_reference",),
        "queries from view a, keys from view b",
    ),
    Mutant(
        "mov-fused-no-temperature",
        MOV,
        "queries = query.reshape(rows, dim, *spatial) * (1.0 / math.sqrt(dim))",
        "queries = query.reshape(rows, dim, *spatial) * 1.0",
        (T_MOV + "::test_mov_float32_matches_oracle",),
        "fused schedule: scores not divided by sqrt(d)",
    ),
    Mutant(
        "mov-fused-no-border-mask",
        MOV,
        "scores = (windows * here).sum(1).flatten(ndim + 1) + bias[first:last]",
        "scores = (windows * here).sum(1).flatten(ndim + 1)",
        (T_MOV + "::test_mov_float32_matches_oracle",),
        "fused schedule: offsets that leave the image are not masked out",
    ),
    Mutant(
        "mov-fused-heads-summed",
        MOV,
        "return vectors.view(batch, heads, *spatial, ndim).mean(dim=1).movedim(-1, 1)",
        "return vectors.view(batch, heads, *spatial, ndim).sum(dim=1).movedim(-1, 1)",
        (T_MOV + "::test_mov_float32_matches_oracle",),
        "fused schedule: head vectors summed instead of averaged",
    ),
    Mutant(
        "mov-fused-slab-bias-from-zero",
        MOV,
        "scores = (windows * here).sum(1).flatten(ndim + 1) + bias[first:last]",
        "scores = (windows * here).sum(1).flatten(ndim + 1) + bias[: last - first]",
        (T_MOV + "::test_fused_mov_in_slabs_matches_the_oracle",),
        "fused schedule: every slab takes the first slab's border mask",
    ),
    # --------------------------------------------------------------------- views (cover.views)
    Mutant(
        "views-b-read-backwards",
        VIEWS,
        "view_b = sample_at(source, crop_coords + phi_gt)",
        "view_b = sample_at(source, crop_coords - phi_gt)",
        (T_VIEWS,),
        "view b made with the inverse displacement",
    ),
    Mutant(
        "views-a-window-shifted",
        VIEWS,
        "view_a = sample_at(self.appearance(source, generator), crop_coords)",
        "view_a = sample_at(self.appearance(source, generator), crop_coords + 1)",
        (T_VIEWS,),
        "view a cropped one voxel off view b's window",
    ),
    Mutant(
        "views-mask-upper-bound",
        VIEWS,
        "upper = torch.tensor(self.size, device=dev, dtype=phi_gt.dtype).view(1, ndim, *([1] * ndim)) - 1",
        "upper = torch.tensor(self.size, device=dev, dtype=phi_gt.dtype).view(1, ndim, *([1] * ndim))",
        (T_VIEWS,),
        "mask accepts targets up to the size instead of the last voxel",
    ),
    Mutant(
        "views-elastic-ignored",
        VIEWS,
        "        return phi + random_elastic_field(",
        "        return phi + 0 * random_elastic_field(",
        (T_VIEWS + "::test_elastic_views_have_a_non_affine_phi_gt",),
        "elastic setting has no effect",
    ),
    Mutant(
        "views-appearance-in-view-b",
        VIEWS,
        "view_b = sample_at(source, crop_coords + phi_gt)",
        "view_b = sample_at(self.appearance(source), crop_coords + phi_gt)",
        (T_VIEWS + "::test_appearance_changes_reach_view_a_only",),
        "view b gets noise, blur and in-painting too",
    ),
    Mutant(
        "views-authors-rotations-added",
        AUTHORS_VIEWS,
        "rotation_matrices(draws.angles[:, 0] - draws.angles[:, 1], 2)",
        "rotation_matrices(draws.angles[:, 0] + draws.angles[:, 1], 2)",
        (T_AUTHORS_VIEWS,),
        "authors' style: the two rotations collapse to the sum of the angles instead of the difference",
    ),
    Mutant(
        "views-authors-centre",
        AUTHORS_VIEWS,
        "[s // 2 - (s - 1) / 2 for s in src_size]",
        "[0.0 for s in src_size]",
        (T_AUTHORS_VIEWS,),
        "authors' style: the map about (s - 1) / 2 only, without the release's half-voxel re-centring",
    ),
    Mutant(
        "views-authors-shear-transposed",
        AUTHORS_VIEWS,
        "return rotation @ torch.diag_embed(draws.scales) @ shear",
        "return rotation @ torch.diag_embed(draws.scales) @ shear.transpose(1, 2)",
        (T_AUTHORS_VIEWS,),
        "authors' style: the shear terms in the other off-diagonal places",
    ),
    Mutant(
        "views-authors-contrast-per-sample",
        AUTHORS_VIEWS,
        "mean = x.mean()  # over the whole batch, as the release does",
        "mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)",
        (T_AUTHORS_VIEWS,),
        "authors' style: contrast about each image's mean instead of the batch's",
    ),
    Mutant(
        "views-authors-blocks-before-contrast",
        AUTHORS_VIEWS,
        "    x = (x - mean) * (low + (high - low) * scalar()) + mean\n",
        "    x = noise_blocks(config, x, generator) if config.max_blocks > 0 else x\n"
        "    x = (x - mean) * (low + (high - low) * scalar()) + mean\n",
        (T_AUTHORS_VIEWS,),
        "authors' style: noise blocks drawn before the contrast change",
    ),
    # ------------------------------------------------------------- COVER losses (cover.methods)
    Mutant(
        "con-warp-inverse",
        COVER,
        "aligned = warp(pyramid_a[-1].float(), views.phi_gt)",
        "aligned = warp(pyramid_a[-1].float(), -views.phi_gt)",
        (T_COVER,),
        "consistency aligns view a's features the wrong way",
    ),
    Mutant(
        "con-warp-dropped",
        COVER,
        "aligned = warp(pyramid_a[-1].float(), views.phi_gt)",
        "aligned = pyramid_a[-1].float()",
        (T_COVER,),
        "consistency compares unaligned features",
    ),
    Mutant(
        "con-features-of-view-a-twice",
        COVER,
        "loss_con = self.consistency_loss(pyramid_b[-1], aligned, views.mask)",
        "loss_con = self.consistency_loss(pyramid_a[-1], aligned, views.mask)",
        (T_COVER,),
        "consistency compares view a with itself",
    ),
    Mutant(
        "con-dropped-from-total",
        COVER,
        "loss = self.vec_weight * vec_term + self.con_weight * loss_con",
        "loss = self.vec_weight * vec_term",
        (T_COVER,),
        "the consistency loss is logged but not optimised",
    ),
    Mutant(
        "recipe-con-warp-inverse",
        COVER,
        "aligned = warp(finest_a.float(), views.phi_gt)",
        "aligned = warp(finest_a.float(), -views.phi_gt)",
        (T_RECIPES + "::test_centred_recipe_compares_features_without_their_spatial_mean",),
        "the non-paper recipes align view a's features the wrong way",
    ),
    Mutant(
        "recipe-predictor-target-not-stopped",
        COVER,
        "forward = self.consistency_loss(self.predictor(finest_b), aligned.detach(), views.mask)",
        "forward = self.consistency_loss(self.predictor(finest_b), aligned, views.mask)",
        (T_RECIPES + "::test_predictor_recipe_stops_the_gradient_of_the_target_branch",),
        "gradient flows through the predictor recipe's target branch",
    ),
    Mutant(
        "predict-field-views-swapped",
        COVER,
        "ViewPair(view_a, view_b, view_a, view_a)",
        "ViewPair(view_b, view_a, view_a, view_a)",
        (T_COVER + "::test_cover_losses_and_total_match_the_references",),
        "predict_field answers the inverse question",
    ),
    Mutant(
        "vector-loss-squared",
        LOSSES,
        "error = (phi.float() - phi_gt.float()).abs().sum(dim=1, keepdim=True)",
        "error = (phi.float() - phi_gt.float()).pow(2).sum(dim=1, keepdim=True)",
        (T_LOSSES,),
        "L2 squared instead of L1",
    ),
    Mutant(
        "masked-mean-over-all-voxels",
        LOSSES,
        "return (values * mask).sum() / mask.sum().clamp(min=eps)",
        "return (values * mask).mean()",
        (T_LOSSES,),
        "mean over every voxel instead of the valid ones",
    ),
    Mutant(
        "consistency-mask-ignored",
        LOSSES,
        "return 1.0 - masked_mean(cosine, mask)",
        "return 1.0 - cosine.mean()",
        (T_LOSSES,),
        "invalid voxels enter the consistency loss",
    ),
    # ---------------------------------------------------- baselines (cover.methods, same views)
    Mutant(
        "dense-infonce-partner-wrong-way",
        DENSE,
        "coords_a = coords_b + phi",
        "coords_a = coords_b - phi",
        (T_BASELINES + "::test_dense_infonce_pairs_corresponding_pixels_through_phi_gt",),
        "positives read at p - phi_gt(p)",
    ),
    Mutant(
        "dense-infonce-level-corner-convention",
        DENSE,
        "level_coords = (coords + 0.5) / factor - 0.5",
        "level_coords = coords / factor",
        (T_BASELINES,),
        "coarse levels read with the corner-aligned convention",
    ),
    Mutant(
        "nt-xent-temperature-multiplied",
        INFONCE,
        "logits = local @ z.T / temperature",
        "logits = local @ z.T * temperature",
        (T_INFONCE, T_BASELINES),
        "similarities multiplied by the temperature",
    ),
    # ------------------------------------------------------- downstream metrics (Dice, HD95, AUC)
    Mutant(
        "dice-absent-class-scores-one",
        METRICS,
        "dice = torch.where(scored, dice, torch.full_like(dice, math.nan))",
        "dice = torch.where(scored, dice, torch.ones_like(dice))",
        (T_METRICS,),
        "a class absent from prediction and label scores Dice 1",
    ),
    Mutant(
        "hd95-is-hd100",
        METRICS,
        "pred, true, include_background=False, percentile=95,",
        "pred, true, include_background=False, percentile=100,",
        (T_METRICS,),
        "the maximum surface distance instead of its 95th percentile",
    ),
    Mutant(
        "hd95-spacing-ignored",
        METRICS,
        "spacing=list(spacing) if spacing else None",
        "spacing=None",
        (T_METRICS,),
        "HD95 in voxels whatever the spacing",
    ),
    Mutant(
        "hd95-one-sided-class-not-worst",
        METRICS,
        "distances = torch.where(in_pred & in_true, distances, torch.full_like(distances, worst))",
        "distances = torch.where(in_pred | in_true, distances, torch.full_like(distances, worst))",
        (T_METRICS,),
        "a missed or spurious class keeps MONAI's inf/NaN instead of the worst distance",
    ),
    Mutant(
        "hd95-worst-ignores-spacing",
        METRICS,
        "worst = math.sqrt(sum((n * s) ** 2 for n, s in zip(prediction.shape, steps, strict=True)))",
        "worst = math.sqrt(sum(n**2 for n, s in zip(prediction.shape, steps, strict=True)))",
        (T_METRICS,),
        "the worst-case distance in voxels, not in spacing units",
    ),
    Mutant(
        "mean-counts-nan",
        METRICS,
        "array = array[~np.isnan(array)]",
        "array = np.nan_to_num(array)",
        (T_METRICS,),
        "unscored (NaN) cases enter the means as 0",
    ),
    Mutant(
        "auc-of-the-negative-class",
        METRICS,
        "auc = float(roc_auc_score(targets, probabilities[:, 1]))",
        "auc = float(roc_auc_score(targets, probabilities[:, 0]))",
        (T_METRICS,),
        "binary AUC scored with the negative class's probability",
    ),
    Mutant(
        "auc-multiclass-one-vs-one",
        METRICS,
        'multi_class="ovr"',
        'multi_class="ovo"',
        (T_METRICS,),
        "multi-class AUC averaged over class pairs, not one-vs-rest",
    ),
    # ------------------------------------------------ whole-image inference (cover.downstream)
    Mutant(
        "inference-pads-at-start",
        INFERENCE,
        "pads += [0, (-size) % divisor]",
        "pads += [(-size) % divisor, 0]",
        (T_EVALUATE + "::test_sliding_window_and_padding_give_the_whole_image_result",),
        "padding before the image while cropping after",
    ),
    Mutant(
        "inference-window-not-training-size",
        INFERENCE,
        "x, tuple(patch_size), sw_batch_size, network,",
        "x, tuple(p // 2 for p in patch_size), sw_batch_size, network,",
        (T_INFERENCE,),
        "sliding windows smaller than the training size",
    ),
    # ------------------------------------------------------------- registration (cover register)
    Mutant(
        "register-network-field-zeroed",
        REGISTER,
        "phi = crop_padding(model.predict_field(moving_p, fixed_p), pads)",
        "phi = 0 * crop_padding(model.predict_field(moving_p, fixed_p), pads)",
        (T_REGISTER + "::test_padding_warp_and_dice_with_a_known_field",),
        "the network's field is thrown away (refinement alone would still register)",
    ),
    Mutant(
        "register-fixed-moving-swapped",
        REGISTER,
        "phi = crop_padding(model.predict_field(moving_p, fixed_p), pads)",
        "phi = crop_padding(model.predict_field(fixed_p, moving_p), pads)",
        (T_REGISTER + "::test_network_field_alone_beats_the_identity_on_known_deformations",),
        "the network is asked for the inverse field",
    ),
    Mutant(
        "refine-start-not-rescaled",
        REGISTER_FIT,
        "start = pool(phi.detach(), coarse) * factors.view(1, ndim, *[1] * ndim)",
        "start = pool(phi.detach(), coarse)",
        (T_REGISTER + "::test_refinement_starts_from_the_network_field_on_its_coarse_grid",),
        "the coarse refinement grid starts with full-grid voxel values",
    ),
    Mutant(
        "register-affine-not-applied-to-field",
        REGISTER_FIT,
        'return base + torch.einsum("ij,bj...->bi...", matrix, phi)',
        "return base + phi",
        (T_REGISTER + "::test_affine_then_network_field_is_the_exact_composition",),
        "network field not mapped through the affine's linear part",
    ),
]

# Mutants known to be undetectable by any test because they do not change behaviour, with the
# reason. None at present.
EQUIVALENT: dict[str, str] = {}


def copy_project(dest: Path) -> None:
    """Copy what the tests need (``src/``, ``tests/``, ``pyproject.toml``) into ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
    for name in ("src", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def run_pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """``pytest -x -q`` in ``copy`` with its own sources first on the path; (return code, output tail)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(copy / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    return done.returncode, (done.stdout + done.stderr)[-2000:]


def check(mutant: Mutant, copy: Path, timeout: float) -> tuple[str, float, str]:
    """Apply one mutant in ``copy``, run its tests, restore the file; (verdict, seconds, detail)."""
    path = copy / mutant.file
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        return "STALE", 0.0, f"snippet found {count} times in {mutant.file}"
    tic = time.monotonic()
    path.write_text(text.replace(mutant.original, mutant.replacement))
    try:
        code, output = run_pytest(copy, mutant.tests, timeout)
    finally:
        path.write_text(text)
    seconds = time.monotonic() - tic
    if code == -1:
        return "killed", seconds, "timeout"
    if code == 0:
        return ("equivalent" if mutant.name in EQUIVALENT else "SURVIVED"), seconds, ""
    if code in (1,):
        failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
        return "killed", seconds, failed[0] if failed else ""
    return "ERROR", seconds, output.strip().splitlines()[-1] if output.strip() else f"pytest exit {code}"


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit status 0 only if every selected mutant is killed (or known equivalent)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run mutants whose name contains this text (comma-separated: any)")
    parser.add_argument("--workers", type=int, default=2, help="mutants run in parallel (default 2)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per pytest run")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = parser.parse_args(argv)
    wanted = [part for part in args.only.split(",") if part] or [""]
    selected = [m for m in MUTANTS if any(part in m.name for part in wanted)]
    if args.list:
        for m in selected:
            print(f"{m.name:38s} {m.file}: {m.why}")
        return 0
    if not selected:
        print(f"no mutant name contains {args.only!r}", file=sys.stderr)
        return 2
    workers = max(1, min(args.workers, len(selected)))
    with tempfile.TemporaryDirectory(prefix="cover-mutants-") as tmp:
        copies = [Path(tmp) / f"w{i}" for i in range(workers)]
        for copy in copies:
            copy_project(copy)
        if not args.no_baseline:
            union = tuple(dict.fromkeys(t for m in selected for t in m.tests))
            tic = time.monotonic()
            code, output = run_pytest(copies[0], union, args.timeout * 2)
            if code != 0:
                print(f"baseline: the unmutated tests fail (pytest exit {code}); fix them first:\n{output}")
                return 2
            print(f"baseline: {len(union)} test selections pass unmutated ({time.monotonic() - tic:.0f} s)")
        free = list(copies)
        results: dict[str, tuple[str, float, str]] = {}

        def job(mutant: Mutant) -> None:
            copy = free.pop()
            try:
                results[mutant.name] = check(mutant, copy, args.timeout)
            finally:
                free.append(copy)
            verdict, seconds, detail = results[mutant.name]
            print(f"{verdict:10s} {mutant.name:38s} {seconds:5.0f} s  {detail[:90]}", flush=True)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(job, selected))
    counts: dict[str, int] = {}
    for verdict, _, _ in results.values():
        counts[verdict] = counts.get(verdict, 0) + 1
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" (of {len(selected)})")
    for name, reason in EQUIVALENT.items():
        if name in results:
            print(f"equivalent {name}: {reason}")
    bad = [name for name, (verdict, _, _) in results.items() if verdict not in ("killed", "equivalent")]
    if bad:
        print("not killed: " + ", ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
