"""Images stored as one file per input channel, and the channels of dataset folders.

An *image source* is one path (an image file, possibly a 4D NIfTI whose 4th axis holds the
channels as in the Medical Segmentation Decathlon, or a DICOM series folder) or a tuple of
paths, one file per input channel in channel order (nnU-Net raw ``CASE_0000.ext``,
``CASE_0001.ext``; a MONAI datalist entry ``"image": ["t1.nii.gz", "t2.nii.gz"]``).
:func:`read_source` reads either into one :class:`~cover.data.record.ImageRecord`
``(C, *spatial)``. Each channel file holds one channel and must lie on channel 0's grid (the
check a label map passes against its image, :func:`cover.data.labels.grid_problem`); the
record keeps channel 0's geometry, so predictions are written on channel 0's grid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from cover.data.labels import grid_problem
from cover.data.readers import SUFFIX_FORMATS, read_image
from cover.data.record import PLAIN_FORMATS, ImageRecord, data_error

#: One image: a file (or DICOM series folder), or one file per channel in channel order.
ImageSource: TypeAlias = Path | tuple[Path, ...]

#: nnU-Net's image name without its ending: ``CASE_XXXX`` with a 4-digit channel index.
NNUNET_IMAGE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def as_source(value: str | Path | Sequence[str | Path]) -> ImageSource:
    """An image source from a path or a list of channel paths (a one-element list is that path)."""
    if isinstance(value, (list, tuple)):
        files = tuple(Path(v) for v in value)
        return files[0] if len(files) == 1 else files
    return Path(value)


def source_files(source: ImageSource | str) -> tuple[Path, ...]:
    """The files of a source, channel 0 first."""
    return tuple(source) if isinstance(source, tuple) else (Path(source),)


def source_text(source: ImageSource | str) -> str:
    """A source for messages: its path, or its channel files joined by ``" + "``."""
    return " + ".join(str(p) for p in source_files(source))


def source_value(source: ImageSource | str) -> str | list[str]:
    """A source for JSON: its path, or the list of its channel files."""
    files = source_files(source)
    return str(files[0]) if len(files) == 1 else [str(p) for p in files]


def _stem_and_ending(path: Path) -> tuple[str, str]:
    name = path.name
    for suffix in sorted(SUFFIX_FORMATS, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[len(name) - len(suffix) :]
    return name, ""


def output_path(source: ImageSource) -> Path:
    """The path a prediction for ``source`` is named after: the file, or ``CASE.ext`` for nnU-Net channel files.

    ``imagesTs/la_007_0000.nii.gz + la_007_0001.nii.gz`` gives ``imagesTs/la_007.nii.gz`` (nnU-Net's
    own naming of predictions); other channel-file lists give channel 0's file.
    """
    first = source_files(source)[0]
    if not isinstance(source, tuple):
        return first
    stem, ending = _stem_and_ending(first)
    match = NNUNET_IMAGE.match(stem)
    return first.with_name(match["case"] + ending) if match and match["channel"] == "0000" else first


def read_source(source: ImageSource | str, *, channels: bool = False) -> ImageRecord:
    """Read an image source into one record ``(C, *spatial)``.

    Args:
        source: A path, or one file per channel (channel order).
        channels: For a single path: keep colour samples / the 4th NIfTI axis as channels
            (:func:`cover.data.readers.read_image`). Channel files are always read as one
            channel each.

    Returns:
        The record; for channel files the channels stacked in the given order, on channel 0's
        grid, with channel 0's geometry and ``meta["channel_files"]`` listing the files. The
        modality is the files' common one (``None`` when they differ).

    Raises:
        DataError: An unreadable file, a channel file with several channels, or one that does
            not lie on channel 0's grid (the message names both files).
    """
    files = source_files(source)
    if len(files) == 1:
        return read_image(files[0], channels=channels)
    first = read_image(files[0])
    affine = None if first.affine is None or first.format in PLAIN_FORMATS else np.asarray(first.affine)
    arrays, modalities = [first.array], {first.modality}
    for path in files[1:]:
        record = read_image(path)
        problem = grid_problem(record, affine, first.spatial_shape, "channel 0")
        if problem is not None:
            raise data_error(
                record.path, f"{problem} (channel 0: {first.path}); every channel file must lie on channel 0's grid"
            )
        arrays.append(record.array)
        modalities.add(record.modality)
    meta: dict[str, Any] = dict(first.meta)
    meta["channel_files"] = [str(p) for p in files]
    return ImageRecord(
        array=np.ascontiguousarray(np.concatenate(arrays, axis=0)),
        spacing=first.spacing,
        affine=first.affine,
        orientation=first.orientation,
        modality=first.modality if len(modalities) == 1 else None,
        format=first.format,
        path=first.path,
        meta=meta,
    )


def group_channel_files(paths: Sequence[Path], channels: int) -> list[ImageSource]:
    """Group nnU-Net channel files (``CASE_0000.ext`` ... ``CASE_{channels-1:04d}.ext``) into one source per case.

    Used for folders of new images (``cover predict`` on an ``imagesTs``-style folder). With one
    channel nothing is grouped (a file named ``slice_0001.png`` is an image of its own); with more,
    every file named ``CASE_XXXX.ext`` belongs to case ``CASE`` of its folder and each case must
    have exactly the channels ``0000`` to ``channels - 1``. Other files (e.g. 4D files whose 4th
    axis holds the channels) stay single sources.

    Args:
        paths: Image files, sorted.
        channels: Input channels of the network.

    Returns:
        Sources in the order of each case's first file.

    Raises:
        DataError: A case lacking a channel file or with one beyond ``channels``.
    """
    if channels <= 1:
        return list(paths)
    groups: dict[tuple[Path, str, str], dict[int, Path]] = {}
    order: list[ImageSource | tuple[Path, str, str]] = []
    for path in paths:
        stem, ending = _stem_and_ending(path)
        match = NNUNET_IMAGE.match(stem)
        if match is None or path.is_dir():
            order.append(path)
            continue
        key = (path.parent, match["case"], ending)
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key][int(match["channel"])] = path
    sources: list[ImageSource] = []
    for item in order:
        if isinstance(item, Path):
            sources.append(item)
            continue
        folder, case, ending = item
        found = groups[item]
        missing = [c for c in range(channels) if c not in found]
        extra = sorted(c for c in found if c >= channels)
        if missing or extra:
            problem = (
                f"lacks {case}_{missing[0]:04d}{ending}"
                if missing
                else f"has {case}_{extra[0]:04d}{ending} beyond the checkpoint's {channels} channels"
            )
            raise data_error(
                folder, f"case {case} {problem}; files named CASE_XXXX{ending} are the channels of case CASE"
            )
        sources.append(tuple(found[c] for c in range(channels)))
    return sources


def names_of_channels(content: dict[str, Any]) -> list[str] | None:
    """Channel names of an nnU-Net ``channel_names`` or MSD ``modality`` mapping, in channel order."""
    table = content.get("channel_names", content.get("modality"))
    if not isinstance(table, dict) or not table:
        return None
    try:
        return [str(table[key]) for key in sorted(table, key=int)]
    except ValueError:
        return None
