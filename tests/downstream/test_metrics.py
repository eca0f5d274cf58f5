"""Dice and HD95 against plain-loop oracles, with the empty-class rule of ``cover.downstream.metrics``."""

import itertools
import math

import numpy as np
import pytest
import torch

from cover.downstream.metrics import EMPTY_CLASS_RULE, classification_scores, mean_std, segmentation_scores, summarise


def surface(mask):
    """Voxels of ``mask`` with a face neighbour outside it (or on the array border)."""
    points = []
    for index in zip(*np.nonzero(mask), strict=True):
        for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
            neighbour = list(index)
            neighbour[axis] += step
            if not 0 <= neighbour[axis] < mask.shape[axis] or not mask[tuple(neighbour)]:
                points.append(index)
                break
    return np.array(points, dtype=float)


def hd95_oracle(a, b, spacing):
    """max over both directions of the 95th percentile of each surface point's nearest distance."""
    pa, pb = surface(a) * spacing, surface(b) * spacing
    directed = []
    for source, target in ((pa, pb), (pb, pa)):
        nearest = [min(math.dist(p, q) for q in target) for p in source]
        directed.append(np.percentile(nearest, 95))
    return max(directed)


def dice_oracle(a, b):
    both = sum(1 for x, y in zip(a.ravel(), b.ravel(), strict=True) if x and y)
    return 2 * both / (int(a.sum()) + int(b.sum()))


def test_empty_classes_follow_the_documented_rule_in_2d():
    label = np.zeros((10, 14), dtype=np.int64)
    pred = np.zeros_like(label)
    label[1:5, 2:7] = 1  # class 1 in both, shifted
    pred[2:6, 2:8] = 1
    pred[7:9, 9:12] = 2  # class 2 only predicted (false positive)
    label[6:9, 1:4] = 3  # class 3 only in the label (missed)
    # class 4 in neither
    scores = segmentation_scores(torch.from_numpy(pred), torch.from_numpy(label), 5, spacing=(2.0, 0.5))
    diagonal = math.hypot(10 * 2.0, 14 * 0.5)
    expected_dice = dice_oracle(pred == 1, label == 1)
    assert expected_dice == pytest.approx(2 * 15 / (24 + 20))
    assert scores["dice"][:3] == pytest.approx([expected_dice, 0.0, 0.0])
    assert math.isnan(scores["dice"][3])  # never 1.0
    assert scores["hd95"][0] == pytest.approx(hd95_oracle(pred == 1, label == 1, np.array([2.0, 0.5])))
    assert scores["hd95"][1:3] == pytest.approx([diagonal, diagonal])
    assert math.isnan(scores["hd95"][3])
    assert "absent from both" in EMPTY_CLASS_RULE and "Dice 0" in EMPTY_CLASS_RULE


def test_dice_alone_uses_the_same_rule():
    label = torch.tensor([[0, 1, 1], [0, 0, 0]])
    pred = torch.tensor([[0, 0, 0], [2, 0, 0]])
    dice = segmentation_scores(pred, label, 4, hd95=False)
    assert set(dice) == {"dice"}
    assert dice["dice"][:2] == [0.0, 0.0] and math.isnan(dice["dice"][2])


def test_3d_anisotropic_scores_match_the_oracle():
    rng = np.random.default_rng(5)
    label = np.zeros((6, 7, 8), dtype=np.int64)
    label[1:5, 2:6, 1:6] = 1
    label[(rng.random(label.shape) < 0.15) & (label == 0)] = 2
    pred = np.roll(label, shift=(0, 1, 2), axis=(0, 1, 2))
    spacing = np.array([1.0, 0.7, 3.0])
    scores = segmentation_scores(torch.from_numpy(pred), torch.from_numpy(label), 3, spacing=tuple(spacing))
    for k in (1, 2):
        assert scores["dice"][k - 1] == pytest.approx(dice_oracle(pred == k, label == k), abs=1e-6)
        assert scores["hd95"][k - 1] == pytest.approx(hd95_oracle(pred == k, label == k, spacing), rel=1e-5)


