"""Discovery, datalists, the decode cache and the pretraining datasets' (index, seed) contract."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cover.data import store as store_module
from cover.data.datasets import (
    CachedVolumeStore,
    Patches3DDataset,
    Slices2DDataset,
    build_pretrain_dataset,
    find_images,
    load_datalist,
)
from cover.errors import ConfigError, DataError

AXIAL = [1, 0, 0, 0, 1, 0]


def _volume(shape=(12, 14, 10), seed=0):
    """A bright block inside a dark background."""
    data = np.zeros(shape, np.float32)
    block = tuple(slice(s // 4, s // 4 + s // 2) for s in shape)
    data[block] = 100 + np.random.default_rng(seed).normal(size=[s // 2 for s in shape])
    return data


@pytest.fixture
def folder(tmp_path, make_nifti, make_dicom):
    root = tmp_path / "data"
    make_nifti(root / "a.nii.gz", _volume(seed=1))
    make_nifti(root / "sub" / "b.nii", _volume(seed=2), np.diag([2.0, 2.0, 2.0, 1.0]))
    Image.fromarray((np.arange(400).reshape(20, 20) % 256).astype(np.uint8)).save(root / "c.png")
    make_dicom(root / "sub" / "IM0001", np.full((16, 16), 1024, np.uint16), slope=1.0, intercept=-1024)
    for k in range(3):
        make_dicom(
            root / "series" / f"{k}.dcm",
            np.full((8, 8), 100 * k, np.uint16),
            position=[0, 0, 2.0 * k],
            orientation=AXIAL,
            series_uid="1.2.3.4.5",
        )
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_text("junk")
    return root


def test_find_images(folder):
    found = find_images(folder)
    names = [p.relative_to(folder).as_posix() for p in found]
    assert names == ["a.nii.gz", "c.png", "series", "sub/IM0001", "sub/b.nii"]
    assert find_images(folder, recursive=False) == [folder / "a.nii.gz", folder / "c.png"]
    assert find_images(folder / "a.nii.gz") == [folder / "a.nii.gz"]
    with pytest.raises(DataError, match="no such file"):
        find_images(folder / "missing")


def test_load_datalist_json_and_csv(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"image": "a.nii.gz", "label": "a_seg.nii.gz"}, "b.nii.gz"]))
    entries = load_datalist(tmp_path / "list.json")
    assert entries[0]["image"] == tmp_path / "a.nii.gz"
    assert entries[0]["label"] == tmp_path / "a_seg.nii.gz"
    assert entries[1] == {"image": tmp_path / "b.nii.gz"}

    (tmp_path / "d.json").write_text(
        json.dumps(
            {
                "training": [{"image": "imgs/x.nii.gz", "label": "labs/x.nii.gz"}],
                "validation": [{"image": "imgs/y.nii.gz"}],
                "name": "demo",
            }
        )
    )
    entries = load_datalist(tmp_path / "d.json")
    assert [e["split"] for e in entries] == ["training", "validation"]
    assert load_datalist(tmp_path / "d.json", split="validation")[0]["image"] == (tmp_path / "imgs" / "y.nii.gz")

    (tmp_path / "l.csv").write_text("image,label\nimgs/x.png,labs/x.png\nimgs/y.png,\n")
    rows = load_datalist(tmp_path / "l.csv")
    assert rows[0]["label"] == tmp_path / "labs" / "x.png" and "label" not in rows[1]

    (tmp_path / "bad.csv").write_text("path\nx.png\n")
    with pytest.raises(DataError, match="'image' column"):
        load_datalist(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: invalid JSON"):
        load_datalist(tmp_path / "bad.json")


def test_store_skips_bad_files_and_warns_once(folder):
    (folder / "broken.png").write_text("text, not pixels")
    (folder / "empty.nii.gz").write_bytes(b"")
    paths = find_images(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = CachedVolumeStore(paths, None, on_bad_file="skip")
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(messages) == 1 and "broken.png" in messages[0] and "empty.nii.gz" in messages[0]
    assert {p.name for p, _ in store.skipped} == {"broken.png", "empty.nii.gz"}
    assert len(store) == 5
    presets = {m["path"].split("/")[-1]: m["preset"] for m in store.meta}
    assert presets["IM0001"].startswith("ct") and presets["c.png"] == "minmax"
    for i in range(len(store)):
        assert store[i].dtype == np.float32
        assert store.meta[i]["shape"] == list(store[i].shape)
    with pytest.raises(DataError, match="broken.png"):
        CachedVolumeStore(paths, "minmax", on_bad_file="error")


def test_store_empty_raises_with_root(tmp_path):
    (tmp_path / "a.png").write_text("nope")
    with pytest.raises(DataError, match="no readable images") as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            CachedVolumeStore([tmp_path / "a.png"], "minmax", root=tmp_path)
    assert str(info.value).startswith(str(tmp_path))


def test_store_resamples_to_spacing(tmp_path, make_nifti):
    path = make_nifti(tmp_path / "v.nii.gz", _volume((8, 8, 8)), np.diag([1.0, 1.0, 3.0, 1.0]))
    store = CachedVolumeStore([path], "minmax", spacing=(2.0, 2.0, 1.5))
    assert store[0].shape == (1, 4, 4, 16)
    assert store.meta[0]["spacing"] == [2.0, 2.0, 1.5]
    assert store.meta[0]["source_spacing"] == [1.0, 1.0, 3.0]
    with pytest.raises(ConfigError):
        CachedVolumeStore([path], "minmax", spacing=(0, 1, 1))


def test_store_disk_cache_is_reused(tmp_path, make_nifti, monkeypatch):
    path = make_nifti(tmp_path / "v.nii.gz", _volume())
    cache = tmp_path / "cache"
    first = CachedVolumeStore([path], "mri", cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("file decoded again")

    monkeypatch.setattr(store_module, "read_source", fail)
    second = CachedVolumeStore([path], "mri", cache_dir=cache)
    np.testing.assert_array_equal(first[0], second[0])
    assert second.meta[0]["preset"] == "mri:0.5,99.5"
    monkeypatch.undo()
    CachedVolumeStore([path], "minmax", cache_dir=cache)  # other preset: new entry
    assert len(list(cache.glob("*.npy"))) == 2


def test_slices2d_contract(folder):
    store = CachedVolumeStore(find_images(folder), None)
    dataset = Slices2DDataset(store, (24, 20), axis=2)
    assert len(dataset) == 5
    state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    for index in range(len(dataset)):
        a = dataset[(index, 7)]
        assert a.shape == (1, 24, 20) and a.dtype == torch.float32
        assert torch.equal(a, dataset[(index, 7)])
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_slices2d_skips_empty_slices(tmp_path, make_nifti):
    data = np.zeros((6, 6, 40), np.float32)
    data[:, :, 30:34] = 1.0 + np.arange(4)  # only 4 of 40 axial slices hold anything
    store = CachedVolumeStore([make_nifti(tmp_path / "v.nii.gz", data)], "minmax")
    dataset = Slices2DDataset(store, (8, 8), axis=2)
    for seed in range(30):
        assert dataset[(0, seed)].max() > 0


def test_tiny_image_refused_in_2d(tmp_path):
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    with pytest.raises(DataError) as info:
        build_pretrain_dataset(
            str(tmp_path),
            dim=2,
            source_size=(24, 24),
            preset="minmax",
            spacing=None,
            cache_dir=None,
            on_bad_file="error",
        )
    assert "dot.png" in str(info.value) and "too small" in str(info.value)
    with pytest.raises(DataError, match="no usable images"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_pretrain_dataset(
            str(tmp_path),
            dim=2,
            source_size=(24, 24),
            preset="minmax",
            spacing=None,
            cache_dir=None,
            on_bad_file="skip",
        )


def test_patches3d_contract_padding_and_foreground(tmp_path, make_nifti):
    paths = [
        make_nifti(tmp_path / "big.nii.gz", _volume((20, 20, 20))),
        make_nifti(tmp_path / "small.nii.gz", _volume((12, 14, 10))),
    ]
    store = CachedVolumeStore(paths, "minmax")
    dataset = Patches3DDataset(store, (16, 16, 16), foreground_prob=1.0)
    assert len(dataset) == 2
    for index in range(2):
        for seed in range(10):
            patch = dataset[(index, seed)]
            assert patch.shape == (1, 16, 16, 16) and patch.dtype == torch.float32
            assert torch.equal(patch, dataset[(index, seed)])
            assert patch.max() > 0.5  # foreground inside every patch
    assert not torch.equal(dataset[(0, 1)], dataset[(0, 2)])
    with pytest.raises(DataError, match="small.nii.gz.*smaller than the 16x16x16 patch"):
        Patches3DDataset(CachedVolumeStore(paths, "minmax", on_bad_file="error"), 16, pad=False)


def test_patches3d_refuses_2d_images(tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(DataError, match="x.png.*2D image"):
        build_pretrain_dataset(
            str(tmp_path),
            dim=3,
            source_size=(8, 8, 8),
            preset=None,
            spacing=None,
            cache_dir=None,
            on_bad_file="error",
        )


def test_build_pretrain_dataset_from_folder_and_datalist(folder, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset, meta = build_pretrain_dataset(
            str(folder),
            dim=3,
            source_size=(8, 8, 8),
            preset=None,
            spacing=None,
            cache_dir=str(tmp_path / "cache"),
            on_bad_file="skip",
        )
    assert len(dataset) == meta["num_files"] == 3  # 3 volumes; the png and 2D dicom skipped
    assert sum("skipped 2 unusable" in str(w.message) for w in caught) == 1
    assert dataset[(2, 0)].shape == (1, 8, 8, 8)
    json.dumps(meta)
    assert meta["channels"] == 1 and meta["orientation"] == ["RAS"]
    assert {p.split("/")[-1] for p, _ in meta["skipped"]} == {"c.png", "IM0001"}
    assert sum(meta["presets"].values()) == 3

    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"training": [{"image": "data/a.nii.gz"}], "validation": [{"image": "data/c.png"}]}))
    dataset, meta = build_pretrain_dataset(
        str(listing),
        dim=2,
        source_size=(16, 16),
        preset="minmax",
        spacing=None,
        cache_dir=None,
        on_bad_file="error",
        slice_axis=1,
    )
    assert len(dataset) == 2 and meta["presets"] == {"minmax": 2}
    assert dataset[(0, 3)].shape == (1, 16, 16)
    with pytest.raises(ConfigError, match="dim"):
        build_pretrain_dataset(
            str(folder),
            dim=4,
            source_size=(8,),
            preset=None,
            spacing=None,
            cache_dir=None,
            on_bad_file="skip",
        )
    with pytest.raises(DataError, match="no readable images"):
        (tmp_path / "void").mkdir()
        build_pretrain_dataset(
            str(tmp_path / "void"),
            dim=2,
            source_size=(8, 8),
            preset=None,
            spacing=None,
            cache_dir=None,
            on_bad_file="skip",
        )


def test_pretrain_metadata_records_the_preset_used_and_one_spacing_per_axis(tmp_path, make_nifti):
    ct = np.full((10, 12, 6), -1024.0, np.float32)
    ct[2:8, 3:9, 1:5] = 40.0
    ct[4:6, 5:7, 2:4] = 1500.0
    make_nifti(tmp_path / "same" / "a.nii.gz", ct, np.diag([0.8, 0.8, 2.0, 1.0]))
    make_nifti(tmp_path / "same" / "b.nii.gz", ct + 1.0, np.diag([0.8, 0.8, 2.0, 1.0]))
    options = {"dim": 3, "source_size": (8, 8, 4), "spacing": None, "cache_dir": None, "on_bad_file": "error"}
    _, meta = build_pretrain_dataset(str(tmp_path / "same"), preset=None, **options)
    assert meta["preset"] == "ct:-1000,1000" and meta["presets"] == {"ct:-1000,1000": 2}
    assert meta["preset_note"].startswith("intensity preset chosen per file (no --intensity): ct:-1000,1000 for 2")
    assert "values -1024..1500 look like CT in HU" in meta["preset_note"]
    assert meta["spacing"] == pytest.approx([0.8, 0.8, 2.0])
    assert meta["spacing_note"] == "all 2 file(s) have this spacing (not resampled)"

    make_nifti(tmp_path / "mixed" / "a.nii.gz", ct, np.diag([0.8, 0.8, 2.0, 1.0]))
    make_nifti(tmp_path / "mixed" / "b.nii.gz", _volume((10, 12, 6)), np.diag([1.0, 0.7, 3.0, 1.0]))
    _, meta = build_pretrain_dataset(str(tmp_path / "mixed"), preset=None, **options)
    assert meta["preset"] == "per-file" and meta["presets"] == {"ct:-1000,1000": 1, "minmax": 1}
    assert meta["spacing"] is None
    assert meta["spacing_note"] == (
        "per case: the 2 files have 2 different spacings (from [0.8, 0.7, 2.0] to [1.0, 0.8, 3.0] mm per axis) "
        "and were not resampled; pass --spacing to resample them to one"
    )
    _, meta = build_pretrain_dataset(str(tmp_path / "mixed"), preset="ct:-175,250", **options)
    assert meta["preset"] == "ct:-175,250"
    assert meta["preset_note"] == "intensity preset ct:-175,250 (given) for 2 file(s)"


def test_slices2d_takes_the_thin_axis_of_a_one_slice_volume(tmp_path, make_nifti):
    plane = np.arange(30 * 20, dtype=np.float32).reshape(30, 20)
    make_nifti(tmp_path / "d" / "sagittal.nii.gz", plane[None], np.eye(4))  # (1, 30, 20): thin axis 0
    store = CachedVolumeStore([tmp_path / "d" / "sagittal.nii.gz"], "none")
    dataset = Slices2DDataset(store, (30, 20), axis=2, min_foreground=0.0)
    np.testing.assert_array_equal(dataset[(0, 5)].numpy()[0], plane)


def test_plain_images_say_they_have_no_physical_spacing(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray((np.arange(400).reshape(20, 20) % 256).astype(np.uint8)).save(tmp_path / name)
    options = {"dim": 2, "source_size": (16, 16), "spacing": None, "cache_dir": None, "on_bad_file": "error"}
    _, meta = build_pretrain_dataset(str(tmp_path), preset=None, **options)
    assert meta["spacing"] == [1.0, 1.0]
    assert meta["spacing_note"] == "plain images without a physical spacing (1 per pixel)"
    assert meta["preset"] == "minmax"
