"""``cover data inspect PATH``: what the data layer finds in a folder and what it cannot read.

Every image found by :func:`~cover.data.discovery.find_images` is read with
:func:`~cover.data.readers.read_image` exactly as training would read it; the report lists
per file its format, modality, shape, spacing and orientation *as stored in the file* (before
the reader brings volumes to RAS order; e.g. ``LPS`` for an NRRD with identity direction) and its
raw intensity range, and every file that could not be read with the reason. NumPy files found
in a folder are listed apart with their shape, not as images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel import orientations

from cover.data.channels import source_files
from cover.data.discovery import find_images_and_ignored, load_datalist
from cover.data.readers import detect_format, read_image
from cover.data.record import ImageRecord, axis_codes, spacing_from_affine
from cover.errors import DataError


@dataclass
class FileInfo:
    """Summary of one readable image.

    Attributes:
        path: Image file or DICOM series folder.
        format: Reader format name.
        modality: Header modality or ``None``.
        shape: ``(C, *spatial)`` as read (volumes in RAS canonical order).
        spacing: Voxel size (mm) per spatial axis, as read.
        orientation: Axis codes as read (``"RAS"`` for volumes with a geometry) or ``None``.
        minimum: Smallest raw value (after the modality LUT for DICOM).
        maximum: Largest raw value.
    """

    path: Path
    format: str
    modality: str | None
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str | None
    minimum: float
    maximum: float
    stored_shape: tuple[int, ...] = ()
    stored_spacing: tuple[float, ...] = ()
    stored_orientation: str | None = None


def stored_layout(record: ImageRecord) -> tuple[tuple[int, ...], tuple[float, ...], str | None]:
    """Spatial shape, spacing and axis codes of the file as stored, before RAS reorientation.

    Args:
        record: A record from :func:`read_image`.

    Returns:
        ``(shape, spacing, orientation)`` in the file's own axis order (a 2D NIfTI stays 2D);
        ``orientation`` is ``None`` for images without a geometry.
    """
    original = record.meta.get("original_affine")
    if original is None or record.spatial_dims != 3:
        return record.spatial_shape, tuple(float(s) for s in record.spacing), record.orientation
    original = np.asarray(original, dtype=np.float64)
    ornt = orientations.io_orientation(original)
    shape = tuple(record.spatial_shape[int(target)] for target, _ in ornt)
    spacing = spacing_from_affine(original)
    codes = str(record.meta.get("original_orientation") or axis_codes(original))
    stored = record.meta.get("original_shape")
    if stored is not None and len(stored) == 2:  # a 2D NIfTI
        return tuple(int(s) for s in stored), spacing[:2], codes[:2]
    return shape, spacing, codes


@dataclass
class InspectReport:
    """Result of :func:`inspect_data`.

    Attributes:
        root: The inspected folder, file or datalist.
        files: Readable images, in path order.
        failures: ``(path, reason)`` for each image that could not be read.
        ignored: Files that are not images (by suffix or content) and were not read.
        arrays: NumPy files (``.npy``/``.npz``) found in a folder, with their shape: such files
            hold features, embeddings and masks as often as pictures, so they are listed apart
            and not read as images (name one explicitly, or in a datalist, to inspect it).
    """

    root: Path
    files: list[FileInfo] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    arrays: list[tuple[Path, str]] = field(default_factory=list)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Format -> ``(readable, unreadable)`` counts."""
        ok = Counter(f.format for f in self.files)
        bad = Counter(detect_format(p) or "unknown" for p, _ in self.failures)
        return {k: (ok.get(k, 0), bad.get(k, 0)) for k in sorted(set(ok) | set(bad))}

    def _name(self, path: Path) -> str:
        base = self.root if self.root.is_dir() else self.root.parent
        try:
            name = str(path.relative_to(base))
        except ValueError:
            name = str(path)
        return name + ("/" if path.is_dir() else "")

    def to_text(self) -> str:
        """Aligned plain-text report (summary, per-format counts, files, failures)."""
        lines = [
            f"{self.root}: {len(self.files)} image(s) readable, {len(self.failures)} "
            f"unreadable, {len(self.ignored)} other file(s) ignored"
            + (f", {len(self.arrays)} NumPy array(s) not taken as images" if self.arrays else ""),
            "",
        ]
        counts = self.counts()
        if counts:
            rows = [("format", "readable", "unreadable")]
            rows += [(k, str(a), str(b)) for k, (a, b) in counts.items()]
            lines += _table(rows, right=(1, 2)) + [""]
        if self.files:
            rows = [("file", "format", "modality", "shape", "spacing (mm)", "orient", "min", "max")]
            for f in self.files:
                rows.append(
                    (
                        self._name(f.path),
                        f.format,
                        f.modality or "-",
                        "x".join(str(s) for s in f.stored_shape or f.shape[1:])
                        + (f" ({f.shape[0]}ch)" if f.shape[0] > 1 else ""),
                        "x".join(f"{s:.3g}" for s in f.stored_spacing or f.spacing),
                        (f.stored_orientation if f.stored_shape else f.orientation) or "-",
                        f"{f.minimum:.6g}",
                        f"{f.maximum:.6g}",
                    )
                )
            lines += _table(rows, right=(6, 7))
            lines += ["(shape, spacing and orientation as stored in each file; cover reads volumes in RAS order)", ""]
        if self.arrays:
            lines.append("NumPy arrays, not read as images (as often features or masks; name one to read it):")
            lines += [f"  {self._name(path)}: {shape}" for path, shape in self.arrays]
            lines.append("")
        if self.failures:
            lines.append("unreadable:")
            for path, reason in self.failures:
                prefix = f"{path}: "
                text = reason[len(prefix) :] if reason.startswith(prefix) else reason
                lines.append(f"  {self._name(path)}: {text}")
        return "\n".join(lines).rstrip() + "\n"


