"""Flip check of ``cover finetune``: are the labels lateralised along an axis that augmentation flips?

A random flip along an axis moves image and label map together. When classes are split by
side (``left GM`` / ``right GM``), a left-right flip puts the "right" label on the image's left
side, and the network learns to confuse the two. Before training, the labeled training cases'
label maps (a few of them, nothing else) are checked along every axis that augmentation would
flip.

The rule, per axis (:func:`lateral_pairs`):

1. Each label map is cropped to the bounding box of its foreground (so a subject off the image
   centre is mirrored about its own centre), and each foreground class ``c`` becomes a coarse
   density ``d_c``: the fraction of class ``c`` in each cell of a grid over that box,
   :data:`GRID_ALONG` cells along the mirrored axis and :data:`GRID` along the others (area
   averaging; coarse, so a shifted, rotated or deformed subject still meets its mirror image).
   For a pair of classes ``a``, ``b`` the densities are summed over the checked cases that
   hold both: ``D_a``, ``D_b`` (a class that sits on one side in one case and on the other
   side in the next does not add up to a consistent side). A case without one of the two
   says nothing about where they lie relative to each other, and its box, cropped to the
   side it has, would centre that side and make it look symmetric (one labeled case missing
   the right side measured ``S(1, 1) = 0.45`` against ``S(1, 2) = 0.81`` and switched the
   check off), so it is left out of that pair's sums only.
2. The *mirror similarity* of classes ``a`` and ``b`` is the share of their mass that the
   mirror carries from one onto the other:
   ``S(a, b) = 2 * sum(min(flip(D_a), D_b)) / (sum(D_a) + sum(D_b))`` in ``[0, 1]``
   (symmetric in ``a``, ``b``; 1 when ``D_b`` is exactly the mirror image of ``D_a``).
   ``S(a, a)`` is how much class ``a`` is its own mirror image, over the same cases.
3. Two foreground classes ``a != b`` are *swapped* by the flip when ``S(a, b) >= MIN_SWAP``
   (0.5: most of their mass lands on each other) and
   ``S(a, b) >= SELF_RATIO * max(S(a, a), S(b, b))`` (2: far more than on itself). Swapped
   pairs are taken greedily by decreasing ``S``, each class in one pair at most. The axis is
   *lateralised* when any pair is swapped.

A class that is symmetric by itself (left and right GM as one class, the ventricles) has a
high ``S(a, a)`` and never pairs; a one-sided class whose mirror lands on background or on a
symmetric class, two lesions that no single flip maps onto each other, or a small lesion in a
large one's mirror image do not pair either (``tests/downstream/test_flips.py``).

The thresholds sit about 2x from the mirror similarities measured on the built-in tasks on
either side, and the check raised validation Dice on ``mni-regions-2d`` after 400 steps from
0.43 to 0.83, one seed (``benchmarks/RESULTS.md``, *Flip check*, with the commands).

With few cases (seen with 1 to 4
of the tests' random ball-and-box maps), two classes that merely happen to lie on opposite
sides pair as well: flips along that axis are then off without need (less augmentation, not a
wrong label); the warning names the pair, and setting ``augment.flip_prob`` keeps the flips.

:func:`check_flips` applies the result: with ``augment.flip_prob`` and ``augment.flip_axes``
not given, flips along a lateralised axis are turned off (``flip_axes`` lists the others) and
one warning per axis names the swapped classes; when the user set either, their setting is
kept and the warning says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F  # noqa: N812

from cover.downstream.config import DEFAULT_FLIP_PROB, FinetuneConfig

#: Cells of the coarse class densities along the mirrored axis ...
GRID_ALONG = 4
#: ... and along every other axis, over each foreground bounding box.
GRID = 8
#: Label maps are subsampled to at most this many voxels per axis first (the densities are coarse).
MAX_SIDE = 64
#: Smallest mirror similarity of a swapped pair.
MIN_SWAP = 0.5
#: How many times each class's own mirror similarity the pair's must be.
SELF_RATIO = 2.0
#: Labeled training cases checked (the first ones of the split).
MAX_CASES = 8


@dataclass(frozen=True)
class SwappedPair:
    """Two foreground classes that a flip along ``axis`` exchanges.

    Attributes:
        axis: Spatial axis (array order of the loaded label maps).
        first: The smaller class index.
        second: The larger class index.
        similarity: Mirror similarity ``S(first, second)``.
        self_similarity: ``(S(first, first), S(second, second))``.
    """

    axis: int
    first: int
    second: int
    similarity: float
    self_similarity: tuple[float, float]


def class_densities(label: torch.Tensor, num_classes: int, axis: int) -> torch.Tensor | None:
    """Coarse class densities of one label map over its foreground bounding box (module docstring, step 1).

    Args:
        label: int64 ``(*spatial)`` label map.
        num_classes: ``K``.
        axis: The axis to be mirrored (:data:`GRID_ALONG` cells; :data:`GRID` along the others).

    Returns:
        float64 ``(K, *cells)``: the fraction of each cell that is class ``c`` (row 0,
        background, zeroed), or ``None`` when the map has no foreground.
    """
    foreground = label > 0
    if not bool(foreground.any()):
        return None
    box = []
    for dim in range(label.dim()):
        occupied = foreground.any(dim=tuple(d for d in range(label.dim()) if d != dim)).nonzero()
        low, high = int(occupied[0]), int(occupied[-1]) + 1
        stride = -(-(high - low) // MAX_SIDE)
        start = low + ((high - low - 1) % stride) // 2  # samples placed symmetrically about the box centre
        box.append(slice(start, high, stride))
    crop = label[tuple(box)].long()
    onehot = F.one_hot(crop, num_classes).movedim(-1, 0).float()  # (K, *box)
    cells = tuple(GRID_ALONG if d == axis else GRID for d in range(crop.dim()))
    density = F.interpolate(onehot[None], size=cells, mode="area")[0].double()
    density[0] = 0
    return density


def _similarities(labels: Sequence[torch.Tensor], num_classes: int, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror similarities of every class pair and each class's own, over the maps holding both.

    Args:
        labels: int64 label maps, each ``(*spatial)``; maps without foreground are skipped.
        num_classes: ``K``.
        axis: Spatial axis to mirror.

    Returns:
        float64 ``(K, K)`` ``S(a, b)`` from the densities pooled over the maps holding both
        ``a`` and ``b`` (``S(a, a)``: over the maps holding ``a``), and float64 ``(K, K)``
        ``own[a, b]``: ``S(a, a)`` over those same maps (module docstring, step 2).
    """
    empty = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    densities = [d for d in (class_densities(label, num_classes, axis) for label in labels) if d is not None]
    if not densities:
        return empty, empty.clone()
    stacked = torch.stack(densities).flatten(2)  # (M, K, cells)
    mirrored = torch.stack(densities).flip(axis + 2).flatten(2)
    present = (stacked.sum(-1) > 0).double()  # (M, K)
    similarity, own = empty.clone(), empty.clone()
    for a in range(1, num_classes):
        both = present[:, a : a + 1] * present  # (M, K): maps holding a and b
        pooled_a = torch.einsum("mb,mc->bc", both, stacked[:, a])  # (K, cells): class a over the maps of (a, b)
        mirror_a = torch.einsum("mb,mc->bc", both, mirrored[:, a])
        pooled_b = torch.einsum("mb,mbc->bc", both, stacked)  # (K, cells): class b over the same maps
        mass_a, mass_b = pooled_a.sum(-1), pooled_b.sum(-1)
        common = torch.minimum(mirror_a, pooled_b).sum(-1)
        scale = mass_a + mass_b
        similarity[a] = torch.where(scale > 0, 2 * common / scale.clamp_min(1e-300), 0.0)
        own[a] = torch.where(mass_a > 0, torch.minimum(mirror_a, pooled_a).sum(-1) / mass_a.clamp_min(1e-300), 0.0)
    return similarity, own


