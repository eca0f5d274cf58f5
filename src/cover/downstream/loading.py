"""Reading labeled cases through the data layer: normalised images, integer label maps.

Images are read with :func:`cover.data.channels.read_source` (one file, or one file per
channel on channel 0's grid) and normalised with an intensity
preset (:mod:`cover.data.presets`): the one given, or each file's own (from its header's
modality or its values) when the preset is ``None``/``"auto"``. Label maps are read by
:func:`cover.data.labels.read_label_map`: integer class indices on exactly the image's grid.
Classification images are resized to the network's input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from cover.data.channels import ImageSource, read_source, source_text
from cover.data.labels import read_label_map as read_labels
from cover.data.presets import PER_FILE, choose_preset, normalize
from cover.data.readers import ImageRecord
from cover.data.record import as_planar, data_error
from cover.downstream.cases import Case
from cover.geometry import linear_mode


@dataclass
class LoadedCase:
    """A case in memory.

    Attributes:
        case: The case it came from.
        image: float32 ``(C, *spatial)`` normalised image (resized for classification).
        label: int64 ``(*spatial)`` label map (segmentation), else ``None``.
        record: The image's record (geometry for writing predictions), or ``None`` when not kept.
        preset: The preset actually applied.
        preset_reason: Why (``"given"``, or :func:`cover.data.presets.choose_preset`'s reason).
    """

    case: Case
    image: torch.Tensor
    label: torch.Tensor | None
    record: ImageRecord | None
    preset: str
    preset_reason: str = "given"


def resolve_preset(preset: str | None, record: ImageRecord) -> str:
    """The preset to apply to one image: the given one, or the file's own when ``None``/``auto``/``per-file``.

    The file's own is :func:`cover.data.presets.choose_preset`'s, written with its parameters.
    """
    if preset in (None, "", "auto", PER_FILE):
        return choose_preset(record)[0]
    return str(preset)


def read_normalised(
    path: str | ImageSource, preset: str | None, dim: int, in_channels: int = 1
) -> tuple[np.ndarray, ImageRecord, str]:
    """Read and normalise one image.

    With ``dim=2`` a volume one slice thick (a 2D NIfTI, a ``(X, Y, 1)`` file) is used as
    the 2D image it holds (:func:`cover.data.record.as_planar`).

    Args:
        path: Image file or DICOM series folder, or one file per channel (a tuple).
        preset: Preset text, or ``None``/``"auto"`` for the file's default. It applies to every
            channel; ``mri``/``xray``/``zscore``/``minmax`` take their statistics per channel.
        dim: Expected number of spatial axes (2 or 3).
        in_channels: Expected channels (more than 1 keeps colour / 4th-axis channels).

    Returns:
        ``(array, record, preset)``; ``array`` float32 ``(C, *spatial)``.
    """
    record = read_source(path, channels=in_channels > 1)
    if dim == 2:
        planar = as_planar(record)
        if planar is None:
            size = "x".join(str(s) for s in record.spatial_shape)
            raise data_error(
                record.path,
                f"is a 3D volume ({size}) but dim is 2 (2D images, or volumes one slice thick); use --dim 3",
            )
        record = planar
    elif record.spatial_dims != dim:
        size = "x".join(str(s) for s in record.spatial_shape)
        raise data_error(record.path, f"is a 2D image ({size}) but dim is 3; use --dim 2")
    if record.channels != in_channels:
        raise data_error(source_text(path), f"has {record.channels} channels, the network expects {in_channels}")
    chosen = resolve_preset(preset, record)
    array = normalize(record.array, chosen)
    return array, record, chosen


def read_label_map(path: str, image: ImageRecord | Sequence[int], values: Sequence[int] | None = None) -> np.ndarray:
    """Read a label map checked against its image (see :func:`cover.data.labels.read_label_map`).

    Args:
        path: Label file.
        image: The image's record (shape and geometry checked) or its spatial shape.
        values: ``label_values`` (value ``i`` becomes class ``i``), or ``None``.

    Returns:
        int64 ``(*spatial)`` labels.
    """
    return read_labels(path, image, values)


def resize_image(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(C, *spatial)`` to ``size`` (linear, antialiased in 2D)."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    dims = len(size)
    return F.interpolate(
        image[None], size=tuple(size), mode=linear_mode(dims), align_corners=False, antialias=dims == 2
    )[0]


def load_case(
    case: Case,
    *,
    task: str,
    dim: int,
    preset: str | None,
    in_channels: int,
    size: Sequence[int],
    keep_record: bool = False,
    label_values: Sequence[int] | None = None,
) -> LoadedCase:
    """Read one case.

    Args:
        case: The case.
        task: ``seg`` or ``cls``.
        dim: 2 or 3.
        preset: Preset or ``None``/``"auto"``.
        in_channels: Image channels.
        size: Classification input size (segmentation keeps the native size).
        keep_record: Keep the image's record (its raw array and geometry).
        label_values: seg: the label maps' values, value ``i`` read as class ``i``
            (``None``: the values are the class indices).

    Returns:
        The loaded case.
    """
    array, record, chosen = read_normalised(case.image, preset, dim, in_channels)
    label = None
    if task == "seg" and case.label is not None:
        label = torch.from_numpy(read_label_map(str(case.label), record, label_values))
    image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if task == "cls":
        image = resize_image(image, size)
    why = choose_preset(record)[1] if preset in (None, "", "auto", PER_FILE) else "given"
    return LoadedCase(
        case=case, image=image, label=label, record=record if keep_record else None, preset=chosen, preset_reason=why
    )


def checkpoint_load_options(metadata: dict[str, Any], keep_record: bool) -> dict[str, Any]:
    """Keyword arguments of :func:`load_case` that feed a fine-tuned checkpoint's network.

    Args:
        metadata: The checkpoint's metadata (task, spatial dims, preset, channels, patch size,
            label values).
        keep_record: Keep each image's record (for writing predictions or spacing).

    Returns:
        ``{"task", "dim", "preset", "in_channels", "size", "keep_record", "label_values"}``.
    """
    return {
        "task": metadata["task"],
        "dim": int(metadata["spatial_dims"]),
        "preset": metadata.get("preset"),
        "in_channels": int(metadata["in_channels"]),
        "size": metadata["patch_size"],
        "keep_record": keep_record,
        "label_values": metadata.get("label_values"),
    }