def _table(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def _array_summary(path: Path) -> str:
    """``"64x32x32 float32"`` from a NumPy file's header (arrays of an ``.npz``), without reading the data."""
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, mmap_mode="r", allow_pickle=False)
            return f"{'x'.join(str(s) for s in values.shape)} {values.dtype}"
        with np.load(path, allow_pickle=False) as npz:
            return ", ".join(f"{k}: {'x'.join(str(s) for s in npz[k].shape)}" for k in npz.files)
    except Exception as exc:  # any unreadable array: say so, do not fail the report
        return f"unreadable ({type(exc).__name__})"


def inspect_data(path: str | Path, *, channels: bool = False) -> InspectReport:
    """Read every image under ``path`` and summarise it.

    Args:
        path: Folder (searched recursively), single image or DICOM series folder, or a
            ``.json``/``.csv`` datalist.
        channels: Read colour / 4D data as channels (as training with ``channels=True``).

    Returns:
        The :class:`InspectReport`.

    Raises:
        DataError: ``path`` does not exist.
    """
    root = Path(path)
    if root.is_file() and root.suffix.lower() in (".json", ".csv"):
        entries = load_datalist(root)  # an entry may list one file per channel: each file is inspected
        paths, ignored = [f for e in entries for f in source_files(e["image"])], []
    else:
        paths, ignored = find_images_and_ignored(root)
    arrays = []
    if root.is_dir():
        arrays = [p for p in paths if detect_format(p) in ("npy", "npz")]
        paths = [p for p in paths if p not in set(arrays)]
    report = InspectReport(root=root, ignored=ignored, arrays=[(p, _array_summary(p)) for p in arrays])
    for image in paths:
        try:
            record = read_image(image, channels=channels)
        except DataError as exc:
            report.failures.append((image, str(exc)))
            continue
        stored_shape, stored_spacing, stored_orientation = stored_layout(record)
        report.files.append(
            FileInfo(
                path=image,
                format=record.format,
                modality=record.modality,
                shape=tuple(int(s) for s in record.array.shape),
                spacing=tuple(float(s) for s in record.spacing),
                orientation=record.orientation,
                minimum=float(record.array.min()),
                maximum=float(record.array.max()),
                stored_shape=stored_shape,
                stored_spacing=stored_spacing,
                stored_orientation=stored_orientation,
            )
        )
    return report


def run_inspect(path: str) -> str:
    """Text report for the ``cover data inspect PATH`` command.

    Args:
        path: What to inspect (see :func:`inspect_data`).

    Returns:
        The report text (ends with a newline).

    Raises:
        DataError: ``path`` does not exist (one-line message for the CLI).
    """
    return inspect_data(path).to_text()