def mirror_similarity(labels: Sequence[torch.Tensor], num_classes: int, axis: int) -> torch.Tensor:
    """Mirror similarities ``S(a, b)`` of all classes along one axis (module docstring, steps 1-2).

    Args:
        labels: int64 label maps, each ``(*spatial)``; maps without foreground are skipped.
        num_classes: ``K`` (classes ``0..K-1``, 0 background).
        axis: Spatial axis to mirror.

    Returns:
        float64 ``(K, K)``, symmetric, in ``[0, 1]``: ``S(a, b)`` over the maps holding both
        classes; row and column 0 (background) and absent classes are 0.
    """
    return _similarities(labels, num_classes, axis)[0]


def lateral_pairs(
    labels: Sequence[torch.Tensor], num_classes: int, axes: Sequence[int]
) -> dict[int, list[SwappedPair]]:
    """Class pairs that a flip swaps, per axis (module docstring, step 3).

    Pairs passing the thresholds are taken greedily by decreasing similarity, each class in at
    most one pair (``left GM`` pairs with ``right GM``, not also with ``right WM``).

    Args:
        labels: int64 label maps, each ``(*spatial)``.
        num_classes: ``K``.
        axes: Spatial axes to check.

    Returns:
        For every axis in ``axes``, its swapped pairs (empty: not lateralised).
    """
    found: dict[int, list[SwappedPair]] = {}
    for axis in axes:
        similarity, own = _similarities(labels, num_classes, axis)
        candidates = []
        for a in range(1, num_classes):
            for b in range(a + 1, num_classes):
                value, selves = float(similarity[a, b]), (float(own[a, b]), float(own[b, a]))
                if value >= MIN_SWAP and value >= SELF_RATIO * max(selves):
                    candidates.append(SwappedPair(axis, a, b, value, selves))
        pairs: list[SwappedPair] = []
        used: set[int] = set()
        for pair in sorted(candidates, key=lambda p: -p.similarity):
            if not {pair.first, pair.second} & used:
                pairs.append(pair)
                used |= {pair.first, pair.second}
        found[axis] = sorted(pairs, key=lambda p: (p.first, p.second))
    return found


