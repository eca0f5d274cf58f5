"""Scoring a fine-tuned checkpoint on labeled data: ``cover evaluate`` and :func:`cover.evaluate`.

Segmentation: whole-image inference (:mod:`cover.downstream.inference`: sliding windows for
3D and for 2D images larger than the training size), then per case and per foreground class
Dice and HD95 (:mod:`cover.downstream.metrics`; a class absent from both prediction and
label is not scored, one present in only one of them scores Dice 0 and the worst HD95, see
:data:`~cover.downstream.metrics.EMPTY_CLASS_RULE`). Classification: AUC and accuracy.

Writes ``metrics.csv`` (one row per case), ``metrics.json`` (mean and std per class and
overall), ``cases.png`` (image, label and prediction of a few cases; segmentation) and
``config.yaml`` (the arguments).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cover.config import save_yaml
from cover.data.channels import source_text
from cover.data.labels import check_label_values, count_classes
from cover.data.record import data_error
from cover.downstream.cases import Case, check_channels, find_cases
from cover.downstream.figures import is_ras, plot_cases
from cover.downstream.inference import classify, segment_case
from cover.downstream.loading import checkpoint_load_options, load_case
from cover.downstream.metrics import (
    EMPTY_CLASS_RULE,
    classification_scores,
    mean_std,
    segmentation_scores,
    summarise,
)
from cover.downstream.outputs import prepare_output, write_csv
from cover.engine.distributed import resolve_device
from cover.errors import ConfigError
from cover.models.loading import load_finetuned
from cover.runtime import json_safe, progress_bar


def class_labels(metadata: dict[str, Any]) -> list[str]:
    """Names of a checkpoint's classes (``"0"``, ``"1"``, ... when it has none)."""
    names = metadata.get("class_names")
    return [str(n) for n in names] if names else [str(k) for k in range(int(metadata["num_classes"]))]


def class_columns(probabilities: np.ndarray, names: list[str]) -> dict[str, Any]:
    """``{"prediction": name, "prob_<name>": p, ...}`` of one ``(num_classes,)`` probability vector."""
    columns: dict[str, Any] = {"prediction": names[int(probabilities.argmax())]}
    columns.update({f"prob_{n}": float(p) for n, p in zip(names, probabilities, strict=True)})
    return columns


def _demo_sources(metadata: dict[str, Any], out: Path) -> tuple[str, str]:
    if not metadata.get("demo"):
        raise ConfigError("images: give --images and --labels (or --datalist) to evaluate on")
    from cover.data.demo import write_demo_task

    paths = write_demo_task(out / "demo_data", size=int(metadata["patch_size"][0]))
    return paths["test_images"], paths["test_labels"]


