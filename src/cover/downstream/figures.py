"""A picture of a few segmented cases: image, label and prediction side by side.

Volumes are shown as a radiologist reads them (:func:`screen_view`): an axial slice with
anterior at the top and the patient's right on the left of the picture; plain 2D images as
stored (row 0 at the top).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from cover.data.record import ImageRecord  # noqa: E402


def screen_view(plane: np.ndarray) -> np.ndarray:
    """A slice through two RAS canonical axes ``(A, B)`` (``A`` before ``B``) as shown on screen.

    Radiological convention for every plane: rows run from +B to -B and columns from +A to -A.
    Axial ``(x, y)``: anterior at the top, patient's right on the left. Coronal ``(x, z)``:
    superior at the top, right on the left. Sagittal ``(y, z)``: superior at the top, anterior
    on the left.

    Args:
        plane: ``(A, B)`` values (``A`` = lower RAS axis).

    Returns:
        ``(B, A)`` picture, row 0 at the top.
    """
    return np.ascontiguousarray(plane.T[::-1, ::-1])


def _show_slice(
    image: np.ndarray, label: np.ndarray | None, prediction: np.ndarray, ras: bool = False
) -> tuple[np.ndarray, ...]:
    """2D views of ``(C, *S)`` image and ``(*S)`` maps.

    3D: the slice along the last axis with most foreground. ``ras``: the spatial axes are RAS
    canonical (volumes read with a geometry, or a slice of one), shown with :func:`screen_view`.
    """
    picture = image[0]
    if picture.ndim == 3:
        reference = label if label is not None else prediction
        k = int(np.argmax((reference > 0).sum(axis=(0, 1)))) if (reference > 0).any() else picture.shape[-1] // 2
        picture, label, prediction = picture[..., k], None if label is None else label[..., k], prediction[..., k]
    if not ras:
        return picture, label, prediction
    return screen_view(picture), None if label is None else screen_view(label), screen_view(prediction)


def is_ras(record: ImageRecord) -> bool:
    """Whether a record's spatial axes are RAS canonical axes (a volume, or a 2D slice of one)."""
    if record.spatial_dims == 3:
        return record.orientation == "RAS"
    plane = record.meta.get("plane_of_volume") or {}
    return plane.get("affine") is not None


def plot_cases(
    cases: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]],
    num_classes: int,
    out_png: str | Path,
    class_names: list[str] | None = None,
    ras: list[bool] | None = None,
) -> None:
    """Rows of (image, label, prediction) for a few cases.

    Args:
        cases: ``(name, image (C, *S), label (*S) or None, prediction (*S))`` per case.
        num_classes: ``K``, for a fixed colour per class.
        out_png: Destination PNG.
        class_names: Names for the legend.
        ras: Per case, whether its axes are RAS canonical (:func:`is_ras`); those are shown in
            the radiological convention, the others as stored. Default: none is.
    """
    rows = max(1, len(cases))
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20", num_classes)
    for row, (name, image, label, prediction) in enumerate(cases):
        picture, shown_label, shown_pred = _show_slice(image, label, prediction, bool(ras and ras[row]))
        panels = [("image", None), ("label", shown_label), ("prediction", shown_pred)]
        for ax, (title, overlay) in zip(axes[row], panels, strict=True):
            ax.imshow(picture, cmap="gray")
            if overlay is not None:
                masked = np.ma.masked_where(overlay == 0, overlay)
                ax.imshow(masked, cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5, alpha=0.55, interpolation="nearest")
            elif title == "label":
                ax.text(0.5, 0.5, "no label", ha="center", va="center", transform=ax.transAxes, color="w")
            side = " (R on left)" if ras and ras[row] and title == "image" else ""
            ax.set_title(f"{name}: {title}{side}" if title == "image" else title, fontsize=9)
            ax.axis("off")
    if class_names:
        handles = [Patch(color=cmap(k), label=class_names[k]) for k in range(1, min(num_classes, len(class_names)))]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8)
    fig.tight_layout(rect=(0, 0.04 if class_names else 0, 1, 1))
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
