"""Feature geometry of pixel features on labeled images: the over-dispersion the paper argues about.

Binary pixel contrast pushes every non-partner pixel away, including neighbouring pixels of
the same tissue; COVER argues this "over-disperses" features. These statistics measure it on
labeled images, for any backbone's finest decoder features, with cosine geometry (features
are L2-normalised per pixel):

* class statistics (:class:`ClassSamples`): on pixels sampled per class (seeded), the mean
  intra-class cosine distance (``1 - cos`` over pairs of distinct pixels of one class, averaged
  over classes), the mean inter-class cosine distance (over pairs of pixels of two classes,
  averaged over class pairs) and their ratio ``intra / inter`` (lower = tighter classes);
* neighbour similarity (:class:`NeighbourStats`): the mean cosine similarity of the pixel
  pairs ``(p, p + d e_k)`` for distances ``d = 1..D`` along every array axis ``k``, over all
  analysed pairs, same-class pairs and different-class pairs.

Pixels whose label is not analysed (by default the background, label 0) are left out of both.
Everything is dimension-generic: ``features`` are ``(C, *S)`` with ``S`` 2D or 3D.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812


def normalise_features(features: torch.Tensor) -> torch.Tensor:
    """Unit-length pixel features.

    Args:
        features: ``(C, *S)``.

    Returns:
        ``(C, *S)`` float32 with unit L2 norm along ``C`` (zero vectors stay zero).
    """
    return F.normalize(features.float(), dim=0, eps=1e-8)


@dataclass
class NeighbourStats:
    """Running sums of neighbour cosine similarities by distance.

    Attributes:
        max_distance: Largest distance ``D`` in pixels.
        sums: ``{"all", "same", "different"}`` -> ``(D,)`` sums of cosine similarities.
        counts: The same keys -> ``(D,)`` pair counts.
    """

    max_distance: int
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("all", "same", "different"):
            self.sums.setdefault(key, np.zeros(self.max_distance))
            self.counts.setdefault(key, np.zeros(self.max_distance))

    def add(self, unit: torch.Tensor, labels: torch.Tensor, analysed: torch.Tensor) -> None:
        """Add the pixel pairs of one image.

        Args:
            unit: ``(C, *S)`` unit features.
            labels: ``(*S)`` integer labels.
            analysed: ``(*S)`` bool, pixels taking part.
        """
        for axis in range(labels.dim()):
            size = labels.shape[axis]
            for d in range(1, min(self.max_distance, size - 1) + 1):
                cos = (unit.narrow(axis + 1, 0, size - d) * unit.narrow(axis + 1, d, size - d)).sum(dim=0)
                la, lb = labels.narrow(axis, 0, size - d), labels.narrow(axis, d, size - d)
                both = analysed.narrow(axis, 0, size - d) & analysed.narrow(axis, d, size - d)
                same = both & (la == lb)
                for key, where in (("all", both), ("same", same), ("different", both & ~same)):
                    self.sums[key][d - 1] += float(cos[where].double().sum())
                    self.counts[key][d - 1] += int(where.sum())

    def means(self) -> dict[str, list[float | None]]:
        """Mean similarity per distance (``None`` where no pair exists), by pair kind."""
        return {
            key: [float(s / c) if c else None for s, c in zip(self.sums[key], self.counts[key], strict=True)]
            for key in self.sums
        }


@dataclass
class ClassSamples:
    """Pixel features sampled per class, streamed image by image.

    Each image contributes up to ``per_image`` random pixels of every analysed class; at the
    end every class is subsampled to at most ``per_class`` pixels (seeded).

    Attributes:
        per_class: Pixels kept per class.
        per_image: Pixels drawn per class from one image.
        seed: Seed of the draws.
        features: Class -> list of ``(n, C)`` arrays.
    """

    per_class: int
    per_image: int
    seed: int = 0
    features: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng([self.seed, 0xD15])

    def add(self, unit: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> None:
        """Draw pixels of one image.

        Args:
            unit: ``(C, *S)`` unit features.
            labels: ``(*S)`` integer labels.
            classes: Classes to draw from.
        """
        flat = unit.flatten(1).T.numpy()  # (P, C)
        flat_labels = labels.flatten().numpy()
        for cls in classes:
            where = np.flatnonzero(flat_labels == cls)
            if where.size == 0:
                continue
            chosen = self._rng.choice(where, size=min(self.per_image, where.size), replace=False)
            self.features.setdefault(int(cls), []).append(flat[chosen])

    def sampled(self) -> dict[int, np.ndarray]:
        """Class -> ``(n_c, C)`` sampled unit features (``n_c <= per_class``)."""
        result = {}
        for cls in sorted(self.features):
            stacked = np.concatenate(self.features[cls])
            if stacked.shape[0] > self.per_class:
                stacked = stacked[self._rng.choice(stacked.shape[0], size=self.per_class, replace=False)]
            result[cls] = stacked
        return result


def class_distances(samples: dict[int, np.ndarray]) -> dict[str, object]:
    """Intra- and inter-class cosine distances of sampled unit features.

    Args:
        samples: Class -> ``(n_c, C)`` unit features.

    Returns:
        ``intra`` (mean over classes of the mean ``1 - cos`` of pairs of distinct pixels of the
        class), ``inter`` (mean over class pairs of the mean ``1 - cos`` across them),
        ``intra_over_inter``, and ``per_class_intra`` / ``per_pair_inter`` by class.
    """
    per_class: dict[str, float] = {}
    for cls, feats in samples.items():
        n = feats.shape[0]
        if n < 2:
            continue
        total = feats.sum(axis=0, dtype=np.float64)
        mean_cos = (float(total @ total) - float((feats.astype(np.float64) ** 2).sum())) / (n * (n - 1))
        per_class[str(cls)] = 1.0 - mean_cos
    per_pair: dict[str, float] = {}
    keys = sorted(samples)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            mean_cos = float(samples[a].astype(np.float64).mean(axis=0) @ samples[b].astype(np.float64).mean(axis=0))
            per_pair[f"{a}-{b}"] = 1.0 - mean_cos
    intra = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    inter = float(np.mean(list(per_pair.values()))) if per_pair else float("nan")
    ratio = intra / inter if per_pair and inter > 0 else float("nan")
    return {
        "intra": intra,
        "inter": inter,
        "intra_over_inter": ratio,
        "per_class_intra": per_class,
        "per_pair_inter": per_pair,
    }
