"""Labeled cases: pairing images with labels, class labels, and the reproducible case split.

A *case* is one image with its label: a label-map file (segmentation) or a class index
(classification). Cases come from

- a folder pair (``images`` + ``labels``): label maps matched by file-name stem, where the
  label may also carry one of :data:`LABEL_SUFFIXES` (``a.nii.gz`` <-> ``a_seg.nii.gz``); nnU-Net
  channel files ``a_0000.nii.gz``, ``a_0001.nii.gz`` <-> ``a.nii.gz`` are one case of two channels;
- for classification, ``images`` + a CSV (``image``, ``label`` columns; the image by file
  name or stem), or one sub-folder of ``images`` per class;
- a datalist (JSON/CSV, :func:`cover.data.discovery.load_datalist`) with ``image`` (a path, or a
  list of one file per channel) and ``label`` (a path for segmentation, a class value for
  classification);
- a dataset folder (:mod:`cover.data.folders`): an nnU-Net raw dataset (``imagesTr``/``labelsTr``;
  ``case_0000.ext`` <-> ``case.ext`` also when given as ``images``/``labels``) or an MSD
  ``dataset.json`` (its labeled ``training`` list).

:func:`split_cases` draws the validation cases and the labeled subset from a seed; the same
seed gives the same cases, and a smaller ``label_fraction`` picks a subset of a larger one.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cover.data.channels import NNUNET_IMAGE, ImageSource, source_files
from cover.data.discovery import find_images, load_datalist
from cover.data.readers import SUFFIX_FORMATS
from cover.data.record import data_error
from cover.errors import ConfigError, DataError

#: nnU-Net's suffix of a (single-channel) image name (``CASE_0000``), absent from its label's name.
NNUNET_CHANNEL = "_0000"

#: Endings a label-map file name may add to its image's stem.
LABEL_SUFFIXES = ("", "_seg", "_label", "_labels", "_mask", "_gt")


@dataclass(frozen=True)
class Case:
    """One labeled image.

    Attributes:
        name: Case name (the image's file-name stem, or its path relative to the folder).
        image: Image file (or DICOM series folder), or one file per channel (a tuple, channel order).
        label: Label-map file (segmentation), else ``None``.
        target: Class index (classification), else ``None``.
    """

    name: str
    image: ImageSource
    label: Path | None = None
    target: int | None = None


def file_stem(path: str | Path) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in sorted(SUFFIX_FORMATS, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _relative_name(path: Path, root: Path) -> str:
    if root.is_file():
        return file_stem(path)
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return str(relative.parent / file_stem(relative)) if relative.parent != Path(".") else file_stem(relative)


def _class_index(values: list[str]) -> tuple[list[int], list[str]]:
    """Class indices and sorted class names (numerically when all values are integers)."""
    unique = sorted(set(values))
    try:
        unique = sorted(unique, key=lambda v: float(v))
    except ValueError:
        pass
    lookup = {v: i for i, v in enumerate(unique)}
    return [lookup[v] for v in values], unique


def _pair_label_maps(images: list[Path], image_root: Path, label_root: Path) -> list[Case]:
    labels = find_images(label_root)
    by_stem: dict[str, Path] = {}
    for path in labels:
        by_stem.setdefault(_relative_name(path, label_root), path)
    cases: list[Case | str] = []
    missing: list[Path] = []
    channels: dict[str, dict[int, Path]] = {}  # nnU-Net: CASE -> {channel: CASE_XXXX file}
    for image in images:
        name = _relative_name(image, image_root)
        match = next((by_stem[name + s] for s in LABEL_SUFFIXES if name + s in by_stem), None)
        nnunet = NNUNET_IMAGE.match(name) if match is None else None
        if nnunet is not None and nnunet["case"] in by_stem:
            # nnU-Net: imagesTr/CASE_XXXX.ext (channel XXXX) <-> labelsTr/CASE.ext
            if not channels.get(nnunet["case"]):
                cases.append(nnunet["case"])  # its place in the order; filled in below
            channels.setdefault(nnunet["case"], {})[int(nnunet["channel"])] = image
        elif match is None:
            missing.append(image)
        else:
            cases.append(Case(name=name, image=image, label=match))
    if missing:
        raise data_error(
            missing[0],
            f"no label map in {label_root} for this image (looked for the same stem, optionally with "
            f"{', '.join(s for s in LABEL_SUFFIXES if s)}); {len(missing)} of {len(images)} images lack labels",
        )
    out = []
    for case in cases:
        if isinstance(case, Case):
            out.append(case)
            continue
        files = channels[case]
        gap = next((c for c in range(len(files)) if c not in files), None)
        if gap is not None:
            present = files[min(files)]
            raise data_error(
                present.parent / f"{case}_{gap:04d}{present.name[len(file_stem(present)) :]}",
                f"channel {gap} of case {case} not found (nnU-Net channel files CASE_0000 ... "
                f"CASE_{len(files) - 1:04d} are needed without gaps)",
            )
        ordered = tuple(files[c] for c in range(len(files)))
        out.append(Case(name=case, image=ordered[0] if len(ordered) == 1 else ordered, label=by_stem[case]))
    return out


def _class_csv(path: Path) -> dict[str, str]:
    """``image`` (file name or stem) -> class value from a CSV with ``image`` and ``label`` columns."""
    if not path.is_file() or path.suffix.lower() != ".csv":
        raise data_error(path, "classification labels must be a CSV file with 'image' and 'label' columns")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in reader.fieldnames or []]
        if "image" not in fields or "label" not in fields:
            raise data_error(path, f"CSV needs 'image' and 'label' columns, found {fields}")
        table = {}
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if row["image"]:
                table[file_stem(row["image"])] = row["label"]
    return table


def _class_cases(images: list[Path], root: Path, labels: str | None) -> tuple[list[Case], list[str]]:
    if labels is not None:
        table = _class_csv(Path(labels))
        values = []
        for image in images:
            stem = file_stem(image)
            if stem not in table:
                raise data_error(image, f"no row for this image (stem {stem!r}) in {labels}")
            values.append(table[stem])
    else:
        if root.is_file():
            raise data_error(root, "classification of a single file needs a labels CSV")
        values = [
            image.relative_to(root).parts[0] if len(image.relative_to(root).parts) > 1 else "" for image in images
        ]
        if any(v == "" for v in values):
            raise data_error(root, "images need a labels CSV, or must sit in one sub-folder per class")
    targets, names = _class_index(values)
    cases = [Case(_relative_name(i, root), i, target=t) for i, t in zip(images, targets, strict=True)]
    return cases, names


def _datalist_entries(source: Path) -> list[dict]:
    """A datalist's fine-tuning entries: a MONAI/MSD ``test`` list (often unlabeled) is left out."""
    entries = load_datalist(source)
    if any(e.get("split") in ("training", "validation") for e in entries):
        entries = [e for e in entries if e.get("split") != "test"]
    return entries


def datalist_validation(datalist: str | None) -> list[bool] | None:
    """Which cases of ``find_cases(datalist=...)`` the datalist lists under ``validation``.

    Args:
        datalist: A datalist file (or ``None``).

    Returns:
        One flag per case, in :func:`find_cases` order; ``None`` when the datalist has no
        ``validation`` list (or is a dataset folder), so the split is drawn from the seed.
    """
    if datalist is None:
        return None
    from cover.data.folders import dataset_json_of

    if dataset_json_of(datalist) is not None or Path(datalist).suffix.lower() != ".json":
        return None
    flags = [e.get("split") == "validation" for e in _datalist_entries(Path(datalist))]
    return flags if any(flags) else None


def _datalist_cases(datalist: str, task: str) -> tuple[list[Case], list[str] | None]:
    source = Path(datalist)
    entries = _datalist_entries(source)
    if any("label" not in e and "class" not in e for e in entries):
        raise data_error(source, "every entry needs a 'label' (label map for seg, class for cls)")
    names = [file_stem(source_files(e["image"])[0]) for e in entries]
    if task == "seg":
        return [Case(n, e["image"], label=e["label"]) for n, e in zip(names, entries, strict=True)], None
    # load_datalist resolves 'label' as a path relative to the datalist; recover the value.
    values = [
        str(e["class"]) if "class" in e else os.path.relpath(e["label"], source.parent).replace(os.sep, "/")
        for e in entries
    ]
    targets, classes = _class_index(values)
    return [Case(n, e["image"], target=t) for n, e, t in zip(names, entries, targets, strict=True)], classes


def _dataset_folder_cases(path: str, task: str) -> list[Case] | None:
    """Labeled cases of an nnU-Net raw dataset / MSD ``dataset.json`` (``None``: not one)."""
    from cover.data.folders import read_dataset_folder

    dataset = read_dataset_folder(path)
    if dataset is None:
        return None
    if task != "seg":
        raise data_error(dataset.source, "a segmentation dataset folder; use --task seg")
    if not dataset.training:
        raise data_error(dataset.source, "no labeled training cases")
    return [Case(c.name, c.source, label=c.label) for c in dataset.training]


def channel_names_of(path: str | None) -> list[str] | None:
    """Channel names of a dataset folder (nnU-Net ``channel_names``, MSD ``modality``), else ``None``.

    Args:
        path: What was given as ``images`` or ``datalist`` (a folder, a file, or ``None``).
    """
    if path is None:
        return None
    from cover.data.folders import dataset_json_of, read_dataset_folder

    if dataset_json_of(path) is None:
        return None
    dataset = read_dataset_folder(path)
    return None if dataset is None else dataset.channel_names


def check_channels(
    cases: list[Case],
    in_channels: int,
    folder: str | None,
    theirs: list[str] | None,
    what: Any,
    *,
    option: bool = True,
) -> list[str] | None:
    """Check the cases' channels against ``in_channels`` and a checkpoint's channel names.

    Args:
        cases: The cases to be read.
        in_channels: The network's input channels.
        folder: What was given as ``datalist`` or ``images`` (a dataset folder has channel names).
        theirs: The checkpoint's channel names (``None``: unknown or no checkpoint).
        what: The checkpoint, for the message.
        option: ``in_channels`` is an option the user may change (fine-tuning); else the
            checkpoint's (evaluate, predict).

    Returns:
        The channel names to record: the data's, else ``theirs``, else ``None``.

    Raises:
        ConfigError: A case with another number of channel files, or a dataset naming another
            number of channels, than ``in_channels`` (the message names the option to pass).
        DataError: The data's channel names are the checkpoint's in another order (a swap would
            run and give wrong results).
    """
    expects = f"in_channels: {in_channels}" if option else f"{what} expects {in_channels} channel(s)"
    for case in cases:
        files = source_files(case.image)
        if len(files) > 1 and len(files) != in_channels:
            advice = f"; pass --in-channels {len(files)}" if option else ""
            count = f"{len(files)} channel files ({files[0]}, ...)"
            raise ConfigError(f"{expects} but case {case.name} has {count}{advice}")
    ours = channel_names_of(folder)
    if ours is not None and len(ours) != in_channels:
        advice = f"; pass --in-channels {len(ours)}" if option else ""
        raise ConfigError(f"{expects} but the dataset names {len(ours)} channel(s) {ours}{advice}")
    if not ours or not theirs or len(ours) != len(theirs):
        return ours or theirs
    mine, other = [n.lower() for n in ours], [n.lower() for n in theirs]
    if mine != other and sorted(mine) == sorted(other):
        raise DataError(
            f"channel order: the data's channels are {ours} but {what} was trained on {theirs}; "
            "reorder the channel files (CASE_XXXX) to the checkpoint's order"
        )
    return ours


def find_cases(
    task: str, images: str | None = None, labels: str | None = None, datalist: str | None = None
) -> tuple[list[Case], list[str] | None]:
    """The labeled cases of a folder pair or datalist.

    Args:
        task: ``seg`` or ``cls``.
        images: Image folder or file.
        labels: seg: label-map folder; cls: CSV of classes (or ``None`` for class sub-folders).
        datalist: JSON/CSV datalist (instead of ``images``/``labels``).

    Returns:
        ``(cases, class_names)``; class names for classification, else ``None``.

    Raises:
        DataError: Missing folders, images without labels, malformed CSV/datalist.
    """
    folder = datalist if datalist is not None else images if labels is None else None
    if folder is not None and (found_folder := _dataset_folder_cases(folder, task)) is not None:
        return found_folder, None
    if datalist is not None:
        return _datalist_cases(datalist, task)
    if images is None:
        raise ConfigError("images: give an image folder (with labels) or a datalist")
    root = Path(images)
    found = find_images(root)
    if not found:
        raise data_error(root, "no images found")
    if task == "cls":
        return _class_cases(found, root, labels)
    if labels is None:
        raise ConfigError("labels: segmentation needs a labels folder matching images")
    label_root = Path(labels)
    if not label_root.exists():
        raise data_error(label_root, "no such file or folder")
    return _pair_label_maps(found, root, label_root), None


def split_cases(
    num_cases: int,
    *,
    seed: int,
    val_fraction: float,
    label_fraction: float | None = None,
    num_labeled: int | None = None,
) -> dict[str, list[int]]:
    """Draw validation cases and the labeled training subset, reproducibly from ``seed``.

    One permutation of the cases is drawn from ``seed``: its first ``round(val_fraction * n)``
    cases (at least one when ``val_fraction > 0`` and ``n >= 2``) validate, and the labeled
    cases are the first ``num_labeled`` (or ``ceil(label_fraction * pool)``) of the rest, so
    smaller budgets are subsets of larger ones.

    Args:
        num_cases: Number of cases ``n``.
        seed: Seed of the permutation.
        val_fraction: Fraction held out for validation (0 for none).
        label_fraction: Fraction of the remaining pool that is labeled (``None``: all).
        num_labeled: Number of labeled cases (wins over ``label_fraction``).

    Returns:
        ``{"train": [...], "val": [...], "unused": [...]}`` sorted case indices.
    """
    order = np.random.default_rng([int(seed), 0x5B117]).permutation(num_cases).tolist()
    n_val = round(val_fraction * num_cases)
    if val_fraction > 0 and num_cases >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, num_cases - 1)
    val, pool = order[:n_val], order[n_val:]
    if num_labeled is not None:
        if num_labeled > len(pool):
            raise ConfigError(
                f"num_labeled: {num_labeled} is more than the {len(pool)} cases left for training "
                f"({num_cases} cases, {n_val} for validation)"
            )
        count = num_labeled
    elif label_fraction is not None:
        count = max(1, math.ceil(label_fraction * len(pool) - 1e-9))
    else:
        count = len(pool)
    return {"train": sorted(pool[:count]), "val": sorted(val), "unused": sorted(pool[count:])}
