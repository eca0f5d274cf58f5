"""Named intensity presets: how raw scanner values become the network's float32 input.

=========  =====================  ==========================================================
name       parameters (default)   output
=========  =====================  ==========================================================
``ct``     HU window (-1000,      ``clip((x - lo) / (hi - lo), 0, 1)``; e.g. ``ct:-175,250``
           1000)                  for an abdomen window
``mri``    percentiles (0.5,      per channel, ``[p_lo, p_hi]`` percentiles -> ``[0, 1]``,
           99.5)                  clipped
``xray``   percentiles (0.5,      same as ``mri`` (robust to collimator borders and labels)
           99.5)
``zscore`` none                   per channel, ``(x - mean) / std`` over non-zero voxels;
                                  zero voxels stay 0 (background)
``minmax`` none                   per channel, ``[min, max] -> [0, 1]``
``uint8``  none                   ``x / 255``, unclipped: the authors' release's input for
                                  8-bit PNGs (docs/method.md §11 D8)
``none``   none                   values unchanged (float32)
=========  =====================  ==========================================================

A constant channel maps to 0. Presets are written as text (``"ct:-175,250"``) in configs and
checkpoints; :func:`parse_preset` and :meth:`IntensityPreset.to_string` round-trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cover.data.record import ImageRecord
from cover.errors import ConfigError

#: Preset name -> (number of parameters, default parameters).
PRESETS: dict[str, tuple[float, ...]] = {
    "ct": (-1000.0, 1000.0),
    "mri": (0.5, 99.5),
    "xray": (0.5, 99.5),
    "zscore": (),
    "minmax": (),
    "uint8": (),
    "none": (),
}

#: Recorded as a run's preset when no preset was given and the files got different ones (each
#: file's own is then chosen by :func:`choose_preset`, as in training).
PER_FILE = "per-file"

#: DICOM modalities normalised with the ``xray`` preset.
XRAY_MODALITIES = frozenset({"CR", "DX", "MG", "RG", "PX", "IO", "RF", "XA"})

#: Voxels used to estimate percentiles of large images (a fixed-stride subsample).
_PERCENTILE_SAMPLES = 2_000_000


@dataclass(frozen=True)
class IntensityPreset:
    """A named intensity mapping with its numeric parameters.

    Attributes:
        name: One of :data:`PRESETS`.
        params: Parameters (window bounds in HU for ``ct``, percentiles for ``mri``/``xray``).
    """

    name: str
    params: tuple[float, ...] = ()

    def to_string(self) -> str:
        """Text form, e.g. ``"ct:-175,250"``; ``parse_preset`` reads it back unchanged."""
        if not self.params:
            return self.name
        return f"{self.name}:" + ",".join(_number(p) for p in self.params)

    def __str__(self) -> str:
        return self.to_string()


def _number(value: float) -> str:
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def parse_preset(text: str | IntensityPreset) -> IntensityPreset:
    """Parse ``"name"`` or ``"name:p1,p2"`` into an :class:`IntensityPreset`.

    Args:
        text: Preset text (case-insensitive name) or an already parsed preset.

    Returns:
        The preset, with default parameters filled in when none are given.

    Raises:
        ConfigError: Unknown name, wrong number of parameters, non-numeric or inverted bounds.
    """
    if isinstance(text, IntensityPreset):
        return text
    raw = str(text).strip()
    name, _, args = raw.partition(":")
    name = name.strip().lower()
    if name not in PRESETS:
        known = ", ".join(PRESETS)
        raise ConfigError(f"intensity: unknown intensity preset {raw!r}; choose one of {known}")
    default = PRESETS[name]
    if not args.strip():
        return IntensityPreset(name, default)
    if not default:
        raise ConfigError(f"intensity: {name!r} takes no parameters, got {raw!r}")
    try:
        params = tuple(float(a) for a in args.split(","))
    except ValueError as exc:
        raise ConfigError(f"intensity: parameters of {raw!r} must be numbers, e.g. ct:-175,250") from exc
    if len(params) != len(default):
        raise ConfigError(f"intensity: {name!r} takes {len(default)} parameters (low,high), got {raw!r}")
    low, high = params
    if not high > low:
        raise ConfigError(f"intensity: {raw!r} needs low < high")
    if name in ("mri", "xray") and not (0.0 <= low and high <= 100.0):
        raise ConfigError(f"intensity: percentiles in {raw!r} must lie in [0, 100]")
    return IntensityPreset(name, params)


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _percentiles(values: np.ndarray, q: tuple[float, ...]) -> tuple[float, float]:
    flat = values.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLES:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLES + 1]
    low, high = np.percentile(flat, q)
    return float(low), float(high)


def _channel(values: np.ndarray, preset: IntensityPreset) -> np.ndarray:
    name = preset.name
    if name in ("mri", "xray"):
        return _scale(values, *_percentiles(values, preset.params))
    if name == "minmax":
        return _scale(values, float(values.min()), float(values.max()))
    if name == "zscore":
        mask = values != 0
        if not mask.any():
            return np.zeros_like(values)
        mean = float(values[mask].mean())
        std = float(values[mask].std())
        out = np.zeros_like(values)
        out[mask] = (values[mask] - mean) / std if std > 0 else 0.0
        return out
    raise AssertionError(name)


def normalize(array: np.ndarray, preset: str | IntensityPreset) -> np.ndarray:
    """Map raw intensities to the preset's float32 range.

    Args:
        array: ``(C, *spatial)`` raw values (e.g. HU for CT).
        preset: Preset text or object.

    Returns:
        float32 array of the same shape; in ``[0, 1]`` for ``ct``, ``mri``, ``xray``,
        ``minmax`` (and ``uint8`` on 8-bit values); zero-mean unit-variance foreground for ``zscore``.
    """
    preset = parse_preset(preset)
    values = np.asarray(array, dtype=np.float32)
    if preset.name == "none":
        return values.copy()
    if preset.name == "uint8":
        return values / np.float32(255.0)
    if preset.name == "ct":
        return _scale(values, *preset.params).astype(np.float32)
    out = np.empty_like(values)
    for c in range(values.shape[0]):
        out[c] = _channel(values[c], preset)
    return out


#: CT detection for files whose header names no modality: the minimum lies in this range (air is
#: -1000 HU; scanners pad outside the field of view with -1024, -2000, -2048 or -3024) ...
CT_MINIMUM_RANGE = (-3100.0, -900.0)

#: ... and the maximum reaches at least this (soft tissue with contrast, bone: well above 0 HU).
CT_MAXIMUM_AT_LEAST = 200.0


def looks_like_ct(array: np.ndarray) -> bool:
    """Whether raw values look like CT in Hounsfield units (see :data:`CT_MINIMUM_RANGE`).

    MR magnitude images, radiographs and photographs have no values near -1000; phase images
    and z-scored data do not reach the range on both sides.

    Args:
        array: ``(C, *spatial)`` raw values.
    """
    values = np.asarray(array)
    if values.shape[0] != 1 or values.size == 0:
        return False
    low, high = float(values.min()), float(values.max())
    return CT_MINIMUM_RANGE[0] <= low <= CT_MINIMUM_RANGE[1] and high >= CT_MAXIMUM_AT_LEAST


def choose_preset(record: ImageRecord) -> tuple[str, str]:
    """Preset for one image when none is given, and why.

    The header's modality decides where there is one (DICOM ``Modality``, MetaImage
    ``Modality``): ``ct`` for CT, ``mri`` for MR, ``xray`` for projection radiography (CR/DX/MG
    and similar), ``minmax`` for others. A file whose header names no modality (NIfTI, NRRD,
    most MHA, PNG, ...) gets ``ct`` when its values look like CT in HU (:func:`looks_like_ct`),
    else ``minmax``.

    Args:
        record: A read image.

    Returns:
        ``(preset text with its parameters, reason)``, e.g. ``("ct:-1000,1000", "values
        -1024..3071 look like CT in HU")``.
    """
    modality = (record.modality or "").upper()
    if modality == "CT":
        name, why = "ct", "modality CT in the header"
    elif modality == "MR":
        name, why = "mri", "modality MR in the header"
    elif modality in XRAY_MODALITIES:
        name, why = "xray", f"modality {modality} in the header"
    elif modality:
        name, why = "minmax", f"modality {modality} in the header"
    elif looks_like_ct(record.array):
        low, high = float(record.array.min()), float(record.array.max())
        name, why = "ct", f"no modality in the header; values {low:g}..{high:g} look like CT in HU"
    else:
        name, why = "minmax", _not_ct(record.array)
    return parse_preset(name).to_string(), why


def _not_ct(array: np.ndarray) -> str:
    """Why a file without a modality got ``minmax``: the values seen, and ``--intensity ct`` where CT is likely."""
    low, high = float(np.min(array)), float(np.max(array))
    why = f"no modality in the header, values {low:g}..{high:g}"
    if low < CT_MINIMUM_RANGE[0] and high >= CT_MAXIMUM_AT_LEAST:
        # A CT volume padded outside its field of view with a value below any scanner's air (-32768).
        why += f" (CT in HU padded with {low:g}? then pass --intensity ct)"
    return why


def default_preset_for(record: ImageRecord) -> str:
    """Name of the preset chosen for ``record`` when none is given (see :func:`choose_preset`)."""
    return parse_preset(choose_preset(record)[0]).name
