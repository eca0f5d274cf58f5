"""Pretraining datasets: what the trainer samples source images from.

Contract used by the trainer: a map-style :class:`torch.utils.data.Dataset` whose
``__getitem__(key)`` takes ``key = (index, seed)`` and returns a float32 tensor
``(C, *source_size)``, deterministic given the key (all randomness from
``numpy.random.default_rng(seed)``; the global RNGs are never touched). ``source_size`` is the
size the view generator crops from (typically ``round(1.5 * crop)`` per axis). ``len`` is the
number of usable images.

- :class:`Slices2DDataset`: 2D images resized to ``source_size``; 3D volumes contribute a
  random non-empty slice normal to ``axis``, resized likewise.
- :class:`Patches3DDataset`: random 3D patches, centred near foreground with probability
  ``foreground_prob``; volumes smaller than the patch are zero-padded (or refused).

:func:`build_pretrain_dataset` goes from a folder or datalist to a dataset plus the metadata
the trainer stores in checkpoints. :func:`find_images`, :func:`load_datalist` and
:class:`CachedVolumeStore` are re-exported here for convenience.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cover.data.channels import ImageSource, source_text
from cover.data.discovery import find_images, find_unlabeled_images, load_datalist
from cover.data.presets import PER_FILE
from cover.data.record import PLAIN_FORMATS, data_error
from cover.data.store import DEFAULT_MEMORY_MB, CachedVolumeStore, Summary, skipped_message
from cover.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "CachedVolumeStore",
    "Patches3DDataset",
    "Slices2DDataset",
    "build_pretrain_dataset",
    "find_images",
    "load_datalist",
]

Key = tuple[int, int]

#: Foreground = above ``min + FOREGROUND_THRESHOLD * (max - min)`` of an image (default of both datasets).
FOREGROUND_THRESHOLD = 0.1

#: Slices of a volume with less foreground than this fraction are not drawn in 2D (by default).
MIN_FOREGROUND = 0.05

#: Foreground voxels remembered per volume for 3D patch placement (by default).
MAX_POINTS = 20000


def _size_tuple(size: int | Sequence[int], dims: int, name: str = "source_size") -> tuple[int, ...]:
    values = (size,) * dims if isinstance(size, int) else tuple(size)
    if len(values) != dims or any(int(v) != v or v < 1 for v in values):
        raise ConfigError(f"{name}: need {dims} positive integers, got {size!r}")
    return tuple(int(v) for v in values)


def _split_key(key: Key | int) -> tuple[int, int]:
    if isinstance(key, (tuple, list)):
        index, seed = key
        return int(index), int(seed)
    return int(key), int(key)


def _foreground(array: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean ``(*spatial)`` mask of voxels above ``min + threshold * (max - min)``.

    Args:
        array: ``(C, *spatial)`` normalised image.
        threshold: Fraction of the intensity range, in ``[0, 1)``.
    """
    strongest = np.asarray(array).max(axis=0)
    low, high = float(strongest.min()), float(strongest.max())
    if high <= low:
        return np.zeros(strongest.shape, dtype=bool)
    return strongest > low + threshold * (high - low)


def _slice_axis(shape: Sequence[int], axis: int) -> int:
    """Slice axis of a volume ``(C, *spatial)``: its one thin axis if it is one slice thick, else ``axis``."""
    thin = [a for a, size in enumerate(shape[1:]) if size == 1]
    return thin[0] if len(thin) == 1 else axis


def slice_candidates(array: np.ndarray, axis: int, min_foreground: float, threshold: float) -> np.ndarray:
    """Indices of a volume's slices (normal to its slice axis) with enough foreground; all when none has.

    Args:
        array: ``(C, *spatial)`` normalised image; a 2D image gives an empty array.
        axis: Slice axis (:func:`_slice_axis` picks a one-slice volume's thin axis instead).
        min_foreground: Least foreground fraction of a drawn slice.
        threshold: See :func:`_foreground`.

    Returns:
        int64 ``(K,)``.
    """
    if array.ndim == 3:
        return np.zeros(0, dtype=np.int64)
    axis = _slice_axis(array.shape, axis)
    mask = _foreground(array, threshold)
    fraction = mask.mean(axis=tuple(a for a in range(3) if a != axis))
    good = np.flatnonzero(fraction >= min_foreground)
    if good.size == 0:
        good = np.arange(mask.shape[axis])
    return good.astype(np.int64)


