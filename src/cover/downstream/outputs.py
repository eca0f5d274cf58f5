"""Output folders of the downstream commands, and where a prediction for an input file goes."""

from __future__ import annotations

from pathlib import Path

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
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"out: {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        resume = "pass --resume auto to continue it, " if resumable else ""
        raise ConfigError(
            f"out: {folder} already holds files of another run; {resume}pass --overwrite to replace its results "
            f"or choose another --out for cover {command}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def mask_path(image: Path, fmt: str, root: Path, out: Path) -> Path:
    """Where the mask of ``image`` goes: ``out`` + its path relative to ``root``, same format.

    Args:
        image: Input image file or DICOM series folder.
        fmt: Its format (``ImageRecord.format``).
        root: The folder the images were found in (or the single image).
        out: Output folder.

    Returns:
        The mask path (input suffix kept where the format can hold a label map, else
        ``.png``/``.npy``/``.nii.gz``).
    """
    relative = image.relative_to(root) if root.is_dir() and image.is_relative_to(root) else Path(image.name)
    if relative == Path("."):
        relative = Path(image.name)
    suffix = MASK_SUFFIX.get(fmt, ".nii.gz")
    if suffix is None:
        return out / relative
    return out / relative.parent / (file_stem(relative) + suffix)