@dataclass
class FlipDecision:
    """What the flip check found and did (recorded in ``summary.json`` as ``flip_check``).

    Attributes:
        checked_axes: Axes that augmentation would flip, which were checked.
        num_cases: Label maps checked.
        pairs: Swapped class pairs of each lateralised axis.
        disabled_axes: Axes whose flips were turned off (only when ``flip_prob`` was not given).
        warnings: One line per lateralised axis, for the log.
    """

    checked_axes: list[int]
    num_cases: int
    pairs: dict[int, list[SwappedPair]]
    disabled_axes: list[int]
    warnings: list[str]

    def record(self, names: Sequence[str] | None, config: FinetuneConfig) -> dict[str, Any]:
        """Plain-JSON summary of the decision with the flips in effect."""
        return {
            "rule": "cover.downstream.flips",
            "checked_axes": self.checked_axes,
            "num_cases": self.num_cases,
            "lateralised": [
                {
                    "axis": axis,
                    "pairs": [
                        {
                            "classes": [p.first, p.second],
                            "names": [names[p.first], names[p.second]] if names else None,
                            "similarity": round(p.similarity, 3),
                            "self_similarity": [round(v, 3) for v in p.self_similarity],
                        }
                        for p in pairs
                    ],
                }
                for axis, pairs in self.pairs.items()
                if pairs
            ],
            "flips_turned_off_along": self.disabled_axes,
            "flip_prob": config.augment.flip_prob,
            "flip_axes": None if config.augment.flip_axes is None else list(config.augment.flip_axes),
        }


def check_flips(
    config: FinetuneConfig, labels: Sequence[torch.Tensor], num_classes: int, names: Sequence[str] | None
) -> tuple[FinetuneConfig, FlipDecision | None]:
    """Resolve ``augment.flip_prob``/``flip_axes`` after checking the labels for lateralisation.

    Args:
        config: The run's config (``augment.flip_prob`` ``None`` when not given).
        labels: The labeled training cases' int64 label maps, each ``(*spatial)``; the first
            :data:`MAX_CASES` are checked.
        num_classes: ``K``.
        names: Class names, or ``None``.

    Returns:
        The config with ``flip_prob`` set (0.5 when not given) and, when flips were turned off
        along some axes, ``flip_axes`` listing the remaining ones; and the decision, or ``None``
        when nothing was checked (classification, no augmentation, no flips).
    """
    augment = config.augment
    given = augment.flip_prob is not None or augment.flip_axes is not None
    prob = DEFAULT_FLIP_PROB if augment.flip_prob is None else augment.flip_prob
    config = dataclasses.replace(config, augment=dataclasses.replace(augment, flip_prob=prob))
    axes = list(range(config.dim)) if augment.flip_axes is None else sorted(set(augment.flip_axes))
    if config.task != "seg" or not augment.enabled or prob == 0 or not axes or not labels:
        return config, None
    checked = list(labels[:MAX_CASES])
    pairs = lateral_pairs(checked, num_classes, axes)
    lateral = [axis for axis in axes if pairs[axis]]

    def name(index: int) -> str:
        if names:
            return f"'{names[index]}'"
        return f"class {index}" + (f" (value {config.label_values[index]})" if config.label_values else "")

    settings = ", ".join(
        f"augment.{key}={value}"
        for key, value in (
            ("flip_prob", augment.flip_prob),
            ("flip_axes", augment.flip_axes and list(augment.flip_axes)),
        )
        if value is not None
    )
    warnings = []
    for axis in lateral:
        swaps = ", ".join(f"{name(p.first)} <-> {name(p.second)}" for p in pairs[axis])
        action = (
            f"flips along that axis stay on ({settings} given)"
            if given
            else "flips along that axis are off; set augment.flip_prob to override"
        )
        warnings.append(f"labels look lateralised along axis {axis} (flipping swaps {swaps}): {action}")
    disabled = [] if given else lateral
    if disabled:
        kept = tuple(axis for axis in axes if axis not in disabled)
        config = dataclasses.replace(config, augment=dataclasses.replace(config.augment, flip_axes=kept))
    return config, FlipDecision(axes, len(checked), pairs, disabled, warnings)
