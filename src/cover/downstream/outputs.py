"""Output folders of the downstream commands, and where a prediction for an input file goes."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cover.data.readers import detect_format
from cover.downstream.cases import file_stem
from cover.errors import ConfigError

#: Input format -> suffix of masks written for it (``None``: keep the input's own suffix).
MASK_SUFFIX = {
    "nifti": None,
    "png": None,
    "bmp": None,
    "tiff": None,
    "nrrd": None,
    "mha": None,
    "mhd": None,
    "npy": None,
    "jpeg": ".png",  # lossy JPEG would corrupt a label map
    "npz": ".npy",
    "mgh": ".nii.gz",
    "dicom": ".nii.gz",  # DICOM is not written; NIfTI keeps the geometry
    "dicom-series": ".nii.gz",
}


def prepare_output(out: str | Path, overwrite: bool, command: str, resumable: bool = False) -> Path:
    """Create the output folder, refusing a non-empty one unless ``overwrite``.

    Args:
        out: Output folder.
        overwrite: Allow writing into a folder that already holds files.
        command: Command name for the message (``finetune``, ``evaluate``, ``predict``).
        resumable: The command can resume a run (the message then offers ``--resume auto``).

    Returns:
        The folder.
    """
    folder = check_output(out, overwrite, command, resumable)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_output(out: str | Path, overwrite: bool, command: str, resumable: bool = False) -> Path:
    """Refuse an unusable output folder (see :func:`prepare_output`) without creating or changing anything."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"out: {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        resume = "pass --resume auto to continue it, " if resumable else ""
        raise ConfigError(
            f"out: {folder} already holds files of another run; {resume}pass --overwrite to replace its results "
            f"or choose another --out for cover {command}"
        )
    return folder


def output_suffix(image: Path, fmt: str | None) -> str:
    """Suffix of a mask or warped image written for ``image``: its own, or the format written instead.

    Args:
        image: Input file or DICOM series folder.
        fmt: Its format (``ImageRecord.format`` / :func:`cover.data.readers.detect_format`).

    Returns:
        The input's own suffix (``.nii`` stays ``.nii``, ``.tiff`` stays ``.tiff``) where the format
        can hold a label map, else ``.png``/``.npy``/``.nii.gz`` (see :data:`MASK_SUFFIX`).
    """
    suffix = MASK_SUFFIX.get(fmt or "", ".nii.gz")
    if suffix is not None:
        return suffix
    return image.name[len(file_stem(image)) :]


def mask_path(image: Path, fmt: str | None, root: Path, out: Path) -> Path:
    """Where the mask of ``image`` goes: ``out`` + its path relative to ``root``.

    A mask in the input's own format keeps the input's name (``a.nrrd`` -> ``a.nrrd``); one in
    another format keeps the input's whole name and adds the new suffix (``z090.jpg`` ->
    ``z090.jpg.png``, ``scan.dcm`` -> ``scan.dcm.nii.gz``, series folder ``ct/`` ->
    ``ct.nii.gz``), so ``z090.png`` and ``z090.jpg`` in one folder get two masks.

    Args:
        image: Input image file or DICOM series folder.
        fmt: Its format (``ImageRecord.format``).
        root: The folder the images were found in (or the single image).
        out: Output folder.

    Returns:
        The mask path.
    """
    relative = image.relative_to(root) if root.is_dir() and image.is_relative_to(root) else Path(image.name)
    if relative == Path("."):
        relative = Path(image.name)
    if MASK_SUFFIX.get(fmt or "", ".nii.gz") is None:
        return out / relative
    return out / relative.parent / (relative.name + output_suffix(image, fmt))


def mask_paths(images: Sequence[Path], root: Path, out: Path) -> list[Path]:
    """One distinct mask path per input (:func:`mask_path`; ``-2``, ``-3`` ... added on a clash).

    Clashes are found case-insensitively (``A.png`` and ``a.png`` are one file on macOS and
    Windows); they remain only for inputs from different folders of a datalist, or names like
    ``a.jpg.png`` next to ``a.jpg``.

    Args:
        images: Input files or DICOM series folders, in order.
        root: The folder the images were found in (or the single image).
        out: Output folder.

    Returns:
        The mask paths, in input order, all distinct.
    """
    taken: set[str] = set()
    paths = []
    for image in images:
        target = mask_path(image, detect_format(image), root, out)
        stem, suffix = file_stem(target), target.name[len(file_stem(target)) :]
        number = 1
        while str(target).lower() in taken:
            number += 1
            target = target.with_name(f"{stem}-{number}{suffix}")
        taken.add(str(target).lower())
        paths.append(target)
    return paths


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` (one dict per row, the first row's keys as the header) as CSV to ``path``.

    Args:
        rows: At least one row; every row has the first row's keys.
        path: Destination file.

    Returns:
        ``path``.
    """
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
