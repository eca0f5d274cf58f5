"""Decode-once cache of normalised images, shared by the pretraining datasets.

Every file is read with :func:`~cover.data.readers.read_image`, optionally resampled to a
target spacing, normalised with an intensity preset and kept as float32 ``(C, *spatial)``.
An image may be several files, one per channel (:mod:`cover.data.channels`).
With ``cache_dir`` the arrays are also saved as ``.npy`` (keyed by a hash of path, mtime,
size, preset, spacing and channel mode) and memory-mapped on the next run, so a dataset of
DICOM series is decoded once across runs and DataLoader workers share pages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from cover.data.channels import ImageSource, as_source, read_source, source_files, source_text
from cover.data.presets import IntensityPreset, choose_preset, normalize, parse_preset
from cover.data.record import ImageRecord, data_error
from cover.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Bumped when the cached array layout changes, to invalidate old cache files.
CACHE_VERSION = 2  # 2: files without a modality may be CT by their values

OnBadFile = Literal["skip", "error"]


def _fingerprint(path: Path) -> str:
    """Modification time and size of a file, or of every file in a DICOM series folder."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    parts = []
    for file in files:
        stat = file.stat()
        parts.append(f"{file.name}:{stat.st_mtime_ns}:{stat.st_size}")
    return "|".join(parts)