def evaluate(
    checkpoint: str | Path,
    images: str | None = None,
    labels: str | None = None,
    datalist: str | None = None,
    out: str | Path = "cover_runs/evaluate",
    *,
    device: str = "auto",
    overwrite: bool = False,
    overlap: float | None = None,
    sw_batch_size: int = 4,
    figure_cases: int = 4,
    label_values: str | Sequence[int] | None = None,
) -> dict[str, Any]:
    """Score a fine-tuned checkpoint on labeled cases.

    Args:
        checkpoint: A ``cover finetune`` checkpoint (or its output folder: ``best.pt``).
        images: Image folder or file (seg: with ``labels``, a folder of label maps; cls: a CSV
            of classes or class sub-folders).
        labels: See ``images``.
        datalist: JSON/CSV datalist instead of ``images``/``labels``. With neither, a
            checkpoint of the built-in demo is scored on the demo's test slab.
        out: Output folder.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        overwrite: Allow writing into a non-empty folder.
        overlap: Sliding-window overlap (default: the checkpoint's).
        sw_batch_size: Windows per forward pass.
        figure_cases: Cases shown in ``cases.png``.
        label_values: The values these label maps hold, value ``i`` read as class ``i``
            (``"0,255"`` or a list); ``None``: the checkpoint's (as fine-tuned), else the
            values must be the class indices.

    Returns:
        The summary written to ``metrics.json``. seg: ``mean_dice``, ``mean_dice_std`` (over
        cases of the per-case mean foreground Dice), ``mean_hd95``, ``classes`` (per class
        ``dice``/``hd95`` mean and std and ``scored_cases``), ``num_cases``, ``empty_classes``
        (how classes absent from a case are counted); cls: ``auc``, ``accuracy``.

    Examples:
        The fine-tuned demo of :func:`cover.finetune`'s example, scored on the demo's 10 test
        slices:

        >>> import cover
        >>> metrics = cover.evaluate("runs/seg", out="runs/eval")
        >>> metrics["num_cases"], sorted(metrics["classes"])
        (10, ['CSF', 'GM', 'WM'])
    """
    torch_device = resolve_device(device)
    network, metadata = load_finetuned(checkpoint, torch_device)
    folder = prepare_output(out, overwrite, "evaluate")
    if images is None and datalist is None:
        images, labels = _demo_sources(metadata, folder)
    task = metadata["task"]
    names = class_labels(metadata)
    cases = _labeled_cases(metadata, names, images, labels, datalist, checkpoint)
    options = checkpoint_load_options(metadata, keep_record=task == "seg")
    if label_values is not None:
        options["label_values"] = _label_values(label_values, metadata)
    overlap = float(metadata.get("overlap", 0.25) if overlap is None else overlap)
    sources = {"checkpoint": str(checkpoint), "images": images, "labels": labels, "datalist": datalist}
    settings = {"device": device, "overlap": overlap, "sw_batch_size": sw_batch_size}
    given_values = list(options["label_values"] or []) or None
    save_yaml({**sources, "out": str(out), **settings, "label_values": given_values}, folder / "config.yaml")
    if task == "cls":
        summary = _evaluate_classification(network, cases, options, names, torch_device, folder)
    else:
        summary = _evaluate_segmentation(
            network, cases, options, metadata, names, overlap, sw_batch_size, figure_cases, torch_device, folder
        )
    summary["checkpoint"] = str(checkpoint)
    if options["label_values"]:
        summary["label_values"] = list(options["label_values"])
    summary = json_safe(summary)
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def _labeled_cases(
    metadata: dict[str, Any],
    names: list[str],
    images: str | None,
    labels: str | None,
    datalist: str | None,
    checkpoint: str | Path,
) -> list[Case]:
    """The labeled cases, checked against the checkpoint (channels; classes for classification).

    Args:
        metadata: The checkpoint's metadata (``task``, ``in_channels``, ``channel_names``).
        names: The checkpoint's class names.
        images: Image folder or file (see :func:`evaluate`).
        labels: Label folder or class CSV.
        datalist: JSON/CSV datalist instead of ``images``/``labels``.
        checkpoint: The checkpoint's path (for messages).

    Returns:
        The cases; for classification each ``target`` is the checkpoint's class index.

    Raises:
        DataError: Channels do not fit the checkpoint, or a class is not one of its classes.
    """
    cases, found_names = find_cases(metadata["task"], images, labels, datalist)
    names_from = datalist or (images if labels is None else None)
    theirs = metadata.get("channel_names")
    check_channels(cases, int(metadata["in_channels"]), names_from, theirs, checkpoint, option=False)
    if metadata["task"] != "cls":
        return cases
    lookup = {n: i for i, n in enumerate(names)}
    missing = sorted(set(found_names or []) - set(lookup))
    if missing:
        raise data_error(labels or datalist or images, f"classes {missing} are not classes of {checkpoint} {names}")
    return [Case(c.name, c.image, target=lookup[found_names[c.target]]) for c in cases]


def _label_values(given: str | Sequence[int], metadata: dict[str, Any]) -> tuple[int, ...]:
    """``label_values`` given to evaluate: valid, for a segmentation checkpoint, one per class."""
    values = given.split(",") if isinstance(given, str) else given
    try:
        checked = check_label_values([int(v) for v in values])
    except ValueError:
        raise ConfigError(f"label_values: expected integers separated by commas, got {given!r}") from None
    if metadata["task"] != "seg" or len(checked) != int(metadata["num_classes"]):
        raise ConfigError(
            f"label_values: {len(checked)} values (one per class) but the checkpoint is a {metadata['task']} "
            f"model of {metadata['num_classes']} classes"
        )
    return checked


