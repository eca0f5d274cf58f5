"""Applying a fine-tuned checkpoint to new images: ``cover predict`` and :func:`cover.predict`.

The checkpoint decides the dimension (2D or 3D), channels and intensity preset. Segmentation
masks are written with :func:`cover.data.readers.write_like` on exactly each input's grid: the
input's own format, array shape and axis order, spacing, origin and direction (NIfTI, NRRD,
MHA/MHD, PNG, BMP, TIFF, NPY). Inputs whose format cannot hold a label map get another one and
keep their whole name: JPEG -> ``name.jpg.png``, a DICOM file -> ``name.dcm.nii.gz``, a DICOM
series folder ``ct/`` -> ``ct.nii.gz`` (a NIfTI in the series' own voxel order and geometry, see
:mod:`cover.data.writers`), MGH -> ``.nii.gz``, NPZ -> ``.npy``. Every input gets its own mask
(:func:`cover.downstream.outputs.mask_paths`). Classification writes ``predictions.csv``
(predicted class and the probability of every class).

A checkpoint of several input channels reads each input as one image: a 4D file whose 4th axis
holds the channels, a datalist entry listing one file per channel, or, in a folder, nnU-Net's
channel files ``CASE_0000.ext`` ... ``CASE_000N.ext`` grouped by case
(:func:`cover.data.channels.group_channel_files`), whose mask is ``CASE.ext`` on channel 0's grid.

A file that cannot be used (unreadable, wrong dimension or channels for the checkpoint) is
skipped with a one-line warning and listed under ``skipped`` in ``summary.json`` when
``on_bad_file="skip"`` (the default, as for ``cover pretrain``); with ``on_bad_file="error"``
the first such file stops the run with a one-line error. When no input could be used the run
fails.
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path
from typing import Any

from cover.config import save_yaml
from cover.data.channels import ImageSource, group_channel_files, output_path, source_text, source_value
from cover.data.discovery import find_images, load_datalist
from cover.data.folders import dataset_json_of, prediction_images
from cover.data.labels import original_values
from cover.data.readers import write_like
from cover.data.record import data_error
from cover.downstream.cases import Case, check_channels, file_stem
from cover.downstream.evaluate import class_labels
from cover.downstream.inference import classify, segment_case
from cover.downstream.loading import checkpoint_load_options, load_case
from cover.downstream.outputs import mask_paths, prepare_output
from cover.engine.distributed import resolve_device
from cover.errors import ConfigError, DataError
from cover.models.loading import load_finetuned
from cover.runtime import progress_bar

log = logging.getLogger(__name__)

#: Values of ``on_bad_file``: skip a bad input with a warning, or stop at the first one.
ON_BAD_FILE = ("skip", "error")


def _inputs(images: str | Path, channels: int) -> tuple[list[ImageSource], Path]:
    """The images to predict (a path, or one file per channel) and the folder they are named relative to.

    A dataset folder (nnU-Net raw, MSD ``dataset.json``) gives its images only, never its label
    maps (:func:`cover.data.folders.prediction_images`).
    """
    source = Path(images)
    folder = prediction_images(source)
    if folder is not None:
        sources, which, _ = folder
        if not sources:
            raise data_error(source, f"the dataset lists no {which} images")
        log.info("data: %d %s image(s) of the dataset %s (its label maps are not read)", len(sources), which, source)
        return sources, source if source.is_dir() else source.parent
    if source.is_file() and source.suffix.lower() in (".json", ".csv"):
        return [e["image"] for e in load_datalist(source)], source.parent
    found = find_images(source)
    if not found:
        raise data_error(source, "no images found")
    return group_channel_files(found, channels), source


def _for_checkpoint(error: DataError, metadata: dict[str, Any]) -> DataError:
    """The loader's dimension message without its ``--dim`` advice: ``cover predict`` has no ``--dim``.

    ``"a.nii: is a 3D volume (..) but dim is 2 (..); use --dim 3"`` becomes ``"a.nii: is a 3D
    volume (..) but the checkpoint is a 2D model (..)"``; other messages are kept.
    """
    text = str(error)
    model = int(metadata["spatial_dims"])
    for dim in (2, 3):
        if text.endswith(f"; use --dim {dim}") and f"but dim is {model}" in text:
            text = text[: -len(f"; use --dim {dim}")].replace(
                f"but dim is {model}", f"but the checkpoint is a {model}D model"
            )
            return DataError(text)
    return error


def predict(
    checkpoint: str | Path,
    images: str | Path,
    out: str | Path = "cover_runs/predict",
    *,
    device: str = "auto",
    overwrite: bool = False,
    overlap: float | None = None,
    sw_batch_size: int = 4,
    on_bad_file: str = "skip",
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
        on_bad_file: ``skip``: warn (one line per file), list it under ``skipped`` and go on;
            ``error``: stop at the first file that cannot be used.

    Returns:
        ``{"task", "checkpoint", "num_images", "num_predicted", "outputs", "cases",
        "skipped"}``: ``outputs`` the mask paths (or the CSV for classification), ``cases`` one
        ``{"image", "output"}`` per predicted input, ``skipped`` one ``{"image", "error"}`` per
        skipped input; also written to ``OUT/summary.json``.

    Raises:
        DataError: A bad input with ``on_bad_file="error"``, or no input could be used.

    Examples:
        Masks for the demo's test slices (each named after its input, in its format):

        >>> import cover
        >>> result = cover.predict("runs/seg", "runs/seg/demo_data/test/images", out="runs/pred")
        >>> result["num_predicted"], result["outputs"][0], result["skipped"]
        (10, 'runs/pred/mni_z100.png', [])
    """
    if on_bad_file not in ON_BAD_FILE:
        raise ConfigError(f"on_bad_file: must be 'skip' or 'error', got {on_bad_file!r}")
    torch_device = resolve_device(device)
    network, metadata = load_finetuned(checkpoint, torch_device)
    paths, root = _inputs(images, int(metadata["in_channels"]))
    cases = [Case(file_stem(output_path(p)), p) for p in paths]
    names_from = str(images) if dataset_json_of(images) is not None else None
    check_channels(
        cases, int(metadata["in_channels"]), names_from, metadata.get("channel_names"), checkpoint, option=False
    )
    folder = prepare_output(out, overwrite, "predict")
    overlap = float(metadata.get("overlap", 0.25) if overlap is None else overlap)
    save_yaml(
        {
            "checkpoint": str(checkpoint),
            "images": str(images),
            "out": str(out),
            "device": device,
            "overlap": overlap,
            "on_bad_file": on_bad_file,
        },
        folder / "config.yaml",
    )
    task, num_classes, names = metadata["task"], int(metadata["num_classes"]), class_labels(metadata)
    options = checkpoint_load_options(metadata, keep_record=task == "seg")
    targets = mask_paths([output_path(p) for p in paths], root, folder)
    done, rows, skipped = [], [], []
    for case, target in progress_bar(list(zip(cases, targets, strict=True)), desc="predict", dynamic_ncols=True):
        path = case.image
        try:
            loaded = load_case(case, **options)
            if task == "seg":
                prediction = segment_case(
                    network, loaded.image.to(torch_device), metadata, overlap=overlap, sw_batch_size=sw_batch_size
                )
                mask = original_values(prediction.numpy(), num_classes, metadata.get("label_values"))
                written = write_like(mask, loaded.record, target)
                done.append({"image": source_value(path), "output": str(written)})
            else:
                probs = classify(network, loaded.image[None].to(torch_device))[0].cpu().numpy()
                row = {"image": source_text(path), "prediction": names[int(probs.argmax())]}
                row.update({f"prob_{n}": float(p) for n, p in zip(names, probs, strict=True)})
                rows.append(row)
        except DataError as exc:
            error = _for_checkpoint(exc, metadata)
            if on_bad_file == "error":
                raise error from None
            warnings.warn(f"skipped {error}", stacklevel=2)
            skipped.append({"image": source_value(path), "error": str(error)})
    outputs = [case["output"] for case in done]
    if task == "cls" and rows:
        table = folder / "predictions.csv"
        with table.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        outputs = [str(table)]
        done = [{"image": row["image"], "output": str(table)} for row in rows]
    summary = {
        "task": task,
        "checkpoint": str(checkpoint),
        "num_images": len(paths),
        "num_predicted": len(done),
        "on_bad_file": on_bad_file,
        "outputs": outputs,
        "cases": done,
        "skipped": skipped,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    if not done:
        raise data_error(root, f"no image could be predicted ({len(skipped)} skipped); first: {skipped[0]['error']}")
    return summary