def test_hd95_of_hand_placed_voxels():
    """Single voxels are their own surface: distances are exact, and the 95th percentile interpolates."""
    label = np.zeros((3, 3, 6), dtype=np.int64)
    pred = np.zeros_like(label)
    label[1, 1, 1] = 1
    pred[1, 1, 4] = 1  # 3 voxels along the 3 mm axis: 9 mm
    label[0, 0, 0] = pred[0, 0, 0] = 2
    pred[2, 0, 0] = 2  # directed pred->label distances [0, 2 * 1.5 mm]: 95th percentile 0.95 * 3 mm
    scores = segmentation_scores(torch.from_numpy(pred), torch.from_numpy(label), 3, spacing=(1.5, 1.0, 3.0))
    assert scores["hd95"] == pytest.approx([9.0, 0.95 * 3.0])
    assert scores["dice"] == pytest.approx([0.0, 2 * 1 / 3])


def pair_count_auc(scores, positive):
    """AUC as the fraction of (positive, negative) pairs ranked right, ties counting one half."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_binary_auc_and_accuracy_match_pair_counts():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    targets = np.array([0, 0, 1, 1, 1, 0])
    scores = classification_scores(probs, targets)
    assert scores["auc"] == pytest.approx(pair_count_auc(probs[:, 1], targets == 1))
    assert scores["auc"] == pytest.approx(8 / 9)  # one of nine pairs ranked wrong (0.4 < 0.6)
    assert scores["accuracy"] == pytest.approx(4 / 6)


def test_multiclass_auc_is_the_macro_mean_of_one_vs_rest_pair_counts():
    rng = np.random.default_rng(0)
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    probs = rng.dirichlet(np.ones(3), size=len(targets)) + 0.6 * np.eye(3)[targets]
    probs /= probs.sum(axis=1, keepdims=True)
    expected = np.mean([pair_count_auc(probs[:, k], targets == k) for k in range(3)])
    scores = classification_scores(probs, targets)
    assert 0.6 < expected < 0.99  # neither perfect nor chance: a wrong average would show
    assert scores["auc"] == pytest.approx(expected)
    assert scores["accuracy"] == pytest.approx(float((probs.argmax(1) == targets).mean()))


def test_mean_std_leave_nan_out_and_use_the_population_std():
    assert mean_std([1.0, math.nan, 3.0, 5.0]) == pytest.approx((3.0, math.sqrt(8 / 3)))
    assert all(math.isnan(v) for v in mean_std([math.nan, math.nan]))
    rows = [{"dice": 0.5, "hd95": math.nan}, {"dice": 0.9, "hd95": 4.0}, {"dice": math.nan, "hd95": 2.0}]
    summary = summarise(rows, ["dice", "hd95"])
    assert summary["dice"] == pytest.approx({"mean": 0.7, "std": 0.2})
    assert summary["hd95"] == pytest.approx({"mean": 3.0, "std": 1.0})


def test_only_monais_empty_class_warnings_are_silenced(monkeypatch):
    import warnings

    import cover.downstream.metrics as metrics

    label = np.zeros((8, 8), dtype=np.int64)
    pred = np.zeros_like(label)
    label[1:4, 1:4] = 1  # class 1 only in the label, class 2 only in the prediction: MONAI warns for both
    pred[5:7, 5:7] = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segmentation_scores(torch.from_numpy(pred), torch.from_numpy(label), 3)
    assert caught == []
    real = metrics.compute_hausdorff_distance

    def also_warns(*args, **kwargs):
        warnings.warn("the prediction is all 0 but this is another warning", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "compute_hausdorff_distance", also_warns)
    with pytest.warns(UserWarning, match="another warning"):
        segmentation_scores(torch.from_numpy(pred), torch.from_numpy(label), 3)
