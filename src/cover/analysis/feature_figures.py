"""Pictures of pixel features: PCA as RGB, a 2D embedding coloured by class, neighbour similarity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402


def fit_pca(samples: np.ndarray, components: int = 3, seed: int = 0) -> PCA:
    """PCA of feature vectors.

    Args:
        samples: ``(n, C)`` features.
        components: Number of components (capped by ``n`` and ``C``).
        seed: Random state of the solver.

    Returns:
        The fitted :class:`sklearn.decomposition.PCA`.
    """
    components = max(1, min(components, samples.shape[0], samples.shape[1]))
    return PCA(n_components=components, random_state=seed).fit(samples)


def pca_rgb(features: np.ndarray, pca: PCA, limits: np.ndarray | None = None) -> np.ndarray:
    """Colour an image's pixel features by their first three principal components.

    Args:
        features: ``(C, H, W)`` features.
        pca: PCA fitted on sampled features of the same space.
        limits: ``(2, 3)`` low/high values per component mapped to 0/1 (default: this image's
            1st and 99th percentiles).

    Returns:
        ``(H, W, 3)`` RGB in [0, 1].
    """
    channels, height, width = features.shape
    projected = pca.transform(features.reshape(channels, -1).T)
    if projected.shape[1] < 3:
        projected = np.pad(projected, ((0, 0), (0, 3 - projected.shape[1])))
    if limits is None:
        limits = np.percentile(projected, [1, 99], axis=0)
    scaled = (projected - limits[0]) / np.maximum(limits[1] - limits[0], 1e-8)
    return np.clip(scaled, 0, 1).reshape(height, width, 3)


def plot_feature_pca(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    rgbs: Sequence[np.ndarray],
    out_png: str | Path,
    title: str,
) -> None:
    """Rows of image, label map and PCA-RGB feature picture.

    Args:
        images: ``(H, W)`` images.
        labels: ``(H, W)`` label maps.
        rgbs: ``(H, W, 3)`` PCA pictures.
        out_png: Destination PNG.
        title: Figure title.
    """
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    top = max(int(max(label.max() for label in labels)), 1)
    for row, (image, label, rgb) in enumerate(zip(images, labels, rgbs, strict=True)):
        panels = [(image, "gray", "image"), (label, "tab10", "labels"), (rgb, None, "features: PCA as RGB")]
        for col, (panel, cmap, name) in enumerate(panels):
            ax = axes[row][col]
            if cmap == "tab10":
                ax.imshow(panel, cmap=cmap, vmin=0, vmax=9 if top < 10 else top, interpolation="nearest")
            else:
                ax.imshow(panel, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def embed_2d(samples: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2D embedding of feature vectors.

    Args:
        samples: ``(n, C)`` features.
        method: ``pca`` or ``tsne`` (scikit-learn).
        seed: Random state.

    Returns:
        ``(n, 2)`` coordinates.
    """
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (samples.shape[0] - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(samples)
    coords = fit_pca(samples, 2, seed).transform(samples)
    return coords if coords.shape[1] == 2 else np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def plot_embedding(
    samples: dict[int, np.ndarray], names: dict[int, str], out_png: str | Path, method: str = "pca", seed: int = 0
) -> None:
    """Scatter plot of a 2D embedding of sampled pixel features, coloured by class.

    Args:
        samples: Class -> ``(n_c, C)`` features.
        names: Class -> name.
        out_png: Destination PNG.
        method: ``pca`` or ``tsne``.
        seed: Random state.
    """
    classes = sorted(samples)
    stacked = np.concatenate([samples[c] for c in classes])
    coords = embed_2d(stacked, method, seed)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    start = 0
    for cls in classes:
        n = samples[cls].shape[0]
        ax.scatter(coords[start : start + n, 0], coords[start : start + n, 1], s=4, alpha=0.6, label=names[cls])
        start += n
    ax.set_title(f"sampled pixel features ({method.upper() if method == 'pca' else 't-SNE'})", fontsize=9)
    ax.legend(fontsize=8, markerscale=3)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot_neighbour_similarity(
    curves: dict[str, dict[str, list[float | None]]], out_png: str | Path, random_same: dict[str, float] | None = None
) -> None:
    """Cosine similarity of neighbouring pixels versus distance, one colour per run.

    Args:
        curves: Run name -> ``{"same", "different", ...}`` -> similarity per distance (1, 2, ...).
        out_png: Destination PNG.
        random_same: Run name -> mean similarity of random same-class pairs (dotted line).
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for index, (run, kinds) in enumerate(curves.items()):
        colour = f"C{index}"
        for kind, style in (("same", "-"), ("different", "--")):
            values = np.array([np.nan if v is None else v for v in kinds.get(kind, [])], dtype=float)
            distance = np.arange(1, len(values) + 1)
            label = f"{run}: {kind} class" if len(curves) > 1 else f"{kind} class"
            ax.plot(distance, values, style, color=colour, marker="o", ms=3, label=label)
        if random_same and run in random_same:
            ax.axhline(random_same[run], color=colour, ls=":", lw=1)
    ax.set_xlabel("distance between the two pixels (px)")
    ax.set_ylabel("cosine similarity of features")
    ax.set_title("neighbouring pixels (dotted: random same-class pairs)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
