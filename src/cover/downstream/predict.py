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

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cover.config import save_yaml
from cover.data.channels import ImageSource, group_channel_files, output_path, source_text, source_value
from cover.data.discovery import find_images, load_datalist
from cover.data.folders import dataset_json_of, prediction_images
from cover.data.labels import original_values
from cover.data.readers import ImageRecord, write_like
from cover.data.record import data_error
from cover.downstream.cases import Case, check_channels, file_stem
from cover.downstream.evaluate import class_columns, class_labels
from cover.downstream.inference import classify, segment_case
from cover.downstream.loading import checkpoint_load_options, load_case
from cover.downstream.outputs import mask_paths, prepare_output, write_csv
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


@dataclass
class _Predictor:
    """The network and what predicting one input needs.

    Attributes:
        network: The fine-tuned network (on ``device``).
        metadata: The checkpoint's metadata (task, classes, label values, patch size, ...).
        names: Class names (:func:`cover.downstream.evaluate.class_labels`).
        device: Where the network runs.
        overlap: Sliding-window overlap.
        sw_batch_size: Windows per forward pass.
    """

    network: nn.Module
    metadata: dict[str, Any]
    names: list[str]
    device: torch.device
    overlap: float
    sw_batch_size: int

    @property
    def task(self) -> str:
        """``seg`` or ``cls``."""
        return self.metadata["task"]

    def write_mask(self, image: torch.Tensor, record: ImageRecord, target: Path) -> Path:
        """Segment one image and write its mask in the values the labels had, on the image's grid.

        Args:
            image: ``(C, *S)`` normalised image.
            record: The image's record (format and geometry of the mask).
            target: Mask path (its suffix may change with the format, see :func:`write_like`).

        Returns:
            The written mask's path.
        """
        prediction = segment_case(
            self.network, image.to(self.device), self.metadata, overlap=self.overlap, sw_batch_size=self.sw_batch_size
        )
        num_classes = int(self.metadata["num_classes"])
        return write_like(
            original_values(prediction.numpy(), num_classes, self.metadata.get("label_values")), record, target
        )

    def class_row(self, image: torch.Tensor, source: ImageSource) -> dict[str, Any]:
        """``{"image", "prediction", "prob_<class>"...}`` of one ``(C, *S)`` image."""
        probs = classify(self.network, image[None].to(self.device))[0].cpu().numpy()
        return {"image": source_text(source), **class_columns(probs, self.names)}


def _predict_all(
    predictor: _Predictor, jobs: list[tuple[Case, Path]], options: dict[str, Any], on_bad_file: str, folder: Path
) -> tuple[list[dict[str, str]], list[str], list[dict[str, str]]]:
    """Predict every input (masks, or ``predictions.csv`` for classification), skipping bad files.

    Args:
        predictor: The network and its settings.
        jobs: ``(case, mask path)`` per input.
        options: :func:`cover.downstream.loading.load_case` options.
        on_bad_file: ``skip`` (warn and go on) or ``error`` (stop at the first bad input).
        folder: Output folder (``predictions.csv``).

    Returns:
        ``(cases, outputs, skipped)``: ``{"image", "output"}`` per predicted input, the written
        files, ``{"image", "error"}`` per skipped input.

    Raises:
        DataError: A bad input with ``on_bad_file="error"``.
    """
    done, rows, skipped = [], [], []
    for case, target in progress_bar(jobs, desc="predict", dynamic_ncols=True):
        path = case.image
        try:
            loaded = load_case(case, **options)
            if predictor.task == "seg":
                written = predictor.write_mask(loaded.image, loaded.record, target)
                done.append({"image": source_value(path), "output": str(written)})
            else:
                rows.append(predictor.class_row(loaded.image, path))
        except DataError as exc:
            error = _for_checkpoint(exc, predictor.metadata)
            if on_bad_file == "error":
                raise error from None
            warnings.warn(f"skipped {error}", stacklevel=3)  # at the caller of predict
            skipped.append({"image": source_value(path), "error": str(error)})
    if predictor.task == "cls" and rows:
        table = write_csv(rows, folder / "predictions.csv")
        return [{"image": row["image"], "output": str(table)} for row in rows], [str(table)], skipped
    return done, [case["output"] for case in done], skipped


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
    arguments = {"checkpoint": str(checkpoint), "images": str(images), "out": str(out), "device": device}
    save_yaml({**arguments, "overlap": overlap, "on_bad_file": on_bad_file}, folder / "config.yaml")
    predictor = _Predictor(network, metadata, class_labels(metadata), torch_device, overlap, sw_batch_size)
    options = checkpoint_load_options(metadata, keep_record=predictor.task == "seg")
    jobs = list(zip(cases, mask_paths([output_path(p) for p in paths], root, folder), strict=True))
    done, outputs, skipped = _predict_all(predictor, jobs, options, on_bad_file, folder)
    summary = {
        "task": metadata["task"],
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