def foreground_points(array: np.ndarray, threshold: float, max_points: int) -> np.ndarray:
    """Foreground voxel coordinates of a volume, a fixed random subset of ``max_points`` when more.

    The subset is drawn from ``default_rng(0)`` per volume, so it depends on the volume alone and can
    be cached with it (before the disk cache one generator ran through all volumes in order, so a
    volume's subset depended on the volumes before it).

    Args:
        array: ``(C, D, H, W)`` normalised volume.
        threshold: See :func:`_foreground`.
        max_points: Most points kept.

    Returns:
        int32 ``(N, 3)``.
    """
    points = np.argwhere(_foreground(array, threshold))
    if len(points) > max_points:
        points = points[np.random.default_rng(0).choice(len(points), max_points, replace=False)]
    return points.astype(np.int32)


def slices_summary(
    axis: int, min_foreground: float = MIN_FOREGROUND, threshold: float = FOREGROUND_THRESHOLD
) -> Summary:
    """The :data:`~cover.data.store.Summary` of :class:`Slices2DDataset` (cached with each image)."""
    tag = f"slices-a{axis}-m{min_foreground!r}-t{threshold!r}"
    return tag, partial(slice_candidates, axis=axis, min_foreground=min_foreground, threshold=threshold)


def points_summary(threshold: float = FOREGROUND_THRESHOLD, max_points: int = MAX_POINTS) -> Summary:
    """The :data:`~cover.data.store.Summary` of :class:`Patches3DDataset` (cached with each image)."""
    return f"points-t{threshold!r}-n{max_points}", partial(
        foreground_points, threshold=threshold, max_points=max_points
    )


class _StoreDataset(Dataset):
    """Shared validation: drops (or refuses) images a dataset cannot use."""

    def __init__(self, store: CachedVolumeStore, *, warn: bool = True) -> None:
        self.store = store
        bad = [(i, why) for i in range(len(store)) if (why := self._problem(i)) is not None]
        if bad:
            if store.on_bad_file == "error":
                raise data_error(source_text(store.paths[bad[0][0]]), bad[0][1])
            store.drop([i for i, _ in bad], [f"{source_text(store.paths[i])}: {why}" for i, why in bad])
            if warn:
                warnings.warn(skipped_message(store.skipped[-len(bad) :]), stacklevel=3)
        if len(store) == 0:
            raise data_error(store.root, f"no usable images ({bad[0][1]})")
        self._prepare()

    def _problem(self, index: int) -> str | None:
        return None

    def _prepare(self) -> None:
        """Per-image precomputation after validation."""

    def __len__(self) -> int:
        return len(self.store)


