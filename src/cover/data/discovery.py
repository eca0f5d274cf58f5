"""Finding images: folder scans and datalist files (MONAI-style JSON, or CSV).

A *folder scan* returns one path per image: image files by suffix, DICOM files by suffix or
by their ``DICM`` magic (files without extension), and a folder whose DICOM files form one
series as that folder (see :func:`cover.data.dicom.scan_dicom_folder`). A folder holding
several series is returned once too; reading it then fails with a message asking to give
each series its own folder.

Pretraining uses :func:`find_unlabeled_images`, which also leaves out what a folder holds
besides images: NumPy arrays and label maps, by the rule of :func:`not_an_image`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from cover.data.dicom import is_dicom_file, scan_dicom_folder
from cover.data.readers import SUFFIX_FORMATS
from cover.data.record import data_error

#: Files that are never images even though they may sit beside them.
_IGNORED_SUFFIXES = frozenset({".json", ".csv", ".txt", ".md", ".raw", ".zraw", ".py", ".pyc", ".yaml", ".yml", ".log"})

#: Datalist keys read by :func:`load_datalist` when no split is asked for.
DATALIST_SPLITS = ("training", "validation", "test")


#: Name tokens that mark a label map (``a_seg.nii.gz``, ``mask_001.png``, ``case1-gt.nrrd``).
LABEL_TOKENS = frozenset({"seg", "segmentation", "segmentations", "label", "labels", "mask", "masks", "gt"})

#: Folder names (lower case) that hold label maps (nnU-Net's ``labelsTr``/``labelsTs`` included).
LABEL_FOLDERS = frozenset(
    {"labels", "labelstr", "labelsts", "masks", "segmentations", "segs", "gt", "ground_truth", "annotations"}
)

#: NumPy files: read as images only when named explicitly (as ``--data`` or in a datalist).
ARRAY_SUFFIXES = (".npy", ".npz")


def _stem_tokens(path: Path) -> list[str]:
    name = path.name.lower()
    for suffix in sorted(SUFFIX_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return [t for t in re.split(r"[_\-. ]+", name) if t]


def not_an_image(path: Path, root: Path) -> str | None:
    """Why a file found in a folder scan is not taken as an *unlabeled image* (pretraining).

    The rule, in this order:

    1. NumPy arrays (``.npy``, ``.npz``) found in a folder are never images: such files hold
       features, embeddings and masks as often as pictures. Name one as ``--data`` or list it in a
       datalist to use it.
    2. Label maps by name: a file whose name (without its image suffix) starts or ends with one
       of :data:`LABEL_TOKENS` as a separate word (``a_seg``, ``brain-mask``, ``mask_001``,
       ``case1.label``), or that sits below a folder named in :data:`LABEL_FOLDERS` (``labels``,
       ``labelsTr``, ``masks``, ...), relative to ``root``.

    Args:
        path: A file (or DICOM series folder) returned by :func:`find_images`.
        root: The folder that was scanned.

    Returns:
        A short reason, or ``None`` for an image.
    """
    if path.name.lower().endswith(ARRAY_SUFFIXES):
        return "NumPy array"
    tokens = _stem_tokens(path)
    if tokens and (tokens[0] in LABEL_TOKENS or tokens[-1] in LABEL_TOKENS):
        return "label map by name"
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    if any(part.lower() in LABEL_FOLDERS for part in relative.parts[:-1]):
        return "label map by folder"
    return None


def find_unlabeled_images(root: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Images for pretraining under ``root``, and the files left out by :func:`not_an_image`.

    Args:
        root: A folder (searched recursively) or one image file (always used, NumPy included).

    Returns:
        ``(images, left_out)``; ``left_out`` holds ``(path, reason)`` pairs.
    """
    base = Path(root)
    found = find_images(base)
    if base.is_file():
        return found, []
    images, left_out = [], []
    for path in found:
        reason = not_an_image(path, base)
        if reason is None:
            images.append(path)
        else:
            left_out.append((path, reason))
    return images, left_out


def _has_image_suffix(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in SUFFIX_FORMATS) and not name.endswith((".dcm", ".dicom"))