def cache_key(path: ImageSource, preset: str, spacing: tuple[float, ...] | None, channels: bool) -> str:
    """Hash naming the cache entry of one decoded, resampled, normalised image (all its channel files)."""
    files = source_files(path)
    names = [str(f.resolve()) for f in files]
    prints = [_fingerprint(f) for f in files]
    text = json.dumps(
        [CACHE_VERSION, names[0] if len(names) == 1 else names, "|".join(prints), preset, spacing, channels]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def resample(array: np.ndarray, spacing: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """Resample to a target voxel size with (bi/tri)linear interpolation.

    Args:
        array: ``(C, *spatial)`` float32.
        spacing: Current voxel size per spatial axis (mm).
        target: Wanted voxel size per spatial axis (mm).

    Returns:
        ``(C, *new_spatial)`` float32 with ``new = round(old * spacing / target)`` (at least 1).
    """
    old = array.shape[1:]
    size = tuple(max(1, round(n * s / t)) for n, s, t in zip(old, spacing, target, strict=True))
    if size == tuple(old):
        return array
    mode = "bilinear" if len(size) == 2 else "trilinear"
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    out = F.interpolate(tensor, size=size, mode=mode, align_corners=False)
    return out[0].numpy()


class CachedVolumeStore:
    """Reads, resamples and normalises a list of images once, then serves arrays.

    Args:
        paths: Image files or DICOM series folders; a tuple of files is one image with one file per
            channel (:func:`cover.data.channels.read_source`).
        preset: Intensity preset for all files (text or object), or ``None`` to choose one
            per file from its header's modality or its values (:func:`~cover.data.presets.choose_preset`).
        spacing: Target voxel size in mm per spatial axis, or ``None`` to keep the native
            grid. Files whose number of axes differs from ``len(spacing)`` are bad files.
        cache_dir: Folder for ``.npy`` cache files, or ``None`` for memory only.
        on_bad_file: ``"skip"``: collect unreadable files in :attr:`skipped` and warn once;
            ``"error"``: raise the first file's :class:`DataError`.
        channels: Keep colour / 4th-axis channels (see :func:`read_image`).
        root: Name used in the "no readable images" message (defaults to the common folder).
        warn: Emit the warning listing skipped files at the end of loading (callers that
            drop more files later may pass False and call :meth:`report_skipped` once).

    Attributes:
        paths: Sources of the usable images (a path, or a tuple of channel files), aligned with :attr:`meta`.
        meta: Per-image metadata dicts: ``path`` (channel 0's file), ``channel_files`` (all of them),
            ``format``, ``modality``, ``orientation``,
            ``spacing`` (after resampling), ``source_spacing``, ``shape`` ``(C, *spatial)``,
            ``preset``, ``preset_reason`` (why it was chosen), ``spatial_dims``.
        skipped: ``(path, reason)`` of every file that could not be used.

    Raises:
        DataError: A bad file with ``on_bad_file="error"``, or no usable image at all.
        ConfigError: Bad ``preset``, ``spacing`` or ``on_bad_file``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path | tuple[Path, ...]],
        preset: str | IntensityPreset | None = None,
        spacing: Sequence[float] | None = None,
        cache_dir: str | Path | None = None,
        on_bad_file: OnBadFile = "skip",
        *,
        channels: bool = False,
        root: str | Path | None = None,
        warn: bool = True,
    ) -> None:
        if on_bad_file not in ("skip", "error"):
            raise ConfigError(f"on_bad_file: must be 'skip' or 'error', got {on_bad_file!r}")
        if spacing is not None:
            spacing = tuple(float(s) for s in spacing)
            if len(spacing) not in (2, 3) or any(s <= 0 for s in spacing):
                raise ConfigError(f"spacing: need 2 or 3 positive values in mm, got {spacing}")
        self.preset = None if preset is None else parse_preset(preset)
        self.spacing = spacing
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.on_bad_file = on_bad_file
        self.channels = channels
        self.paths: list[ImageSource] = []
        self.meta: list[dict[str, Any]] = []
        self.skipped: list[tuple[ImageSource, str]] = []
        self._arrays: list[np.ndarray] = []
        paths = [as_source(p) for p in paths]
        if root is None:
            root = _common_root([source_files(p)[0] for p in paths])
        self.root = Path(root) if root is not None else Path(".")
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        for path in paths:
            try:
                array, meta = self._load(path)
            except DataError as exc:
                if on_bad_file == "error":
                    raise
                self.skipped.append((path, str(exc)))
                continue
            self.paths.append(path)
            self._arrays.append(array)
            self.meta.append(meta)
        if warn or not self._arrays:
            self.report_skipped()
        if not self._arrays:
            reason = f"; first problem: {self.skipped[0][1]}" if self.skipped else ""
            raise data_error(self.root, f"no readable images ({len(self.skipped)} file(s) skipped){reason}")

    def __len__(self) -> int:
        return len(self._arrays)

    def __getitem__(self, index: int) -> np.ndarray:
        """Normalised float32 array ``(C, *spatial)`` of image ``index``."""
        return self._arrays[index]

    def drop(self, indices: Sequence[int], reason: Sequence[str]) -> None:
        """Remove images (e.g. too small for a dataset) and record why in :attr:`skipped`."""
        gone = set(indices)
        for i, why in zip(indices, reason, strict=True):
            self.skipped.append((self.paths[i], why))
        keep = [i for i in range(len(self)) if i not in gone]
        self.paths = [self.paths[i] for i in keep]
        self.meta = [self.meta[i] for i in keep]
        self._arrays = [self._arrays[i] for i in keep]

    def report_skipped(self) -> None:
        """Emit one warning listing the skipped files (the first 10; no-op when none)."""
        if self.skipped:
            warnings.warn(skipped_message(self.skipped), stacklevel=3)

    # ------------------------------------------------------------------ internals

    def _preset_for(self, record: ImageRecord) -> tuple[IntensityPreset, str]:
        if self.preset is not None:
            return self.preset, "given"
        text, why = choose_preset(record)
        return parse_preset(text), why

    def _load(self, path: ImageSource) -> tuple[np.ndarray, dict[str, Any]]:
        key = None
        if self.cache_dir is not None:
            name = self.preset.to_string() if self.preset is not None else "auto"
            key = cache_key(path, name, self.spacing, self.channels)
            cached = self._from_cache(key)
            if cached is not None:
                return cached
        record = read_source(path, channels=self.channels)
        preset, why = self._preset_for(record)
        logger.debug("%s: intensity preset %s", path, preset.to_string())
        array = record.array
        spacing = record.spacing
        if self.spacing is not None:
            if len(self.spacing) != record.spatial_dims:
                raise data_error(
                    source_text(path),
                    f"is {record.spatial_dims}D but the target spacing {self.spacing} has {len(self.spacing)} values",
                )
            array = resample(array, record.spacing, self.spacing)
            spacing = self.spacing
        array = normalize(array, preset)
        meta = {
            "path": str(record.path),
            "channel_files": [str(f) for f in source_files(path)],
            "format": record.format,
            "modality": record.modality,
            "orientation": record.orientation,
            "source_spacing": [float(s) for s in record.spacing],
            "spacing": [float(s) for s in spacing],
            "source_shape": list(record.array.shape),
            "shape": list(array.shape),
            "preset": preset.to_string(),
            "preset_reason": why,
            "spatial_dims": record.spatial_dims,
        }
        if key is not None:
            self._to_cache(key, array, meta)
            array = np.load(self.cache_dir / f"{key}.npy", mmap_mode="r")
        return array, meta

    def _from_cache(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        assert self.cache_dir is not None
        npy, info = self.cache_dir / f"{key}.npy", self.cache_dir / f"{key}.json"
        if not (npy.is_file() and info.is_file()):
            return None
        try:
            meta = json.loads(info.read_text())
            array = np.load(npy, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if list(array.shape) != meta.get("shape"):
            return None
        return array, meta

    def _to_cache(self, key: str, array: np.ndarray, meta: dict[str, Any]) -> None:
        assert self.cache_dir is not None
        npy, info = self.cache_dir / f"{key}.npy", self.cache_dir / f"{key}.json"
        tmp = npy.with_suffix(".tmp.npy")
        np.save(tmp, np.ascontiguousarray(array, dtype=np.float32))
        tmp.replace(npy)
        info.write_text(json.dumps(meta))


def skipped_message(skipped: Sequence[tuple[Path, str]], limit: int = 10) -> str:
    """One line summarising skipped files: count, then up to ``limit`` reasons, each said once.

    Files skipped for the same problem share one entry (``problem (3 files: a.nii.gz, b.nii.gz,
    c.nii.gz)``), so advice is not repeated once per file.
    """
    groups: dict[str, list[str]] = {}
    for path, reason in skipped:
        name = source_text(path)
        named = reason.startswith(f"{name}: ")
        groups.setdefault(reason[len(name) + 2 :] if named else reason, []).append(name if named else "")
    parts = []
    for problem, names in list(groups.items())[:limit]:
        if len(names) == 1:
            parts.append(f"{names[0]}: {problem}" if names[0] else problem)
        else:
            shown = ", ".join(Path(n).name for n in names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{problem} ({len(names)} files: {shown})")
    more = f"; ... and {len(groups) - limit} more" if len(groups) > limit else ""
    return f"skipped {len(skipped)} unusable file(s): {'; '.join(parts)}{more}"


def _common_root(paths: Sequence[Path]) -> Path | None:
    if not paths:
        return None
    parents = [p.parent if p.is_file() else p for p in paths]
    common = parents[0]
    for parent in parents[1:]:
        while common not in (parent, *parent.parents):
            common = common.parent
    return common
