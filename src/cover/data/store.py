"""Decoded, normalised images: indexed from headers, decoded when first drawn into a shared disk cache.

Every image is read with :func:`~cover.data.readers.read_image` (one file per channel:
:mod:`cover.data.channels`), optionally resampled to a target spacing, normalised with an
intensity preset and kept as float32 ``(C, *spatial)``.

With a ``cache_dir`` (by default :func:`default_cache_dir`, shared by every run and process) each
image becomes ``KEY.npy`` (memory-mapped when read) + ``KEY.json`` (its metadata), keyed by a hash
of its files' paths, mtimes and sizes, the preset, the spacing and the channel mode; a dataset's
per-image summary (e.g. foreground points for crop sampling) is cached beside it as
``KEY.TAG.npy``. Every file is written under a name unique to its writer and moved into place
with ``os.replace``, the JSON last, so any number of processes may build the same cache at once
and a reader never sees a partial entry. Without a cache folder images are decoded in memory.

Lazy decoding: a data set of more than :data:`START_SAMPLE` images is indexed from headers only
(:func:`cover.data.index.header_info`: shape, spacing, orientation, modality; in threads, with a
progress bar), so start-up reads no pixels beyond a fixed, evenly spaced sample of
:data:`START_SAMPLE` images (decoded at start for the run's metadata: per-file presets chosen by
values) and the images without a cheap header (DICOM, TIFF, NumPy, one file per channel). Every other
image is decoded the first time a sample needs it -- in the DataLoader's workers when there are any,
overlapping training -- and cached for every other process and later run. Which image a sample
draws never depends on what is decoded; an image that fails to decode then is replaced by the next
usable one (:meth:`CachedVolumeStore.usable`), the same in every process and run. Smaller data sets
are decoded at start, missing entries by a pool of processes, as before.

Arrays are then served through an LRU whose byte budget (``memory_mb``), not the data set, bounds
what a process holds: memory maps of cache files, or decoded arrays (decoded again when evicted)
without a cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import stat
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from cover.data.channels import ImageSource, as_source, read_source, source_files, source_text
from cover.data.index import HeaderInfo, header_info
from cover.data.presets import IntensityPreset, choose_preset, normalize, parse_preset
from cover.data.record import ImageRecord, data_error
from cover.errors import ConfigError, DataError
from cover.runtime import progress_bar

logger = logging.getLogger(__name__)

#: Bumped when the cached array layout changes, to invalidate old cache files.
CACHE_VERSION = 2  # 2: files without a modality may be CT by their values

#: Default byte budget (MB) of the arrays one process holds (:class:`ArrayLRU`).
DEFAULT_MEMORY_MB = 4096

#: Most decoding processes one process starts for a cache build.
MAX_DECODERS = 8

#: Builds of at least this many images show what they decode and a progress bar (small ones stay quiet).
PROGRESS_FROM = 50

#: Images decoded at start in a lazily indexed data set (evenly spaced); data sets this small are decoded whole.
START_SAMPLE = 16

#: Threads reading headers for the index (file-system bound: more than the cores).
INDEX_THREADS = 8

#: How long a process other than the first waits for the first one's header index (seconds: a base
#: plus a time per image, several times what reading the headers takes), before it reads them itself.
INDEX_WAIT = (30.0, 0.005)

OnBadFile = Literal["skip", "error"]

#: A per-image summary a dataset needs from every image before training (e.g. foreground points):
#: ``(tag, function)``; the tag names the function and its parameters (it is part of the cache file
#: name), the function maps a normalised ``(C, *spatial)`` array to a small array and must be picklable.
Summary = tuple[str, Callable[[np.ndarray], np.ndarray]]


def default_cache_dir() -> Path:
    """Cache folder of ``cache_dir="auto"``.

    ``$COVER_CACHE_DIR``, else ``$XDG_CACHE_HOME/cover/arrays``, else ``~/.cache/cover/arrays``: one
    folder for every run of the user, so a data set is decoded once, whatever ``--out`` says.
    """
    if os.environ.get("COVER_CACHE_DIR"):
        return Path(os.environ["COVER_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cover" / "arrays"


def resolve_cache_dir(value: str | Path | None) -> Path | None:
    """``None``/``"none"``: memory only; ``"auto"``: :func:`default_cache_dir`; else the folder given."""
    if value is None or str(value).strip().lower() in ("", "none"):
        return None
    if str(value).strip().lower() == "auto":
        return default_cache_dir()
    return Path(value).expanduser()


def _fingerprint(path: Path) -> str:
    """Modification time and size of a file, or of every file in a DICOM series folder."""
    info = os.stat(path)  # one stat for a file: start-up reads 16,000 of these
    if not stat.S_ISDIR(info.st_mode):
        return f"{path.name}:{info.st_mtime_ns}:{info.st_size}"
    files = sorted(p for p in path.iterdir() if p.is_file())
    parts = []
    for file in files:
        info = file.stat()
        parts.append(f"{file.name}:{info.st_mtime_ns}:{info.st_size}")
    return "|".join(parts)


def cache_key(path: ImageSource, preset: str, spacing: tuple[float, ...] | None, channels: bool) -> str:
    """Hash naming the cache entry of one decoded, resampled, normalised image (all its channel files)."""
    files = source_files(path)
    names = [os.path.realpath(f) for f in files]  # what Path.resolve() gives, without its Path objects
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


def decode(
    path: ImageSource, preset: IntensityPreset | None, spacing: tuple[float, ...] | None, channels: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read, resample and normalise one image.

    Args:
        path: A file, a DICOM series folder or a tuple of channel files.
        preset: Intensity preset, or ``None`` to choose one from the header or the values.
        spacing: Target voxel size in mm, or ``None``.
        channels: Keep colour / 4th-axis channels.

    Returns:
        float32 ``(C, *spatial)`` and its metadata (see :class:`CachedVolumeStore`).

    Raises:
        DataError: An unreadable file, or one whose number of axes differs from ``len(spacing)``.
    """
    record = read_source(path, channels=channels)
    preset, why = _preset_for(preset, record)
    logger.debug("%s: intensity preset %s", path, preset.to_string())
    array, final = record.array, record.spacing
    if spacing is not None:
        if len(spacing) != record.spatial_dims:
            raise data_error(
                source_text(path),
                f"is {record.spatial_dims}D but the target spacing {spacing} has {len(spacing)} values",
            )
        array, final = resample(array, record.spacing, spacing), spacing
    array = normalize(array, preset)
    meta = {
        "path": str(record.path),
        "channel_files": [str(f) for f in source_files(path)],
        "format": record.format,
        "modality": record.modality,
        "orientation": record.orientation,
        "source_spacing": [float(s) for s in record.spacing],
        "spacing": [float(s) for s in final],
        "source_shape": list(record.array.shape),
        "shape": list(array.shape),
        "preset": preset.to_string(),
        "preset_reason": why,
        "spatial_dims": record.spatial_dims,
    }
    return array, meta