def _candidate_dicom(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    if path.suffix.lower() in _IGNORED_SUFFIXES:
        return False
    return is_dicom_file(path)


def scan_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """Images in one folder (not recursive) and the files ignored there.

    Args:
        folder: A directory.

    Returns:
        ``(images, ignored)``: sorted image paths (files, or ``folder`` itself for a DICOM
        series) and the other regular files.
    """
    images: list[Path] = []
    dicoms: list[Path] = []
    ignored: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        if _has_image_suffix(entry):
            images.append(entry)
        elif _candidate_dicom(entry):
            dicoms.append(entry)
        else:
            ignored.append(entry)
    if dicoms:
        series, loose = scan_dicom_folder(folder, dicoms)
        if series:
            images.append(folder)
        images.extend(loose)
    return sorted(images), ignored


def find_images(root: str | Path, *, recursive: bool = True) -> list[Path]:
    """List the images under ``root``.

    Args:
        root: A folder (or a single image file, returned as a one-element list).
        recursive: Descend into sub-folders (hidden ones are skipped).

    Returns:
        Sorted paths; a DICOM series is one entry (its folder).

    Raises:
        DataError: ``root`` does not exist.
    """
    return find_images_and_ignored(root, recursive=recursive)[0]


def find_images_and_ignored(root: str | Path, *, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """Like :func:`find_images`, also returning the non-image files that were skipped."""
    base = Path(root)
    if not base.exists():
        raise data_error(base, "no such file or folder")
    if base.is_file():
        return [base], []
    images: list[Path] = []
    ignored: list[Path] = []
    folders = [base]
    while folders:
        folder = folders.pop()
        found, skipped = scan_folder(folder)
        images.extend(found)
        ignored.extend(skipped)
        if recursive:
            folders.extend(
                sorted(
                    (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                    reverse=True,
                )
            )
    return sorted(set(images)), sorted(ignored)


def _resolve(entry: Any, base: Path, source: Path, where: str) -> dict[str, Any]:
    """Normalise one datalist entry to a dict with absolute ``image``/``label`` paths."""
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, dict) or "image" not in entry:
        raise data_error(source, f"{where}: each entry needs an 'image' path, got {entry!r}")
    out = dict(entry)
    for key in ("image", "label"):
        value = out.get(key)
        if value is None:
            continue
        if key == "image" and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            files = tuple(_absolute(v, base) for v in value)  # one file per input channel
            out[key] = files[0] if len(files) == 1 else files
            continue
        if not isinstance(value, str):
            wanted = "one path string or a list of channel files" if key == "image" else "one path string"
            raise data_error(source, f"{where}: '{key}' must be {wanted}, got {value!r}")
        out[key] = _absolute(value, base)
    return out


def _absolute(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def load_datalist(path: str | Path, *, split: str | None = None) -> list[dict[str, Any]]:
    r"""Read a datalist of images (and optional labels).

    Accepted layouts:

    - JSON list: ``[{"image": "a.nii.gz", "label": "a_seg.nii.gz"}, "b.nii.gz", ...]``; an
      ``image`` may list one file per input channel (``["a_t1.nii.gz", "a_t2.nii.gz"]``).
    - JSON dict, MONAI decathlon style: ``{"training": [...], "validation": [...],
      "test": [...]}`` (other keys ignored).
    - CSV with a header row containing ``image`` and optionally ``label``.

    Relative paths are relative to the datalist file's folder.

    Args:
        path: The ``.json`` or ``.csv`` file.
        split: For dict-style JSON, the key to read; ``None`` reads all of
            :data:`DATALIST_SPLITS` and tags each entry with ``"split"``.

    Returns:
        Entries as dicts with ``image`` (a ``Path``, or a tuple of one ``Path`` per channel), ``label``
        (a ``Path``, if given) and any other columns/keys unchanged.

    Raises:
        DataError: Missing or malformed file, missing ``image`` column/key, empty list.
    """
    source = Path(path)
    if not source.is_file():
        raise data_error(source, "datalist file not found")
    suffix = source.suffix.lower()
    if suffix == ".json":
        entries = _json_entries(source, split)
    elif suffix == ".csv":
        entries = _csv_entries(source)
    else:
        raise data_error(source, "datalist must be a .json or .csv file")
    if not entries:
        raise data_error(source, "datalist has no entries")
    return entries


def _json_entries(source: Path, split: str | None) -> list[dict[str, Any]]:
    """Entries of a JSON datalist: a list, or a dict of lists per split (see :func:`load_datalist`)."""
    base = source.parent
    try:
        content = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise data_error(source, f"invalid JSON ({exc})") from exc
    if isinstance(content, list):
        return [_resolve(e, base, source, f"entry {i}") for i, e in enumerate(content)]
    if not isinstance(content, dict):
        raise data_error(source, "JSON datalist must be a list or a dict of lists")
    keys = [split] if split else [k for k in DATALIST_SPLITS if k in content]
    if split and split not in content:
        raise data_error(source, f"datalist has no {split!r} list")
    if not keys:
        raise data_error(source, f"JSON datalist needs a list or one of {DATALIST_SPLITS}")
    entries = []
    for key in keys:
        items = content[key]
        if not isinstance(items, list):
            raise data_error(source, f"{key!r} must be a list of entries")
        for i, item in enumerate(items):
            entry = _resolve(item, base, source, f"{key}[{i}]")
            entry.setdefault("split", key)
            entries.append(entry)
    return entries


def _csv_entries(source: Path) -> list[dict[str, Any]]:
    """Entries of a CSV datalist with an ``image`` (and optional ``label``) column; empty labels are dropped."""
    entries = []
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "image" not in [f.strip() for f in reader.fieldnames]:
            raise data_error(source, "CSV datalist needs a header row with an 'image' column")
        for i, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("image"):
                raise data_error(source, f"line {i}: empty 'image' value")
            if not row.get("label"):
                row.pop("label", None)
            entries.append(_resolve(row, source.parent, source, f"line {i}"))
    return entries
