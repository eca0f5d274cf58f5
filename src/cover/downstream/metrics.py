"""Segmentation and classification scores (MONAI / scikit-learn), per case and summarised.

Segmentation, per foreground class (background excluded), with the empty-class rule of
nnU-Net (:data:`EMPTY_CLASS_RULE`, also written into ``metrics.json`` and ``results.md``):

- Dice ``2|P ∩ G| / (|P| + |G|)`` (MONAI ``compute_dice``).
- HD95: the 95th percentile of the symmetric surface distances (MONAI
  ``compute_hausdorff_distance``, ``percentile=95``) in the image's spacing units (mm for
  files with geometry, pixels for plain images).
- A class absent from both the prediction and the label is not scored: Dice and HD95 are NaN
  and the case does not enter that class's means (never Dice 1).
- A class present in only one of them (missed, or predicted where the label has none) scores
  Dice 0 and the worst HD95, the diagonal of the image's extent ``sqrt(sum((n_i s_i)^2))``
  (the BraTS convention, 373.13 mm for 240x240x155 at 1 mm); MONAI's ``ignore_empty`` would
  instead drop a prediction on an empty label, i.e. not count a false positive.

So Dice and HD95 are computed on the same (case, class) pairs.

Classification: ROC AUC (binary: of the positive class; more classes: one-vs-rest macro
average) and accuracy; AUC is NaN when the labels hold one class only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.networks.utils import one_hot

EMPTY_CLASS_RULE = (
    "a class absent from both prediction and reference is not scored (Dice and HD95 NaN, left out of the means); "
    "a class in only one of them scores Dice 0 and HD95 = the image diagonal (worst case); "
    "per-case mean over the scored classes, per-class mean over the cases that score it"
)


def segmentation_scores(
    prediction: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    hd95: bool = True,
) -> dict[str, list[float]]:
    """Per-class Dice and HD95 of one case.

    Args:
        prediction: ``(*spatial)`` integer class map.
        label: ``(*spatial)`` integer class map.
        num_classes: ``K`` (background included).
        spacing: Voxel size per axis (``None``: 1).
        hd95: Also compute HD95 (slower).

    Returns:
        ``{"dice": [K-1 values], "hd95": [K-1 values]}`` for classes ``1 … K-1`` (no
        ``hd95`` entry when not asked for); NaN for a class absent from both maps.
    """
    pred = one_hot(prediction.long().cpu()[None, None], num_classes)
    true = one_hot(label.long().cpu()[None, None], num_classes)
    spatial = tuple(range(1, pred.ndim - 1))  # of pred[0]: (K, *spatial)
    in_pred = pred[0, 1:].sum(dim=spatial) > 0  # (K-1,)
    in_true = true[0, 1:].sum(dim=spatial) > 0
    scored = in_pred | in_true
    dice = compute_dice(pred, true, include_background=False, ignore_empty=False)[0]
    dice = torch.where(scored, dice, torch.full_like(dice, math.nan))
    if not hd95:
        return {"dice": [float(v) for v in dice]}
    with warnings.catch_warnings():
        # Known harmless, silenced by message (other warnings stay): MONAI warns about a class empty in one
        # map (its distance is replaced below), and its HD95 calls its own get_mask_edges with an argument
        # it deprecated (MONAI 1.5-1.6; nothing a caller can change).
        warnings.filterwarnings(
            "ignore", message=r"the (ground truth|prediction) of class \S+ is all 0", category=UserWarning
        )
        warnings.filterwarnings(
            "ignore", message=r"monai\.metrics\.utils get_mask_edges:always_return_as_numpy", category=FutureWarning
        )
        distances = compute_hausdorff_distance(
            pred, true, include_background=False, percentile=95, spacing=list(spacing) if spacing else None
        )[0].double()
    steps = [float(s) for s in spacing] if spacing else [1.0] * len(spatial)
    worst = math.sqrt(sum((n * s) ** 2 for n, s in zip(prediction.shape, steps, strict=True)))
    distances = torch.where(in_pred & in_true, distances, torch.full_like(distances, worst))
    distances = torch.where(scored, distances, torch.full_like(distances, math.nan))
    return {"dice": [float(v) for v in dice], "hd95": [float(v) for v in distances]}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation ignoring NaN; NaN when nothing is left."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std())


def classification_scores(probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """AUC and accuracy.

    Args:
        probabilities: ``(N, K)`` class probabilities.
        targets: ``(N,)`` class indices.

    Returns:
        ``{"auc", "accuracy"}``.
    """
    from sklearn.metrics import roc_auc_score

    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    accuracy = float((probabilities.argmax(axis=1) == targets).mean()) if len(targets) else math.nan
    present = np.unique(targets)
    auc = math.nan
    if len(present) >= 2:
        if probabilities.shape[1] == 2:
            auc = float(roc_auc_score(targets, probabilities[:, 1]))
        else:
            scores = probabilities[:, present]
            scores = scores / np.clip(scores.sum(axis=1, keepdims=True), 1e-12, None)
            labels = list(present) if len(present) > 2 else None
            auc = float(roc_auc_score(targets, scores if labels else scores[:, 1], multi_class="ovr", labels=labels))
    return {"auc": auc, "accuracy": accuracy}


def summarise(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and std over cases of each key of per-case rows (NaN ignored).

    Args:
        rows: One dict per case.
        keys: Columns to summarise.

    Returns:
        ``{key: {"mean", "std"}}``.
    """
    out = {}
    for key in keys:
        mean, std = mean_std([row[key] for row in rows])
        out[key] = {"mean": mean, "std": std}
    return out
