"""Pictures of pretraining's displacement fields (held-out view pairs, colour-wheel fields)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import hsv_to_rgb  # noqa: E402


def field_to_rgb(field: np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """Colour-wheel picture of a 2D vector field: hue = direction, saturation = length.

    Args:
        field: ``(2, H, W)`` displacements along array axes 0 and 1.
        max_norm: Length shown fully saturated (default: the field's maximum).

    Returns:
        ``(H, W, 3)`` RGB in [0, 1].
    """
    dy, dx = field[0], field[1]
    norm = np.hypot(dx, dy)
    scale = max_norm if max_norm else max(float(norm.max()), 1e-6)
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    sat = np.clip(norm / scale, 0, 1)
    return hsv_to_rgb(np.stack([hue, sat, np.ones_like(hue)], axis=-1))


def _middle_slice(tensor: torch.Tensor) -> np.ndarray:
    """``(C, *S)`` -> ``(C, H, W)``: the tensor itself in 2D, the middle axis-0 slice in 3D."""
    array = tensor.detach().float().cpu().numpy()
    if array.ndim == 4:
        array = array[:, array.shape[1] // 2]
    return array


def _in_plane(field: torch.Tensor) -> np.ndarray:
    """``(ndim, *S)`` -> ``(2, H, W)`` in-plane components of the displayed slice."""
    array = _middle_slice(field)
    return array[-2:]


def plot_flow(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    phi_gt: torch.Tensor,
    phi_pred: torch.Tensor,
    warped: torch.Tensor,
    mask: torch.Tensor,
    out_png: str | Path,
    max_rows: int = 4,
) -> None:
    """Rows of held-out pairs: view a, view b, true field, predicted field, a warped by prediction.

    3D inputs show their middle slice along array axis 0 and the two in-plane components.

    Args:
        view_a: ``(B, C, *S)``.
        view_b: ``(B, C, *S)``.
        phi_gt: ``(B, ndim, *S)``.
        phi_pred: ``(B, ndim, *S)``.
        warped: ``(B, C, *S)`` view a warped by the prediction.
        mask: ``(B, 1, *S)`` valid voxels.
        out_png: Destination PNG.
        max_rows: Number of pairs shown.
    """
    rows = min(max_rows, view_a.shape[0])
    titles = ["view a", "view b", "true field", "predicted field", "a warped by prediction", "|error| (px)"]
    fig, axes = plt.subplots(rows, len(titles), figsize=(2.3 * len(titles), 2.4 * rows), squeeze=False)
    for row in range(rows):
        gt, pred = _in_plane(phi_gt[row]), _in_plane(phi_pred[row])
        scale = float(np.hypot(gt[0], gt[1]).max()) or 1.0
        valid = _middle_slice(mask[row])[0]
        error = np.linalg.norm(_middle_slice(phi_pred[row] - phi_gt[row]), axis=0) * valid
        panels = [
            _middle_slice(view_a[row])[0],
            _middle_slice(view_b[row])[0],
            field_to_rgb(gt, scale),
            field_to_rgb(pred, scale),
            _middle_slice(warped[row])[0],
            error,
        ]
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            if panel.ndim == 3:
                ax.imshow(panel)
            elif col == 5:
                image = ax.imshow(panel, cmap="magma", vmin=0, vmax=max(scale / 2, 1e-6))
                fig.colorbar(image, ax=ax, fraction=0.046)
            else:
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
    fig.suptitle("held-out view pairs: colour = direction, saturation = length (same scale per row)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