def header_meta(
    source: ImageSource, info: HeaderInfo, preset: IntensityPreset | None, spacing: tuple[float, ...] | None
) -> dict[str, Any]:
    """The metadata :func:`decode` will give an image, from its header alone (``preset`` ``None`` until decoded).

    Raises:
        DataError: The header's number of spatial axes differs from ``len(spacing)`` (:func:`decode`'s message).
    """
    dims = len(info.shape) - 1
    if spacing is not None and len(spacing) != dims:
        raise data_error(source_text(source), f"is {dims}D but the target spacing {spacing} has {len(spacing)} values")
    final = spacing if spacing is not None else info.spacing
    spatial = [max(1, round(n * s / t)) for n, s, t in zip(info.shape[1:], info.spacing, final, strict=True)]
    return {
        "path": str(source),
        "channel_files": [str(f) for f in source_files(source)],
        "format": info.format,
        "modality": info.modality,
        "orientation": None if info.orientation is None else "RAS",  # volumes are read RAS-canonical
        "source_spacing": [float(s) for s in info.spacing],
        "spacing": [float(s) for s in final],
        "source_shape": list(info.shape),
        "shape": [info.shape[0], *spatial],
        "preset": None if preset is None else preset.to_string(),
        "preset_reason": "given" if preset is not None else None,
        "spatial_dims": dims,
    }