def _evaluate_segmentation(
    network: torch.nn.Module,
    cases: list[Case],
    options: dict[str, Any],
    metadata: dict[str, Any],
    names: list[str],
    overlap: float,
    sw_batch_size: int,
    figure_cases: int,
    device: torch.device,
    folder: Path,
) -> dict[str, Any]:
    num_classes = int(metadata["num_classes"])
    rows, shown, ras = [], [], []
    for case in progress_bar(cases, desc="evaluate", dynamic_ncols=True):
        loaded = load_case(case, **options)
        found = [(case.label, torch.unique(loaded.label).numpy())]
        count_classes(found, num_classes, f"the checkpoint has {num_classes} classes")
        prediction = segment_case(
            network, loaded.image.to(device), metadata, overlap=overlap, sw_batch_size=sw_batch_size
        )
        scores = segmentation_scores(prediction, loaded.label, num_classes, spacing=loaded.record.spacing)
        row: dict[str, Any] = {"case": case.name, "image": source_text(case.image), "label": str(case.label)}
        for k in range(1, num_classes):
            row[f"dice_{names[k]}"] = scores["dice"][k - 1]
        for k in range(1, num_classes):
            row[f"hd95_{names[k]}"] = scores["hd95"][k - 1]
        row["mean_dice"] = mean_std(scores["dice"])[0]
        row["mean_hd95"] = mean_std(scores["hd95"])[0]
        rows.append(row)
        if len(shown) < figure_cases:
            shown.append((case.name, loaded.image.numpy(), loaded.label.numpy(), prediction.numpy()))
            ras.append(is_ras(loaded.record))
    if not rows:
        raise ConfigError("images: no cases to evaluate")
    write_csv(rows, folder / "metrics.csv")
    plot_cases(shown, num_classes, folder / "cases.png", names, ras=ras)
    stats = summarise(rows, [k for k in rows[0] if k.startswith(("dice_", "hd95_", "mean_"))])
    classes = {
        names[k]: {
            "dice_mean": stats[f"dice_{names[k]}"]["mean"],
            "dice_std": stats[f"dice_{names[k]}"]["std"],
            "hd95_mean": stats[f"hd95_{names[k]}"]["mean"],
            "hd95_std": stats[f"hd95_{names[k]}"]["std"],
            "scored_cases": int(sum(not math.isnan(row[f"dice_{names[k]}"]) for row in rows)),
        }
        for k in range(1, num_classes)
    }
    return {
        "task": "seg",
        "num_cases": len(rows),
        "mean_dice": stats["mean_dice"]["mean"],
        "mean_dice_std": stats["mean_dice"]["std"],
        "mean_hd95": stats["mean_hd95"]["mean"],
        "mean_hd95_std": stats["mean_hd95"]["std"],
        "classes": classes,
        "hd95_units": "mm (pixels for images without spacing)",
        "empty_classes": EMPTY_CLASS_RULE,
    }


def _evaluate_classification(
    network: torch.nn.Module,
    cases: list[Case],
    options: dict[str, Any],
    names: list[str],
    device: torch.device,
    folder: Path,
) -> dict[str, Any]:
    rows, probabilities = [], []
    for case in progress_bar(cases, desc="evaluate", dynamic_ncols=True):
        loaded = load_case(case, **options)
        probs = classify(network, loaded.image[None].to(device))[0].cpu().numpy()
        probabilities.append(probs)
        rows.append({"case": case.name, "image": source_text(case.image), "label": names[case.target]})
        rows[-1].update(class_columns(probs, names))
    if not rows:
        raise ConfigError("images: no cases to evaluate")
    write_csv(rows, folder / "metrics.csv")
    scores = classification_scores(np.stack(probabilities), np.asarray([c.target for c in cases]))
    return {
        "task": "cls",
        "num_cases": len(rows),
        "auc": scores["auc"] if not math.isnan(scores["auc"]) else None,
        "accuracy": scores["accuracy"],
        "class_names": names,
    }
