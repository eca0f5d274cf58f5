"""Intensity presets: parsing, round trips, value mapping and modality defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cover.data.presets import IntensityPreset, default_preset_for, normalize, parse_preset
from cover.data.record import ImageRecord
from cover.errors import ConfigError


@pytest.mark.parametrize("text", ["ct", "ct:-175,250", "mri", "mri:1,99", "xray", "zscore", "minmax", "uint8", "none"])
def test_parse_round_trip(text):
    preset = parse_preset(text)
    assert parse_preset(preset.to_string()) == preset
    assert isinstance(preset, IntensityPreset)


def test_defaults_and_params():
    assert parse_preset("ct") == IntensityPreset("ct", (-1000.0, 1000.0))
    assert parse_preset("CT:-175,250").params == (-175.0, 250.0)
    assert parse_preset("ct:-175,250").to_string() == "ct:-175,250"
    assert parse_preset("mri").params == (0.5, 99.5)
    assert parse_preset(IntensityPreset("none")).name == "none"
    assert parse_preset("ct:-0.1234567891,1").to_string() == "ct:-0.1234567891,1"


@pytest.mark.parametrize(
    "text, match",
    [
        ("bone", "unknown intensity preset"),
        ("ct:1", "takes 2 parameters"),
        ("ct:a,b", "must be numbers"),
        ("ct:100,-100", "low < high"),
        ("zscore:1,2", "takes no parameters"),
        ("mri:-1,99", "must lie in"),
    ],
)
def test_bad_presets_are_one_line_config_errors(text, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_preset(text)
    assert "\n" not in str(info.value) and str(info.value).startswith("intensity:")


def test_ct_window():
    hu = np.array([[[-2000.0, -1000.0, 0.0, 1000.0, 3000.0]]], dtype=np.float32)
    np.testing.assert_allclose(normalize(hu, "ct")[0, 0], [0, 0, 0.5, 1, 1])
    out = normalize(np.array([[[-175.0, 37.5, 250.0]]]), "ct:-175,250")
    np.testing.assert_allclose(out[0, 0], [0, 0.5, 1])
    assert out.dtype == np.float32


def test_percentile_presets_clip_outliers():
    values = np.linspace(0, 100, 1001, dtype=np.float32)[None]
    values[0, -1] = 1e6  # a burned-in label / hot pixel
    for name in ("mri", "xray"):
        out = normalize(values, name)
        assert out.min() == 0 and out.max() == 1
        assert 0.4 < out[0, 500] < 0.6


def test_zscore_nonzero_and_minmax_and_none():
    values = np.array([[0.0, 0.0, 2.0, 4.0, 6.0]], dtype=np.float32)
    z = normalize(values, "zscore")
    assert z[0, 0] == 0 and z[0, 1] == 0
    np.testing.assert_allclose(z[0, 2:].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(z[0, 2:].std(), 1, atol=1e-6)
    np.testing.assert_allclose(normalize(values, "minmax")[0], [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(normalize(values, "none"), values)
    constant = np.full((1, 3, 3), 7.0, np.float32)
    for name in ("minmax", "mri", "zscore"):
        assert np.all(normalize(constant, name) == 0)


def test_uint8_divides_by_255_without_rescaling_the_image_range():
    """The authors' input: 8-bit values / 255, so an image spanning 20..200 stays at 20/255..200/255
    (``minmax`` would stretch it to 0..1); values above 255 are not clipped."""
    values = np.array([[20.0, 51.0, 200.0], [0.0, 255.0, 510.0]], dtype=np.float32)
    out = normalize(values, "uint8")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[20 / 255, 0.2, 200 / 255], [0.0, 1.0, 2.0]], rtol=1e-6)
    with pytest.raises(ConfigError, match="takes no parameters"):
        parse_preset("uint8:0,255")


def test_multichannel_is_per_channel():
    values = np.stack([np.arange(10.0), 100 + 10 * np.arange(10.0)]).astype(np.float32)
    out = normalize(values, "minmax")
    np.testing.assert_allclose(out[0], out[1])


@pytest.mark.parametrize(
    "modality, expected",
    [
        ("CT", "ct"),
        ("MR", "mri"),
        ("CR", "xray"),
        ("DX", "xray"),
        ("MG", "xray"),
        ("US", "minmax"),
        (None, "minmax"),
    ],
)
def test_default_preset_for(modality, expected):
    record = ImageRecord(
        array=np.zeros((1, 2, 2), np.float32),
        spacing=(1.0, 1.0),
        affine=None,
        orientation=None,
        modality=modality,
        format="dicom",
        path=Path("x.dcm"),
    )
    assert default_preset_for(record) == expected


def _record(values: np.ndarray, modality: str | None = None) -> ImageRecord:
    return ImageRecord(
        array=values[None].astype(np.float32),
        spacing=(1.0,) * values.ndim,
        affine=None,
        orientation=None,
        modality=modality,
        format="nrrd",
        path=Path("x.nrrd"),
    )


@pytest.mark.parametrize(
    ("low", "high", "modality", "expected"),
    [
        (-1024, 3071, None, "ct:-1000,1000"),  # lung CT in NRRD: air, padding, bone
        (-3024, 1800, None, "ct:-1000,1000"),  # scanner padding outside the field of view
        (-1000, 250, None, "ct:-1000,1000"),  # a soft-tissue crop with air
        (0, 4095, None, "minmax"),  # MR magnitude
        (-4096, 4095, None, "minmax"),  # MR phase: reaches below any CT padding
        (-3.2, 5.1, None, "minmax"),  # z-scored data
        (-1024, 150, None, "minmax"),  # air and water only: no tissue above 200
        (0, 4095, "MR", "mri:0.5,99.5"),  # the header wins
        (-1024, 3071, "MR", "mri:0.5,99.5"),
    ],
)
def test_choose_preset_reads_the_header_then_the_values(low, high, modality, expected):
    from cover.data.presets import choose_preset

    values = np.linspace(low, high, 60).reshape(3, 4, 5)
    preset, why = choose_preset(_record(values, modality))
    assert preset == expected
    if modality is None and expected.startswith("ct"):
        assert why == f"no modality in the header; values {low:g}..{high:g} look like CT in HU"
    elif modality is not None:
        assert why == f"modality {modality} in the header"


def test_ct_padded_below_air_gets_minmax_with_the_values_seen_and_the_flag_to_pass():
    from cover.data.presets import choose_preset

    values = np.linspace(-1000, 1500, 60).reshape(3, 4, 5)
    values[0, 0, :2] = -32768  # padding outside the field of view
    preset, why = choose_preset(_record(values, None))
    assert preset == "minmax"
    assert (
        why == "no modality in the header, values -32768..1500 (CT in HU padded with -32768? then pass --intensity ct)"
    )
    _, why = choose_preset(_record(np.linspace(0, 255, 60).reshape(3, 4, 5), None))
    assert why == "no modality in the header, values 0..255"  # no CT advice for a picture
