"""Applying a fine-tuned checkpoint to new images: ``cover predict`` and :func:`cover.predict`.

Segmentation masks are written with :func:`cover.data.readers.write_like` in the input's own
format and geometry, under the input's relative path: NIfTI keeps the affine (and the source
file's voxel order), PNG stays PNG, NRRD/MHA keep spacing, origin and direction. DICOM,
MGH, JPEG and NPZ inputs give ``.nii.gz``, ``.png`` or ``.npy`` masks (see
:data:`cover.downstream.outputs.MASK_SUFFIX`). Classification writes ``predictions.csv``
(predicted class and the probability of every class).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cover.config import save_yaml
from cover.data.discovery import find_images, load_datalist
from cover.data.readers import write_like
from cover.data.record import data_error
from cover.downstream.cases import Case, file_stem
from cover.downstream.evaluate import class_labels
from cover.downstream.inference import classify, segment_case
from cover.downstream.loading import checkpoint_load_options, load_case
from cover.downstream.models import load_finetuned
from cover.downstream.outputs import mask_path, prepare_output
from cover.train.distributed import resolve_device


def _inputs(images: str | Path) -> tuple[list[Path], Path]:
    source = Path(images)
    if source.is_file() and source.suffix.lower() in (".json", ".csv"):
        return [Path(e["image"]) for e in load_datalist(source)], source.parent
    found = find_images(source)
    if not found:
        raise data_error(source, "no images found")
    return found, source


def predict(
    checkpoint: str | Path,
    images: str | Path,
    out: str | Path = "cover_runs/predict",
    *,
    device: str = "auto",
    overwrite: bool = False,
    overlap: float | None = None,
    sw_batch_size: int = 4,
) -> dict[str, Any]:
    """Predict masks (segmentation) or classes (classification) for new images.

    Args:
        checkpoint: A ``cover finetune`` checkpoint (or its output folder: ``best.pt``).
        images: Image folder, single image, or JSON/CSV datalist (its ``image`` entries).
        out: Output folder.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        overwrite: Allow writing into a non-empty folder.
        overlap: Sliding-window overlap (default: the checkpoint's).
        sw_batch_size: Windows per forward pass.

    Returns:
        ``{"task", "num_images", "outputs"}`` (mask paths, or the CSV for classification);
        also written to ``OUT/summary.json``.
    """
    torch_device = resolve_device(device)
    network, metadata = load_finetuned(checkpoint, torch_device)
    paths, root = _inputs(images)
    folder = prepare_output(out, overwrite, "predict")
    overlap = float(metadata.get("overlap", 0.25) if overlap is None else overlap)
    save_yaml(
        {"checkpoint": str(checkpoint), "images": str(images), "out": str(out), "device": device, "overlap": overlap},
        folder / "config.yaml",
    )
    task, num_classes, names = metadata["task"], int(metadata["num_classes"]), class_labels(metadata)
    options = checkpoint_load_options(metadata, keep_record=task == "seg")
    outputs, rows = [], []
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    for path in tqdm(paths, desc="predict", dynamic_ncols=True):
        loaded = load_case(Case(file_stem(path), path), **options)
        if task == "seg":
            prediction = segment_case(
                network, loaded.image.to(torch_device), metadata, overlap=overlap, sw_batch_size=sw_batch_size
            )
            mask = prediction.numpy().astype(dtype)
            target = mask_path(path, loaded.record.format, root, folder)
            outputs.append(str(write_like(mask, loaded.record, target)))
        else:
            probs = classify(network, loaded.image[None].to(torch_device))[0].cpu().numpy()
            row = {"image": str(path), "prediction": names[int(probs.argmax())]}
            row.update({f"prob_{n}": float(p) for n, p in zip(names, probs, strict=True)})
            rows.append(row)
    if task == "cls":
        table = folder / "predictions.csv"
        with table.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        outputs = [str(table)]
    summary = {"task": task, "checkpoint": str(checkpoint), "num_images": len(paths), "outputs": outputs}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
