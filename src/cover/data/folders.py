"""Dataset folders: nnU-Net v2 raw datasets and Medical Segmentation Decathlon ``dataset.json``.

* **nnU-Net v2 raw dataset**: a folder with ``dataset.json`` (``channel_names``, ``labels``,
  ``file_ending``), ``imagesTr/CASE_XXXX<file_ending>`` (one file per input channel ``XXXX``),
  ``labelsTr/CASE<file_ending>`` and optionally ``imagesTs/CASE_XXXX<file_ending>`` (unlabeled).
* **MSD**: a ``dataset.json`` with ``training`` (``{"image", "label"}`` entries) and ``test``
  (image paths, unlabeled); relative paths are relative to the file's folder. Multi-modal MSD
  tasks store the channels as the 4th axis of one file (an ``image`` may also list one file per
  channel).

:func:`read_dataset_folder` turns either into labeled ``training`` and unlabeled ``test``
cases. Pretraining uses the images of both (``imagesTr`` + ``imagesTs``); fine-tuning uses the
labeled ones. A case's channel files become the input channels of one image
(:mod:`cover.data.channels`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cover.data.channels import ImageSource, as_source, names_of_channels
from cover.data.record import data_error

DATASET_JSON = "dataset.json"


@dataclass(frozen=True)
class FolderCase:
    """One case of a dataset folder.

    Attributes:
        name: Case identifier (nnU-Net: the file name without channel suffix and ending).
        images: One file per input channel (nnU-Net), or one (possibly 4D) file (MSD).

    ``source`` is what the readers take (:func:`cover.data.channels.read_source`).
        label: Label map, or ``None`` for unlabeled cases.
    """

    name: str
    images: tuple[Path, ...]
    label: Path | None = None

    @property
    def source(self) -> ImageSource:
        """The image as one source: the file, or the tuple of channel files."""
        return as_source(self.images)


@dataclass
class DatasetFolder:
    """The cases of an nnU-Net raw dataset or an MSD ``dataset.json``.

    Attributes:
        kind: ``"nnunet"`` or ``"msd"``.
        source: The ``dataset.json``.
        training: Labeled cases.
        test: Unlabeled cases.
        channels: Input channels per case (nnU-Net: ``channel_names``; MSD: ``modality``).
        labels: Label name -> value (``None`` where the file has none).
        channel_names: Channel names in channel order (nnU-Net ``channel_names``, MSD
            ``modality``), ``None`` where the file has none.
    """

    kind: str
    source: Path
    training: list[FolderCase] = field(default_factory=list)
    test: list[FolderCase] = field(default_factory=list)
    channels: int = 1
    labels: dict[str, Any] | None = None
    channel_names: list[str] | None = None


def dataset_json_of(path: str | Path) -> Path | None:
    """The ``dataset.json`` that makes ``path`` a dataset folder, else ``None``.

    Args:
        path: A folder holding ``dataset.json``, or a ``dataset.json`` itself.

    Returns:
        The file when it is an nnU-Net raw ``dataset.json`` (``channel_names`` and
        ``file_ending``) or an MSD one (``training`` list and ``modality`` or ``test``).
    """
    path = Path(path)
    candidate = path / DATASET_JSON if path.is_dir() else path
    if candidate.name != DATASET_JSON or not candidate.is_file():
        return None
    content = _read_json(candidate)
    if not isinstance(content, dict):
        return None
    if "channel_names" in content and "file_ending" in content:
        return candidate
    if isinstance(content.get("training"), list) and ("modality" in content or "test" in content):
        return candidate
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise data_error(path, f"invalid JSON ({error})") from None


def _nnunet_cases(folder: Path, sub: str, ending: str, channels: int, source: Path) -> dict[str, list[Path]]:
    """``case -> [channel files]`` of ``folder/sub`` (``CASE_XXXX<ending>``), every channel present."""
    found: dict[str, dict[int, Path]] = {}
    directory = folder / sub
    if not directory.is_dir():
        return {}
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.startswith(".") or not name.endswith(ending):
            continue
        stem = name[: -len(ending)]
        case, _, index = stem.rpartition("_")
        if not case or len(index) != 4 or not index.isdigit():
            raise data_error(path, f"not an nnU-Net image name CASE_XXXX{ending} (XXXX: 4-digit channel index)")
        found.setdefault(case, {})[int(index)] = path
    cases = {}
    for case, files in found.items():
        missing = [f"{case}_{c:04d}{ending}" for c in range(channels) if c not in files]
        extra = [files[c].name for c in files if c >= channels]
        if missing or extra:
            problem = f"lacks {missing[0]}" if missing else f"has {extra[0]} beyond the {channels} channel(s)"
            raise data_error(directory, f"case {case} {problem} (dataset.json channel_names: {channels})")
        cases[case] = [files[c] for c in range(channels)]
    return cases


def _read_nnunet(source: Path, content: dict[str, Any]) -> DatasetFolder:
    folder = source.parent
    names = content.get("channel_names")
    ending = content.get("file_ending")
    if not isinstance(names, dict) or not names or not isinstance(ending, str) or not ending:
        raise data_error(source, "nnU-Net dataset.json needs 'channel_names' (non-empty) and 'file_ending'")
    channels = len(names)
    training = _nnunet_cases(folder, "imagesTr", ending, channels, source)
    test = _nnunet_cases(folder, "imagesTs", ending, channels, source)
    cases = []
    for case, images in sorted(training.items()):
        label = folder / "labelsTr" / f"{case}{ending}"
        if not label.is_file():
            raise data_error(label, f"label of case {case} not found (nnU-Net expects labelsTr/CASE{ending})")
        cases.append(FolderCase(case, tuple(images), label))
    if not cases:
        raise data_error(folder / "imagesTr", f"no images named CASE_XXXX{ending}")
    unlabeled = [FolderCase(case, tuple(images)) for case, images in sorted(test.items())]
    names_list = names_of_channels(content)
    return DatasetFolder("nnunet", source, cases, unlabeled, channels, content.get("labels"), names_list)


def _msd_images(value: Any, base: Path, source: Path, where: str) -> tuple[Path, ...]:
    """An MSD ``image``: one (possibly 4D) file, or a list of one file per channel."""
    if isinstance(value, list) and value:
        return tuple(_msd_path(v, base, source, f"{where}[{i}]") for i, v in enumerate(value))
    return (_msd_path(value, base, source, where),)


def _msd_path(value: Any, base: Path, source: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise data_error(source, f"{where}: expected a file path (or a list of channel files), got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise data_error(path, f"listed in {source} ({where}) but not found")
    return path


def _read_msd(source: Path, content: dict[str, Any]) -> DatasetFolder:
    base = source.parent
    cases = []
    for index, entry in enumerate(content["training"]):
        where = f"training[{index}]"
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise data_error(source, f"{where}: each MSD training entry needs 'image' and 'label'")
        images = _msd_images(entry["image"], base, source, where + ".image")
        label = _msd_path(entry["label"], base, source, where + ".label")
        cases.append(FolderCase(_stem(images[0]), images, label))
    unlabeled = []
    for index, entry in enumerate(content.get("test") or []):
        value = entry.get("image") if isinstance(entry, dict) else entry
        images = _msd_images(value, base, source, f"test[{index}]")
        unlabeled.append(FolderCase(_stem(images[0]), images))
    if not cases and not unlabeled:
        raise data_error(source, "MSD dataset.json lists no training or test images")
    modality = content.get("modality")
    channels = len(modality) if isinstance(modality, dict) and modality else 1
    return DatasetFolder("msd", source, cases, unlabeled, channels, content.get("labels"), names_of_channels(content))


def _stem(path: Path) -> str:
    name = path.name
    for ending in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem


def read_dataset_folder(path: str | Path) -> DatasetFolder | None:
    """Read an nnU-Net raw dataset or MSD ``dataset.json``; ``None`` if ``path`` is neither.

    Args:
        path: The dataset folder or its ``dataset.json``.

    Returns:
        Its labeled and unlabeled cases, or ``None``.

    Raises:
        DataError: A dataset folder whose files do not match its ``dataset.json``.
    """
    source = dataset_json_of(path)
    if source is None:
        return None
    content = _read_json(source)
    if "channel_names" in content and "file_ending" in content:
        return _read_nnunet(source, content)
    return _read_msd(source, content)


def pretraining_images(path: str | Path) -> list[ImageSource] | None:
    """Images a dataset folder offers for pretraining (labeled and unlabeled), or ``None``.

    Labels are never returned. A case with several channel files is one source (the tuple of
    its files), read as one multi-channel image.

    Args:
        path: A dataset folder or its ``dataset.json``.

    Returns:
        One source per case (``imagesTr`` then ``imagesTs``; MSD ``training`` then ``test``), or
        ``None`` when ``path`` is not a dataset folder.
    """
    dataset = read_dataset_folder(path)
    if dataset is None:
        return None
    return [case.source for case in dataset.training + dataset.test]


def prediction_images(path: str | Path) -> tuple[list[ImageSource], str, list[str] | None] | None:
    """The images ``cover predict`` takes from a dataset folder, or ``None`` when ``path`` is not one.

    The unlabeled test images (nnU-Net ``imagesTs``, MSD ``test``), else the training images
    (``imagesTr``, MSD ``training``); never a label map (``labelsTr``/``labelsTs``). A case's
    channel files are one source in ``dataset.json``'s channel order (nnU-Net: file
    ``CASE_XXXX`` is channel ``XXXX`` of ``channel_names``; MSD: ``modality``).

    Args:
        path: A dataset folder or its ``dataset.json``.

    Returns:
        ``(sources, which, channel names)``: one source per case, what they are
        (``"imagesTs"``, ``"imagesTr"``, ``"test"`` or ``"training"``) and the dataset's channel
        names (``None`` where it has none).
    """
    dataset = read_dataset_folder(path)
    if dataset is None:
        return None
    cases, which = (dataset.test, "test") if dataset.test else (dataset.training, "training")
    if dataset.kind == "nnunet":
        which = "imagesTs" if which == "test" else "imagesTr"
    return [case.source for case in cases], which, dataset.channel_names