class DecodeError(DataError):
    """An image that failed to decode when drawn (``on_bad_file: error``).

    Raised in a DataLoader worker, it reaches the main process as a ``DecodeError`` whose message starts
    "Caught DecodeError in DataLoader worker" and holds the worker's traceback; the message is cut
    back to its own last line, so the command line still prints one line naming the file.
    """

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


def _preset_for(preset: IntensityPreset | None, record: ImageRecord) -> tuple[IntensityPreset, str]:
    if preset is not None:
        return preset, "given"
    text, why = choose_preset(record)
    return parse_preset(text), why


def _unique(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses."""
    return path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def save_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` at ``path`` so that readers see the old file, none, or the whole new one."""
    tmp = _unique(path)
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` at ``path`` atomically (see :func:`save_atomic`)."""
    tmp = _unique(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Job:
    """One image for :func:`_build_one` (picklable: runs in a decoding process)."""

    index: int
    source: ImageSource
    preset: IntensityPreset | None
    spacing: tuple[float, ...] | None
    channels: bool
    cache_dir: Path | None
    key: str | None
    summary: Summary | None


@dataclass
class _Built:
    """What :func:`_build_one` hands back: metadata and summary, the array only without a cache."""

    index: int
    meta: dict[str, Any] | None = None
    summary: np.ndarray | None = None
    array: np.ndarray | None = None
    error: str | None = None
    decoded: bool = False
    lazy: bool = False  # indexed from its header, decoded when first drawn
    cached: bool = False  # a lazy image already in the cache at start


def _entry_paths(cache_dir: Path, key: str, summary: Summary | None) -> tuple[Path, Path, Path | None]:
    tag = None if summary is None else cache_dir / f"{key}.{summary[0]}.npy"
    return cache_dir / f"{key}.npy", cache_dir / f"{key}.json", tag


def _read_entry(job: _Job) -> _Built | None:
    """The cached entry of ``job`` when complete (its summary computed and saved when only that is missing)."""
    if job.cache_dir is None or job.key is None:
        return None
    npy, info, tag = _entry_paths(job.cache_dir, job.key, job.summary)
    if not info.is_file():  # written last: an entry without it is incomplete
        return None
    try:
        meta = json.loads(info.read_text())
        array = np.load(npy, mmap_mode="r")
        if list(array.shape) != meta.get("shape"):
            return None
        summary = None
        if tag is not None and job.summary is not None:
            if tag.is_file():
                summary = np.load(tag)
            else:
                summary = np.asarray(job.summary[1](array))
                save_atomic(tag, summary)
    except (OSError, ValueError):
        return None
    return _Built(job.index, meta, summary)


def _build_one(job: _Job) -> _Built:
    """Decode one image (unless another process cached it meanwhile) and cache it; errors as text."""
    cached = _read_entry(job)
    if cached is not None:
        return cached
    try:
        array, meta = decode(job.source, job.preset, job.spacing, job.channels)
    except DataError as exc:
        return _Built(job.index, error=str(exc))
    array = np.ascontiguousarray(array, dtype=np.float32)
    summary = None if job.summary is None else np.asarray(job.summary[1](array))
    if job.cache_dir is None or job.key is None:
        return _Built(job.index, meta, summary, array, decoded=True)
    npy, info, tag = _entry_paths(job.cache_dir, job.key, job.summary)
    save_atomic(npy, array)
    if tag is not None:
        save_atomic(tag, summary)
    write_text_atomic(info, json.dumps(meta))
    return _Built(job.index, meta, summary, decoded=True)


def _read_index(path: Path, wait: float) -> list[Any] | None:
    """The rows of a saved header index, waiting up to ``wait`` seconds for another process to write it.

    The index is written atomically (:func:`write_text_atomic`), so a file that exists is complete.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return None  # none yet, or unreadable: the caller reads the headers
            time.sleep(0.05)


def _header_from_json(row: dict[str, Any]) -> HeaderInfo:
    return HeaderInfo(**(row | {"shape": tuple(row["shape"]), "spacing": tuple(row["spacing"])}))


def _one_thread() -> None:
    torch.set_num_threads(1)


def decoder_count(jobs: int, world_size: int = 1) -> int:
    """Decoding processes for ``jobs`` images: this process's share of the CPUs, at most :data:`MAX_DECODERS`."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(jobs, MAX_DECODERS, cpus // max(1, world_size)))


class ArrayLRU:
    """Arrays by index, the least recently used dropped once their bytes pass a budget.

    Args:
        load: Gives the array of an index (a memory map of a cache file, or a fresh decode).
        budget: Bytes held at most (the most recent array is always kept).
    """

    def __init__(self, load: Callable[[int], np.ndarray], budget: int) -> None:
        self.load, self.budget = load, budget
        self._items: OrderedDict[int, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.misses = 0

    def get(self, index: int) -> np.ndarray:
        """The array of ``index``, loaded on a miss."""
        if index in self._items:
            self._items.move_to_end(index)
            return self._items[index]
        self.misses += 1
        array = self.load(index)
        self.put(index, array)
        return array

    def put(self, index: int, array: np.ndarray) -> None:
        """Hold ``array`` as the most recent, dropping the oldest past the budget."""
        if index in self._items:
            self.bytes -= self._items.pop(index).nbytes
        self._items[index] = array
        self.bytes += array.nbytes
        while self.bytes > self.budget and len(self._items) > 1:
            self.bytes -= self._items.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        """Drop every array."""
        self._items.clear()
        self.bytes = 0


class CachedVolumeStore:
    """Indexes a list of images, decodes each once (at start, or lazily when first drawn), serves their arrays.

    Args:
        paths: Image files or DICOM series folders; a tuple of files is one image with one file per
            channel (:func:`cover.data.channels.read_source`).
        preset: Intensity preset for all files (text or object), or ``None`` to choose one
            per file from its header's modality or its values (:func:`~cover.data.presets.choose_preset`).
        spacing: Target voxel size in mm per spatial axis, or ``None`` to keep the native
            grid. Files whose number of axes differs from ``len(spacing)`` are bad files.
        cache_dir: Folder of the shared ``.npy`` cache, ``"auto"`` for :func:`default_cache_dir`,
            or ``None`` / ``"none"`` for memory only.
        on_bad_file: ``"skip"``: collect unreadable files in :attr:`skipped` and warn once;
            ``"error"``: raise the first file's :class:`DataError`.
        channels: Keep colour / 4th-axis channels (see :func:`read_image`).
        root: Name used in the "no readable images" message (defaults to the common folder).
        warn: Emit the warning listing skipped files at the end of loading (callers that
            drop more files later may pass False and call :meth:`report_skipped` once).
        summary: A per-image summary computed while decoding and cached with the image
            (:data:`Summary`; read back with :meth:`summary`).
        memory_mb: Byte budget (MB) of the arrays this process holds (:class:`ArrayLRU`).
        share: ``(rank, world_size)`` of processes building the same cache: each starts on its own
            share of the missing images (then helps with the rest), and uses its share of the CPUs.
        progress: Show a progress bar while indexing and decoding.
        sample: Images decoded at start when the others are indexed from their headers and decoded
            lazily (default :data:`START_SAMPLE`); a data set of at most this many images is decoded
            whole at start.

    Attributes:
        paths: Sources of the usable images (a path, or a tuple of channel files), aligned with :attr:`meta`.
        meta: Per-image metadata dicts: ``path`` (channel 0's file), ``channel_files`` (all of them),
            ``format``, ``modality``, ``orientation``,
            ``spacing`` (after resampling), ``source_spacing``, ``shape`` ``(C, *spatial)``,
            ``preset``, ``preset_reason`` (why it was chosen), ``spatial_dims``; from the header
            (:func:`header_meta`, ``preset`` ``None`` unless given) until this process decodes the image.
        skipped: ``(path, reason)`` of every file that could not be used.
        decoded: Images decoded by this store at start (the others came from the cache or wait).
        lazy: Per image, whether it was indexed from its header (decoded when first drawn).
        lazy_decoded: Images this process decoded since start (when drawn).
        failed: Index -> reason of drawn images that failed to decode (in this process).

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
        summary: Summary | None = None,
        memory_mb: float = DEFAULT_MEMORY_MB,
        share: tuple[int, int] = (0, 1),
        progress: bool = False,
        sample: int | None = None,
    ) -> None:
        if on_bad_file not in ("skip", "error"):
            raise ConfigError(f"on_bad_file: must be 'skip' or 'error', got {on_bad_file!r}")
        if spacing is not None:
            spacing = tuple(float(s) for s in spacing)
            if len(spacing) not in (2, 3) or any(s <= 0 for s in spacing):
                raise ConfigError(f"spacing: need 2 or 3 positive values in mm, got {spacing}")
        if memory_mb <= 0:
            raise ConfigError(f"cache_memory_mb: must be positive, got {memory_mb}")
        self.preset = None if preset is None else parse_preset(preset)
        self.spacing = spacing
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.on_bad_file = on_bad_file
        self.channels = channels
        self.summary_tag = None if summary is None else summary[0]
        self.skipped: list[tuple[ImageSource, str]] = []
        sources = [as_source(p) for p in paths]
        if root is None:
            root = _common_root([source_files(p)[0] for p in sources])
        self.root = Path(root) if root is not None else Path(".")
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._lru = ArrayLRU(self._load, int(memory_mb * 2**20))
        self.lazy_decoded, self.failed = 0, {}
        jobs = [self._job(i, source, summary) for i, source in enumerate(sources)]
        show = progress and share[0] == 0
        eager, lazy = self._split(jobs, START_SAMPLE if sample is None else sample, show, share[0])
        built = self._build(eager, share, progress) + lazy
        self._keep(jobs, built, warn)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        """Normalised float32 array ``(C, *spatial)`` of image ``index`` (a read-only memory map when cached)."""
        return self._lru.get(index)

    def shape(self, index: int) -> tuple[int, ...]:
        """``(C, *spatial)`` of image ``index``, without reading it."""
        return tuple(int(s) for s in self.meta[index]["shape"])

    def summary(self, index: int, summary: Summary) -> np.ndarray:
        """The per-image ``summary`` of image ``index`` (built with the image when its tag matches, else now)."""
        if summary[0] != self.summary_tag:
            return np.asarray(summary[1](self[index]))
        if self._summaries[index] is None:  # a lazy image: decoded (or cached by another process) now
            array = self[index]
            if self._summaries[index] is None:
                entry = _read_entry(self._jobs[index])
                found = entry.summary if entry is not None else None
                self._summaries[index] = np.asarray(summary[1](array)) if found is None else found
        return self._summaries[index]

    def usable(self, index: int) -> int:
        """``index``, or the next image (cyclically) when it cannot be decoded: the same in every process and run.

        A failure is warned about once per process, cached as ``KEY.error`` (so other processes do not
        decode the file again) and kept in :attr:`failed`.

        Raises:
            DecodeError: The image cannot be decoded and ``on_bad_file`` is ``"error"``, or none can.
        """
        for step in range(len(self)):
            candidate = (index + step) % len(self)
            if candidate in self.failed:
                continue
            try:
                self[candidate]
                return candidate
            except DataError as exc:
                if self.on_bad_file == "error":
                    raise DecodeError(str(exc)) from None
                self._fail(candidate, str(exc))
        raise DecodeError(f"{self.root}: no image could be decoded ({len(self.failed)} failed)")

    @property
    def nbytes(self) -> int:
        """float32 bytes of all usable images."""
        return sum(4 * int(np.prod(m["shape"])) for m in self.meta)

    def note(self) -> str:
        """One line saying how much is cached where, and how much one process holds."""
        gb = self.nbytes / 1e9
        budget = f"at most {self._lru.budget / 1e9:.1f} GB of arrays held per process"
        if self.cache_dir is None:
            return (
                f"data: {len(self)} image(s), {gb:.2f} GB decoded in memory (no cache folder); {budget}, "
                "the rest decoded again when drawn"
            )
        waiting = self._cached.count(False)
        reused = len(self) - self.decoded - waiting
        later = f", {waiting} decoded when first drawn" if waiting else ""
        return (
            f"data cache: {len(self)} image(s), {gb:.2f} GB in {self.cache_dir} ({self.decoded} decoded now, "
            f"{reused} reused{later}); {budget}"
        )

    def drop(self, indices: Sequence[int], reason: Sequence[str]) -> None:
        """Remove images (e.g. too small for a dataset) and record why in :attr:`skipped`."""
        gone = set(indices)
        for i, why in zip(indices, reason, strict=True):
            self.skipped.append((self.paths[i], why))
        keep = [i for i in range(len(self)) if i not in gone]
        for name in ("paths", "meta", "lazy", "_jobs", "_summaries", "_cached"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
        self._lru.clear()

    def report_skipped(self) -> None:
        """Emit one warning listing the skipped files (the first 10; no-op when none)."""
        if self.skipped:
            warnings.warn(skipped_message(self.skipped), stacklevel=3)

    # ------------------------------------------------------------------ internals

    def _job(self, index: int, source: ImageSource, summary: Summary | None) -> _Job:
        key = None
        if self.cache_dir is not None:
            name = self.preset.to_string() if self.preset is not None else "auto"
            try:
                key = cache_key(source, name, self.spacing, self.channels)
            except OSError:
                key = None  # a missing file: decoding names the problem
        return _Job(index, source, self.preset, self.spacing, self.channels, self.cache_dir, key, summary)

    def _build(self, jobs: list[_Job], share: tuple[int, int], progress: bool) -> list[_Built]:
        """Every job's entry: cached ones read, the others decoded (in a process pool when worth it)."""
        rank, world = share
        show = progress and rank == 0
        quiet = not show or len(jobs) < 10 * PROGRESS_FROM
        index = progress_bar(jobs, desc="reading the cache", unit="img", disable=quiet)
        built = {job.index: _read_entry(job) for job in index}
        missing = [job for job in jobs if built[job.index] is None]
        if missing:
            start = rank * len(missing) // max(1, world)
            missing = missing[start:] + missing[:start]  # each process starts on its own share
            show = show and len(missing) >= PROGRESS_FROM
            self._announce_build(missing, show)
            for result in self._decode(missing, decoder_count(len(missing), world), show):
                built[result.index] = result
        self.decoded = sum(b.decoded for b in built.values() if b is not None)
        return [b for b in built.values() if b is not None]

    def _split(self, jobs: list[_Job], sample: int, show: bool, rank: int) -> tuple[list[_Job], list[_Built]]:
        """Jobs to decode at start, and the lazy images' header entries (all jobs when at most ``sample``).

        The sample is evenly spaced over the images with a header, so it depends on the file list alone.
        """
        self._pending_bytes = 0
        if len(jobs) <= sample:
            return jobs, []
        infos = self._index(jobs, show, rank)
        indexed = [i for i, info in enumerate(infos) if info is not None]
        picks = {indexed[round(k * (len(indexed) - 1) / max(1, sample - 1))] for k in range(min(sample, len(indexed)))}
        eager = [job for job, info in zip(jobs, infos, strict=True) if info is None or job.index in picks]
        lazy = []
        for i in indexed:
            if i in picks:
                continue
            job, info = jobs[i], infos[i]
            try:
                meta = header_meta(job.source, info, self.preset, self.spacing)
            except DataError as exc:
                lazy.append(_Built(i, error=str(exc)))
                continue
            cached = job.key is not None and os.path.isfile(os.path.join(job.cache_dir, f"{job.key}.json"))
            self._pending_bytes += 0 if cached else info.decoded_bytes(self.spacing)
            lazy.append(_Built(i, meta, lazy=True, cached=cached))
        self._check_room(self._pending_bytes)
        return eager, lazy

    def _index(self, jobs: list[_Job], show: bool, rank: int = 0) -> list[HeaderInfo | None]:
        """Every job's header (``None`` where there is no cheap one), read in threads, with a progress bar.

        With a cache folder the index is cached too (``index-HASH.json``, named by every file's cache
        key, so by paths, sizes and modification times): a later run reads one file instead of every
        header, and in a run of several processes (``rank`` > 0) the others wait for the first one's
        index instead of reading every header again (for at most :data:`INDEX_WAIT`).
        """
        saved = None
        if self.cache_dir is not None and all(job.key is not None for job in jobs):
            text = json.dumps([CACHE_VERSION, self.channels, [job.key for job in jobs]])
            saved = self.cache_dir / f"index-{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"
            # The first process of each machine reads the headers (torchrun's LOCAL_RANK: a cache folder
            # local to each machine gets its own index); the others wait for its file.
            first = rank == 0 or int(os.environ.get("LOCAL_RANK", rank)) == 0
            wait = 0.0 if first else INDEX_WAIT[0] + INDEX_WAIT[1] * len(jobs)
            rows = _read_index(saved, wait)
            if rows is not None and len(rows) == len(jobs):
                return [None if row is None else _header_from_json(row) for row in rows]
        infos = self._read_headers(jobs, show)
        if saved is not None:
            rows = [None if info is None else dataclasses.asdict(info) for info in infos]
            with contextlib.suppress(OSError):  # a read-only cache: read the headers every time
                write_text_atomic(saved, json.dumps(rows))
        return infos

    def _read_headers(self, jobs: list[_Job], show: bool) -> list[HeaderInfo | None]:
        bar = progress_bar(
            total=len(jobs), desc="indexing headers", unit="img", disable=not show or len(jobs) < 10 * PROGRESS_FROM
        )
        infos = []
        with bar, ThreadPoolExecutor(INDEX_THREADS) as pool:
            for info in pool.map(lambda job: header_info(job.source, channels=self.channels), jobs):
                infos.append(info)
                bar.update()
        return infos

    def _check_room(self, estimate: float) -> None:
        """Refuse early when the cache's disk cannot hold ``estimate`` more bytes."""
        if self.cache_dir is None or not estimate:
            return
        free = shutil.disk_usage(self.cache_dir).free
        if estimate > free:
            raise DataError(
                f"{self.cache_dir}: the data cache needs about {estimate / 1e9:.1f} GB but the disk has "
                f"{free / 1e9:.1f} GB free; pass another --cache-dir (or --cache-dir none for memory only)"
            )

    def _decode(self, jobs: list[_Job], workers: int, progress: bool) -> list[_Built]:
        bar = progress_bar(total=len(jobs), desc="decoding images", unit="img", disable=not progress)
        results = []
        with bar:
            if workers <= 1 or len(jobs) < 4:
                for job in jobs:
                    results.append(_build_one(job))
                    bar.update()
                return results
            # Forked like DataLoader workers, one intra-op thread each (the pool is the parallelism).
            with ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_one_thread) as pool:
                for result in pool.map(_build_one, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers)))):
                    results.append(result)
                    bar.update()
        return results

    def _announce_build(self, jobs: list[_Job], show: bool) -> None:
        """Say what is about to be decoded, from headers only; refuse early when the cache's disk is too small."""
        infos = [header_info(job.source, channels=self.channels) for job in jobs]
        known = [info.decoded_bytes(self.spacing) for info in infos if info is not None]
        estimate = sum(known) * len(jobs) / max(1, len(known)) if known else 0
        where = f"into {self.cache_dir}" if self.cache_dir is not None else "in memory"
        if show:
            logger.info(f"decoding {len(jobs)} image(s) (about {estimate / 1e9:.2f} GB as float32) {where}")
        self._check_room(estimate + self._pending_bytes)

    def _keep(self, jobs: list[_Job], built: list[_Built], warn: bool) -> None:
        """Keep the usable images (in input order), hold what fits of arrays decoded in memory."""
        self.paths: list[ImageSource] = []
        self.meta: list[dict[str, Any]] = []
        self.lazy: list[bool] = []
        self._jobs: list[_Job] = []
        self._summaries: list[np.ndarray | None] = []
        self._cached: list[bool] = []  # in the cache (or memory) once start-up is done
        for result in sorted(built, key=lambda b: b.index):
            job = jobs[result.index]
            if result.error is not None:
                if self.on_bad_file == "error":
                    raise DataError(result.error)
                self.skipped.append((job.source, result.error))
                continue
            if result.array is not None and self._lru.bytes + result.array.nbytes <= self._lru.budget:
                self._lru.put(len(self.paths), result.array)
            self.paths.append(job.source)
            self.meta.append(result.meta)
            self.lazy.append(result.lazy)
            self._jobs.append(job)
            self._summaries.append(result.summary)
            self._cached.append(result.cached or not result.lazy)
        if warn or not self.paths:
            self.report_skipped()
        if not self.paths:
            reason = f"; first problem: {self.skipped[0][1]}" if self.skipped else ""
            raise data_error(self.root, f"no readable images ({len(self.skipped)} file(s) skipped){reason}")

    def _load(self, index: int) -> np.ndarray:
        """A memory map of the cached image, else the image decoded now (and cached); DataError when it fails."""
        job = self._jobs[index]
        cached = job.cache_dir is not None and job.key is not None
        if cached:
            npy, info, _ = _entry_paths(job.cache_dir, job.key, None)
            if info.is_file():  # complete (its JSON is written last)
                try:
                    return np.load(npy, mmap_mode="r")
                except (OSError, ValueError):
                    pass  # unreadable: decode it again
            failure = job.cache_dir / f"{job.key}.error"
            if failure.is_file():  # another process found it undecodable
                raise DataError(failure.read_text())
        built = _build_one(job)
        if built.error is not None:
            raise DataError(built.error)
        self.lazy_decoded += built.decoded
        self.meta[index] = built.meta
        if built.summary is not None:
            self._summaries[index] = built.summary
        return built.array if built.array is not None else np.load(npy, mmap_mode="r")

    def _fail(self, index: int, reason: str) -> None:
        """Remember that image ``index`` cannot be decoded; warn on the first such image of this process."""
        self.failed[index] = reason
        job = self._jobs[index]
        if job.cache_dir is not None and job.key is not None:
            try:
                write_text_atomic(job.cache_dir / f"{job.key}.error", reason)
            except OSError:
                pass  # a read-only cache: each process finds the failure itself
        if len(self.failed) == 1:
            warnings.warn(
                f"{reason}; drawn for training but it cannot be decoded: every sample of it uses the next "
                "usable image instead, in every process and run (warned once per process)",
                stacklevel=3,
            )


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