class Slices2DDataset(_StoreDataset):
    """2D source images from 2D files and from slices of 3D volumes.

    Args:
        store: The decoded images.
        source_size: ``(H, W)`` (or one int) of the returned images.
        axis: Spatial axis (0, 1 or 2) normal to the slices taken from volumes; with
            RAS-canonical volumes 0 gives sagittal, 1 coronal, 2 axial slices. A volume one
            slice thick (a 2D NIfTI) is its one slice, whatever its thin axis.
        min_foreground: Slices whose foreground fraction is below this are skipped (unless a
            volume has no such slice at all).
        foreground_threshold: Foreground = above ``min + t * (max - min)`` of the volume.
        max_upscale: Images (or slices) needing more than this up-scaling factor to reach
            ``source_size`` are refused as too small.
        warn: Warn about images dropped as unusable.
        crop_size: The pretraining crop (``--size``) that ``source_size`` was made from, to name
            it (and the largest one the image allows) when an image is too small.

    ``__getitem__((index, seed))`` returns float32 ``(C, H, W)``.
    """

    def __init__(
        self,
        store: CachedVolumeStore,
        source_size: int | Sequence[int],
        axis: int = 0,
        *,
        min_foreground: float = MIN_FOREGROUND,
        foreground_threshold: float = FOREGROUND_THRESHOLD,
        max_upscale: float = 8.0,
        warn: bool = True,
        crop_size: Sequence[int] | None = None,
    ) -> None:
        self.crop_size = None if crop_size is None else _size_tuple(crop_size, 2, "size")
        if axis not in (0, 1, 2):
            raise ConfigError(f"slice_axis: must be 0, 1 or 2, got {axis!r}")
        self.source_size = _size_tuple(source_size, 2)
        self.axis = axis
        self.min_foreground = min_foreground
        self.foreground_threshold = foreground_threshold
        self.max_upscale = max_upscale
        self._summary = slices_summary(axis, min_foreground, foreground_threshold)
        self._slices: dict[int, np.ndarray | None] = {}
        super().__init__(store, warn=warn)

    def _axis_of(self, shape: Sequence[int]) -> int:
        return _slice_axis(shape, self.axis)

    def _plane(self, shape: Sequence[int]) -> tuple[int, ...]:
        spatial = tuple(shape[1:])
        if len(spatial) == 2:
            return spatial
        axis = self._axis_of(shape)
        return tuple(s for i, s in enumerate(spatial) if i != axis)

    def _problem(self, index: int) -> str | None:
        shape = self.store.shape(index)
        if len(shape) - 1 not in (2, 3):
            return f"has {len(shape) - 1} spatial axes; 2D or 3D expected"
        plane = self._plane(shape)
        for side, want in zip(plane, self.source_size, strict=True):
            if side * self.max_upscale < want:
                size = "x".join(map(str, plane))
                target = "x".join(map(str, self.source_size))
                if self.crop_size is not None:
                    crops = zip(plane, self.source_size, self.crop_size, strict=True)
                    limit = min(int(s * self.max_upscale * c / w) for s, w, c in crops)
                    return (
                        f"image is {size} px, too small for --size {'x'.join(map(str, self.crop_size))}: crops are "
                        f"cut from the image resized to {target} (views.source_scale x the size), at most "
                        f"{self.max_upscale:g}x up-scaled; these images allow --size {limit} at most"
                    )
                return (
                    f"image is {size} px, too small to resize to {target} (more than "
                    f"{self.max_upscale:g}x up-scaling); remove it or lower the crop size"
                )
        return None

    def _prepare(self) -> None:
        for i in range(len(self.store)):
            if not self.store.lazy[i]:  # decoded at start: its summary is at hand (lazy images: when drawn)
                self._candidates(i, self.store.shape(i))

    def _candidates(self, index: int, shape: Sequence[int]) -> np.ndarray | None:
        """Slices of volume ``index`` to draw from (:func:`slice_candidates`); ``None`` for a 2D image."""
        if index not in self._slices:
            self._slices[index] = None if len(shape) == 3 else self.store.summary(index, self._summary)
        return self._slices[index]

    def __getitem__(self, key: Key) -> torch.Tensor:
        """Image ``(C, H, W)`` for ``key = (index, seed)`` (of the next usable image if ``index`` fails to decode)."""
        index, seed = _split_key(key)
        index = self.store.usable(index)
        array = self.store[index]
        candidates = self._candidates(index, array.shape)
        if candidates is not None:
            rng = np.random.default_rng(seed)
            k = int(candidates[rng.integers(len(candidates))])
            array = np.take(array, k, axis=self._axis_of(array.shape) + 1)
        tensor = torch.from_numpy(np.array(array, dtype=np.float32))[None]
        if tuple(tensor.shape[2:]) != self.source_size:
            tensor = F.interpolate(
                tensor,
                size=self.source_size,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return tensor[0].contiguous()


class Patches3DDataset(_StoreDataset):
    """Random 3D patches from volumes, preferring foreground.

    Args:
        store: The decoded volumes (2D images are refused as unusable).
        source_size: ``(D, H, W)`` (or one int) of the returned patches.
        foreground_prob: Probability that a patch is centred (with jitter of up to a quarter
            of the patch) on a random foreground voxel instead of placed uniformly.
        pad: Zero-pad volumes smaller than the patch (placed at a random offset). When
            False such volumes are unusable (``DataError`` with ``on_bad_file="error"``).
        foreground_threshold: Foreground = above ``min + t * (max - min)`` of the volume.
        max_points: Foreground voxels remembered per volume (a fixed random subset,
            :func:`foreground_points`).
        warn: Warn about images dropped as unusable.

    ``__getitem__((index, seed))`` returns float32 ``(C, D, H, W)``.
    """

    def __init__(
        self,
        store: CachedVolumeStore,
        source_size: int | Sequence[int],
        foreground_prob: float = 0.7,
        *,
        pad: bool = True,
        foreground_threshold: float = FOREGROUND_THRESHOLD,
        max_points: int = MAX_POINTS,
        warn: bool = True,
    ) -> None:
        if not 0.0 <= foreground_prob <= 1.0:
            raise ConfigError(f"foreground_prob: must lie in [0, 1], got {foreground_prob}")
        self.source_size = _size_tuple(source_size, 3)
        self.foreground_prob = foreground_prob
        self.pad = pad
        self.foreground_threshold = foreground_threshold
        self.max_points = max_points
        self._points: dict[int, np.ndarray] = {}
        super().__init__(store, warn=warn)

    def _problem(self, index: int) -> str | None:
        spatial = self.store.shape(index)[1:]
        if len(spatial) != 3:
            return "is a 2D image; 3D patches need volumes (use dim=2 for 2D data)"
        if not self.pad:
            for axis, (side, want) in enumerate(zip(spatial, self.source_size, strict=True)):
                if side < want:
                    size = "x".join(map(str, spatial))
                    patch = "x".join(map(str, self.source_size))
                    return (
                        f"volume is {size}, smaller than the {patch} patch along axis {axis}; "
                        f"enable padding or lower the crop size"
                    )
        return None

    def _prepare(self) -> None:
        for i in range(len(self.store)):
            if not self.store.lazy[i]:  # decoded at start: its points are at hand (lazy images: when drawn)
                self._foreground(i)

    def _foreground(self, index: int) -> np.ndarray:
        """Foreground points of volume ``index`` (:func:`foreground_points`), int32 ``(N, 3)``."""
        if index not in self._points:
            summary = points_summary(self.foreground_threshold, self.max_points)
            self._points[index] = self.store.summary(index, summary)
        return self._points[index]

    def _start(self, rng: np.random.Generator, index: int, shape: Sequence[int]) -> list[int]:
        low = [min(0, s - w) for s, w in zip(shape, self.source_size, strict=True)]
        high = [max(0, s - w) for s, w in zip(shape, self.source_size, strict=True)]
        points = self._foreground(index)
        if len(points) and rng.random() < self.foreground_prob:
            centre = points[rng.integers(len(points))]
            start = []
            for c, w, lo, hi in zip(centre, self.source_size, low, high, strict=True):
                jitter = int(rng.integers(-(w // 4), w // 4 + 1))
                start.append(int(np.clip(int(c) - w // 2 + jitter, lo, hi)))
            return start
        return [int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high, strict=True)]

    def __getitem__(self, key: Key) -> torch.Tensor:
        """Patch ``(C, D, H, W)`` for ``key = (index, seed)`` (of the next usable volume if ``index`` fails)."""
        index, seed = _split_key(key)
        index = self.store.usable(index)
        rng = np.random.default_rng(seed)
        array = self.store[index]
        start = self._start(rng, index, array.shape[1:])
        out = np.zeros((array.shape[0], *self.source_size), dtype=np.float32)
        src, dst = [slice(None)], [slice(None)]
        for s0, w, n in zip(start, self.source_size, array.shape[1:], strict=True):
            a, b = max(s0, 0), min(s0 + w, n)
            src.append(slice(a, b))
            dst.append(slice(a - s0, b - s0))
        out[tuple(dst)] = array[tuple(src)]
        return torch.from_numpy(out)


def _image_paths(data: str | Path) -> tuple[list[ImageSource], list[tuple[Path, str]], list[str] | None]:
    """Images named by ``data``, the files of a folder left out as non-images (with why), and channel names.

    An image may be a tuple of channel files (a dataset folder's case, a datalist's ``"image": [...]``).
    """
    path = Path(data)
    if not path.exists():
        raise data_error(path, "no such file or folder")
    from cover.data.folders import read_dataset_folder

    folder = read_dataset_folder(path)  # nnU-Net raw dataset / MSD dataset.json: images only
    if folder is not None:
        return [case.source for case in folder.training + folder.test], [], folder.channel_names
    if path.is_file() and path.suffix.lower() in (".json", ".csv"):
        return [entry["image"] for entry in load_datalist(path)], [], None
    return (*find_unlabeled_images(path), None)


def left_out_message(left_out: Sequence[tuple[Path, str]]) -> str:
    """One line saying which files of a folder were not used as images, and why."""
    arrays = sum(reason == "NumPy array" for _, reason in left_out)
    labels = len(left_out) - arrays
    parts = [f"{arrays} NumPy array{'s' if arrays > 1 else ''}"] if arrays else []
    parts += [f"{labels} label map{'s' if labels > 1 else ''}"] if labels else []
    examples = ", ".join(p.name for p, _ in left_out[:4]) + (", ..." if len(left_out) > 4 else "")
    return (
        f"not used as pretraining images: {' and '.join(parts)} ({examples}); NumPy files and label maps "
        "(names like *_seg, *_label, *_mask, or in a labels/masks folder) are used only when listed in a datalist"
    )


def preset_note(metas: Sequence[dict[str, Any]], *, given: bool, origin: str = "given", pending: int = 0) -> str:
    """One line naming the intensity preset(s) used and why, e.g. for the start of a run.

    Args:
        metas: Per-file metadata with ``path``, ``preset`` and ``preset_reason``
            (:attr:`CachedVolumeStore.meta`); with ``pending``, only the files decoded so far.
        given: One preset was set for every file (not chosen per file).
        origin: Where that one preset came from (``given``, ``from checkpoint``).
        pending: Files not decoded yet (lazy decoding), whose presets are chosen when they are.
    """
    presets = Counter(m["preset"] for m in metas)
    if given:
        return f"intensity preset {next(iter(presets))} ({origin}) for {len(metas) + pending} file(s)"
    parts = []
    for preset, count in presets.most_common():
        first = next(m for m in metas if m["preset"] == preset)
        why = first.get("preset_reason") or "chosen per file"
        parts.append(f"{preset} for {count} file(s) (e.g. {Path(first['path']).name}: {why})")
    detail = "; ".join(parts)
    if pending:
        detail += (
            f" -- among the {len(metas)} file(s) decoded at start (an evenly spaced sample); the other {pending} "
            "get theirs when first decoded"
        )
    return f"intensity preset chosen per file (no --intensity): {detail}; pass --intensity to choose one for all"


def _spacing_summary(store: CachedVolumeStore) -> tuple[list[float] | None, str]:
    """The run's voxel size, one value per axis (or ``None`` when files differ), and a note saying which."""
    if store.spacing is not None:
        return list(store.spacing), f"every file resampled to {list(store.spacing)} mm"
    distinct = sorted({tuple(m["spacing"]) for m in store.meta})
    if all(m["format"] in PLAIN_FORMATS for m in store.meta):
        common = list(distinct[0]) if len(distinct) == 1 else None
        return common, "plain images without a physical spacing (1 per pixel)"
    if len(distinct) == 1:
        return list(distinct[0]), f"all {len(store.meta)} file(s) have this spacing (not resampled)"
    lengths = {len(d) for d in distinct}
    if len(lengths) == 1:
        low = [min(d[i] for d in distinct) for i in range(lengths.pop())]
        high = [max(d[i] for d in distinct) for i in range(len(low))]
        span = f"from {[round(v, 4) for v in low]} to {[round(v, 4) for v in high]} mm per axis"
    else:
        span = "2D and 3D files"
    return None, (
        f"per case: the {len(store.meta)} files have {len(distinct)} different spacings ({span}) and were not "
        "resampled; pass --spacing to resample them to one"
    )


def build_pretrain_dataset(
    data: str,
    *,
    dim: int,
    source_size: tuple[int, ...],
    preset: str | None,
    spacing: tuple[float, ...] | None,
    cache_dir: str | None,
    on_bad_file: str,
    slice_axis: int = 0,
    channels: bool = False,
    crop_size: tuple[int, ...] | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    share: tuple[int, int] = (0, 1),
    progress: bool = False,
) -> tuple[Dataset, dict[str, Any]]:
    """Build the pretraining dataset from a folder, an image file or a datalist.

    Args:
        data: Folder (searched recursively; NumPy arrays and label maps found there are left
            out, :func:`cover.data.discovery.find_unlabeled_images`), single image,
            ``.json``/``.csv`` datalist (every entry's ``image`` is used; labels are ignored), or
            a dataset folder (:mod:`cover.data.folders`: nnU-Net raw ``imagesTr`` + ``imagesTs``,
            MSD ``training`` + ``test``).
        dim: 2 (:class:`Slices2DDataset`) or 3 (:class:`Patches3DDataset`).
        source_size: Size per spatial axis of the returned samples.
        preset: Intensity preset text, or ``None``/``"auto"`` to choose per file from its
            header's modality or its values (:func:`cover.data.presets.choose_preset`).
        spacing: Target voxel size in mm (one value per axis of the files), or ``None``.
        cache_dir: Folder of the shared decoded ``.npy`` cache, ``"auto"`` (the user's cache folder,
            :func:`cover.data.store.default_cache_dir`), or ``None`` / ``"none"`` (memory only).
        on_bad_file: ``"skip"`` or ``"error"``.
        slice_axis: Axis normal to 2D slices taken from volumes (``dim=2``).
        channels: Keep colour / 4th-axis channels of single files; all images must agree on ``C``
            (an image given as one file per channel has one channel per file).
        crop_size: 2D: the crop ``source_size`` is made from, named when an image is too small.
        memory_mb: Byte budget (MB) of the arrays one process holds (:class:`CachedVolumeStore`).
        share: ``(rank, world_size)`` of the processes building the cache together.
        progress: Show the decoding progress bar and log the cache line (the main process).

    Returns:
        ``(dataset, meta)``; ``meta`` is JSON-serialisable, its keys described by :func:`_dataset_meta`.

    Raises:
        DataError: Missing input, no usable image, a bad file with ``on_bad_file="error"``,
            mixed channel counts.
        ConfigError: Invalid ``dim``, ``source_size``, ``preset``, ``spacing``.
    """
    if dim not in (2, 3):
        raise ConfigError(f"dim: must be 2 or 3, got {dim!r}")
    size = _size_tuple(source_size, dim)
    paths, left_out, channel_names = _image_paths(data)
    if not paths:
        why = f"; {left_out_message(left_out)}" if left_out else ""
        raise data_error(data, f"no readable images found (no image files or DICOM series){why}")
    if left_out:
        warnings.warn(left_out_message(left_out), stacklevel=2)
    chosen = None if preset in (None, "", "auto") else preset
    store = CachedVolumeStore(
        paths,
        chosen,
        spacing,
        cache_dir,
        on_bad_file,
        channels=channels,
        root=data,
        warn=False,
        summary=slices_summary(slice_axis) if dim == 2 else points_summary(),
        memory_mb=memory_mb,
        share=share,
        progress=progress,
    )
    if dim == 2:
        dataset: _StoreDataset = Slices2DDataset(store, size, axis=slice_axis, warn=False, crop_size=crop_size)
    else:
        dataset = Patches3DDataset(store, size, warn=False)
    store.report_skipped()
    if progress:
        logger.info(store.note())
    return dataset, _dataset_meta(store, dataset, data, size, chosen, channel_names, left_out, dim, slice_axis)


def _dataset_meta(
    store: CachedVolumeStore,
    dataset: Dataset,
    data: str,
    size: tuple[int, ...],
    chosen: str | None,
    channel_names: list[str] | None,
    left_out: Sequence[tuple[Path, str]],
    dim: int,
    slice_axis: int,
) -> dict[str, Any]:
    """The JSON-serialisable metadata of :func:`build_pretrain_dataset`.

    Keys: ``data``, ``dim``, ``source_size``; ``preset`` (the preset used, with its parameters, e.g.
    ``"ct:-1000,1000"``; ``"per-file"`` only when no preset was given and files got different ones),
    ``presets`` (preset -> file count), ``preset_note`` (one line: which and why); ``spacing`` (one
    value per axis: the target, or the files' common spacing; ``None`` when files differ),
    ``spacing_note`` (which of these), ``spacings`` (distinct final spacings), ``orientation``
    (distinct orientations), ``axis_order``, ``slice_axis``; ``channels``, ``channel_names`` (a
    dataset folder's, else ``None``), ``num_files``, ``formats``, ``modalities``; ``skipped``
    (unusable files) and ``not_images`` (files of a folder left out as non-images by
    :func:`cover.data.discovery.not_an_image`), both as ``[path, reason]`` pairs;
    ``decoded_at_start`` and ``indexed_from_headers``: the images decoded before training, and
    those known from their headers only (decoded when first drawn).

    Raises:
        DataError: Mixed channel counts, or ``dataset.json`` names another number of channels.
    """
    return {
        "data": str(data),
        "dim": dim,
        "source_size": list(size),
        **_preset_meta(store, chosen),
        **_grid_meta(store, dim, slice_axis),
        "channels": _channel_count(store, data, channel_names),
        "channel_names": channel_names,
        "num_files": len(dataset),
        "formats": dict(Counter(m["format"] for m in store.meta)),
        "modalities": dict(Counter(m["modality"] or "unknown" for m in store.meta)),
        "skipped": [[source_text(p), reason] for p, reason in store.skipped],
        "not_images": [[str(p), reason] for p, reason in left_out],
        # Lazy decoding: shapes, spacings, formats and orientations of these come from headers; presets
        # chosen by values only from the files decoded at start (``presets`` counts those).
        "decoded_at_start": len(store) - sum(store.lazy),
        "indexed_from_headers": sum(store.lazy),
    }


def _channel_count(store: CachedVolumeStore, data: str, channel_names: list[str] | None) -> int:
    """The one channel count of every image (and of ``dataset.json``'s names); a mix is a :class:`DataError`."""
    counts = sorted({int(m["shape"][0]) for m in store.meta})
    if len(counts) > 1:
        first = {count: next(m for m in store.meta if int(m["shape"][0]) == count) for count in counts}
        examples = ", ".join(f"{count} in {Path(first[count]['path']).name}" for count in counts)
        raise data_error(data, f"images have different channel counts {counts} ({examples})")
    if channel_names is not None and len(channel_names) != counts[0]:
        raise data_error(
            data, f"dataset.json names {len(channel_names)} channel(s) {channel_names} but the images have {counts[0]}"
        )
    return counts[0]


def _preset_meta(store: CachedVolumeStore, chosen: str | None) -> dict[str, Any]:
    """``preset``, ``presets`` and ``preset_note`` of :func:`build_pretrain_dataset`'s metadata."""
    known = [m for m in store.meta if m["preset"] is not None]  # lazy images without --intensity: not yet decoded
    pending = len(store.meta) - len(known)
    presets = Counter(m["preset"] for m in known)
    if chosen is not None:
        presets = Counter({next(iter(presets)): len(store.meta)})
    return {
        "preset": next(iter(presets)) if len(presets) == 1 else PER_FILE,
        "presets": dict(presets),
        "preset_note": preset_note(known, given=chosen is not None, pending=pending if chosen is None else 0),
    }


def _grid_meta(store: CachedVolumeStore, dim: int, slice_axis: int) -> dict[str, Any]:
    """``spacing``, ``spacing_note``, ``spacings``, ``orientation``, ``axis_order`` and ``slice_axis`` metadata."""
    if dim == 2:
        axis_order = f"C,H,W: 2D images as (rows, cols); volumes sliced normal to RAS-canonical array axis {slice_axis}"
    else:
        axis_order = "C,I,J,K: RAS-canonical voxel order (i->R, j->A, k->S) where known"
    spacing_value, spacing_note = _spacing_summary(store)
    return {
        "spacing": spacing_value,
        "spacing_note": spacing_note,
        "spacings": [list(s) for s in sorted({tuple(m["spacing"]) for m in store.meta})[:20]],
        "orientation": sorted({m["orientation"] or "unknown" for m in store.meta}),
        "axis_order": axis_order,
        "slice_axis": slice_axis,
    }
