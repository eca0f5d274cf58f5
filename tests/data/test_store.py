"""The decoded-image store: lazy reads through a shared disk cache, equal batches, concurrent builds."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cover.data import store as store_module
from cover.data.channels import read_source
from cover.data.datasets import build_pretrain_dataset, foreground_points
from cover.data.index import header_info
from cover.data.presets import choose_preset, normalize, parse_preset
from cover.data.store import ArrayLRU, CachedVolumeStore, resolve_cache_dir
from cover.engine.sampler import StepBatchSampler
from cover.errors import DataError

SIZE2D, SIZE3D = (24, 20), (10, 12, 8)


def _volume(shape, seed):
    """A noisy bright box at a seed-dependent place in a dark, noisy background."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 5, shape).astype(np.float32)
    start = [int(rng.integers(1, s // 3)) for s in shape]
    box = tuple(slice(a, a + s // 2) for a, s in zip(start, shape, strict=True))
    data[box] += 200 + rng.normal(0, 20, [s // 2 for s in shape])
    return data


def _mixed_folder(root: Path, make_nifti, pngs: int = 4, volumes: int = 3) -> Path:
    """2D PNGs (two sizes) and 3D NIfTI volumes (one LPS-oriented, one anisotropic)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for k in range(pngs):
        size = (30, 26) if k % 2 else (33, 40)
        Image.fromarray(rng.integers(0, 256, size).astype(np.uint8)).save(root / f"p{k}.png")
    affines = [np.eye(4), np.diag([-1.0, -1.0, 1.0, 1.0]), np.diag([1.0, 1.5, 2.0, 1.0])]
    for k in range(volumes):
        make_nifti(root / f"v{k}.nii.gz", _volume((14 + k, 16, 12), k), affines[k % 3])
    return root


# ------------------------------------------------------------------ the eager oracle (the path before the cache)


def _eager_arrays(paths):
    """Every image decoded and normalised up front, preset chosen per file (the old store, without a cache)."""
    out = []
    for path in paths:
        record = read_source(path)
        out.append(normalize(record.array, parse_preset(choose_preset(record)[0])))
    return out


def _mask(array):
    strongest = array.max(axis=0)
    low, high = strongest.min(), strongest.max()
    return strongest > low + 0.1 * (high - low)


def _eager_2d_item(array, seed):
    """The old Slices2DDataset item: a random foreground slice of a volume (axis 2), resized to SIZE2D."""
    if array.ndim == 4:
        mask = _mask(array)
        good = np.flatnonzero(mask.mean(axis=(0, 1)) >= 0.05)
        k = int(good[np.random.default_rng(seed).integers(len(good))])
        array = array[:, :, :, k]
    tensor = torch.from_numpy(np.array(array, dtype=np.float32))[None]
    return F.interpolate(tensor, size=SIZE2D, mode="bilinear", align_corners=False, antialias=True)[0]


def _eager_3d_item(array, points, seed):
    """The old Patches3DDataset item: a patch centred (with jitter) on a foreground point w.p. 0.7."""
    rng = np.random.default_rng(seed)
    shape = array.shape[1:]
    low = [min(0, s - w) for s, w in zip(shape, SIZE3D, strict=True)]
    high = [max(0, s - w) for s, w in zip(shape, SIZE3D, strict=True)]
    if len(points) and rng.random() < 0.7:
        centre = points[rng.integers(len(points))]
        start = []
        for c, w, lo, hi in zip(centre, SIZE3D, low, high, strict=True):
            jitter = int(rng.integers(-(w // 4), w // 4 + 1))
            start.append(int(np.clip(int(c) - w // 2 + jitter, lo, hi)))
    else:
        start = [int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high, strict=True)]
    out = np.zeros((array.shape[0], *SIZE3D), np.float32)
    src = tuple(slice(max(s, 0), min(s + w, n)) for s, w, n in zip(start, SIZE3D, shape, strict=True))
    dst = tuple(slice(max(s, 0) - s, min(s + w, n) - s) for s, w, n in zip(start, SIZE3D, shape, strict=True))
    out[(slice(None), *dst)] = array[(slice(None), *src)]
    return torch.from_numpy(out)


def _batches(dataset, steps=3, batch=4, workers=0):
    sampler = StepBatchSampler(0, batch, len(dataset), 0, steps)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
    return [b.clone() for b in loader], [keys for keys in sampler]


def _build(folder, dim, cache):
    size = SIZE2D if dim == 2 else SIZE3D
    options = {"preset": None, "spacing": None, "on_bad_file": "skip", "slice_axis": 2}
    return build_pretrain_dataset(str(folder), dim=dim, source_size=size, cache_dir=cache, **options)[0]


@pytest.mark.filterwarnings("ignore:skipped 4 unusable file")  # the PNGs, in 3D
@pytest.mark.parametrize("dim", [2, 3])
def test_batches_equal_the_eager_path_cold_warm_and_in_memory(tmp_path, make_nifti, dim):
    folder = _mixed_folder(tmp_path / "data", make_nifti)
    paths = sorted(folder.iterdir())
    if dim == 3:
        paths = [p for p in paths if p.suffix == ".gz"]  # 2D images are refused in 3D
    arrays = _eager_arrays(paths)
    cache = tmp_path / "cache"
    runs = {
        "memory": _batches(_build(folder, dim, None)),
        "cold": _batches(_build(folder, dim, str(cache))),
        "warm": _batches(_build(folder, dim, str(cache))),
        "warm, 2 workers": _batches(_build(folder, dim, str(cache)), workers=2),
    }
    for name, (batches, keys) in runs.items():
        for batch, step_keys in zip(batches, keys, strict=True):
            if dim == 2:
                expected = torch.stack([_eager_2d_item(arrays[i], s) for i, s in step_keys])
            else:  # under 20,000 foreground voxels per volume: every one kept, as before
                expected = torch.stack(
                    [_eager_3d_item(arrays[i], np.argwhere(_mask(arrays[i])), s) for i, s in step_keys]
                )
            torch.testing.assert_close(batch, expected, rtol=0, atol=0, msg=name)
    assert len(list(cache.glob("*.json"))) == 7  # the 2D images too (then refused in 3D)
    assert len(list(cache.glob("*.*.npy"))) == 7  # one summary per image: slices or points
    assert not list(cache.glob("*.tmp"))


def test_foreground_points_subset_depends_on_the_volume_alone():
    volume = np.zeros((1, 40, 40, 40), np.float32)
    volume[0, 5:35, 5:35, 5:35] = 1.0  # 27,000 foreground voxels
    points = foreground_points(volume, 0.1, 1000)
    everything = np.argwhere(volume[0] > 0.1)
    expected = everything[np.random.default_rng(0).choice(len(everything), 1000, replace=False)]
    np.testing.assert_array_equal(points, expected.astype(np.int32))
    assert points.dtype == np.int32 and points.shape == (1000, 3)


def test_warm_cache_decodes_nothing_and_says_where(tmp_path, make_nifti, monkeypatch):
    folder = _mixed_folder(tmp_path / "data", make_nifti)
    cold = CachedVolumeStore(sorted(folder.iterdir()), "minmax", cache_dir=tmp_path / "cache")
    assert cold.decoded == 7
    monkeypatch.setattr(store_module, "read_source", lambda *a, **k: pytest.fail("decoded again"))
    warm = CachedVolumeStore(sorted(folder.iterdir()), "minmax", cache_dir=tmp_path / "cache")
    assert warm.decoded == 0
    assert isinstance(warm[0], np.memmap)
    gb = sum(4 * int(np.prod(m["shape"])) for m in cold.meta) / 1e9
    assert warm.note() == (
        f"data cache: 7 image(s), {gb:.2f} GB in {tmp_path / 'cache'} (0 decoded now, 7 reused); "
        "at most 4.3 GB of arrays held per process"
    )


def test_decoding_pool_gives_the_same_cache_as_one_process(tmp_path, make_nifti, monkeypatch):
    folder = _mixed_folder(tmp_path / "data", make_nifti, pngs=6, volumes=2)
    paths = sorted(folder.iterdir())
    monkeypatch.setattr(store_module, "decoder_count", lambda jobs, world=1: 1)
    one = CachedVolumeStore(paths, None, cache_dir=tmp_path / "one")
    monkeypatch.setattr(store_module, "decoder_count", lambda jobs, world=1: 2)
    pool = CachedVolumeStore(paths, None, cache_dir=tmp_path / "pool")
    assert one.meta == pool.meta
    for name in sorted(p.name for p in (tmp_path / "one").iterdir()):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "pool" / name).read_bytes(), name


def test_memory_budget_bounds_what_is_held(tmp_path, make_nifti):
    folder = _mixed_folder(tmp_path / "data", make_nifti)
    paths = sorted(folder.iterdir())
    biggest = max(4 * np.prod(read_source(p).array.shape) for p in paths)
    budget_mb = 2.5 * biggest / 2**20
    for cache in (None, tmp_path / "cache"):
        store = CachedVolumeStore(paths, "minmax", cache_dir=cache, memory_mb=budget_mb)
        for _ in range(2):
            for i, expected in enumerate(_eager_arrays_minmax(paths)):
                np.testing.assert_array_equal(store[i], expected)
                assert store._lru.bytes <= budget_mb * 2**20
        assert store._lru.misses > len(paths)  # evicted arrays were loaded again


def _eager_arrays_minmax(paths):
    return [normalize(read_source(p).array, "minmax") for p in paths]


def test_lru_drops_the_least_recently_used():
    loads = []
    lru = ArrayLRU(lambda i: loads.append(i) or np.zeros(10, np.float32), budget=100)  # 2 arrays of 40 bytes
    for i in (0, 1, 0, 2, 1, 0):
        lru.get(i)
    assert loads == [0, 1, 2, 1, 0]  # 0 was used after 1, so 2 evicted 1; then 1 evicted 0
    assert lru.bytes == 80


def test_cache_dir_auto_none_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COVER_CACHE_DIR", str(tmp_path / "c"))
    assert resolve_cache_dir("auto") == tmp_path / "c"
    monkeypatch.delenv("COVER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert resolve_cache_dir("auto") == tmp_path / "x" / "cover" / "arrays"
    assert resolve_cache_dir("none") is None and resolve_cache_dir(None) is None
    assert resolve_cache_dir(str(tmp_path / "d")) == tmp_path / "d"


def test_cache_refused_when_the_disk_is_too_small(tmp_path, make_nifti, monkeypatch):
    path = make_nifti(tmp_path / "v.nii.gz", _volume((14, 16, 12), 0))
    usage = store_module.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(DataError, match=r"needs about 0.0 GB but the disk has 0.0 GB free; pass another --cache-dir"):
        CachedVolumeStore([path], "minmax", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())


def test_header_index_matches_the_decoded_shape(tmp_path, make_nifti):
    import SimpleITK as sitk  # noqa: N813

    rng = np.random.default_rng(0)
    lps = np.array([[0, 0, -2.0, 0], [-1.0, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])  # permuted, flipped axes
    files = [make_nifti(tmp_path / "a.nii.gz", rng.normal(size=(5, 7, 9)).astype(np.float32), lps)]
    Image.fromarray(rng.integers(0, 255, (11, 13, 3)).astype(np.uint8)).save(tmp_path / "rgb.png")
    files.append(tmp_path / "rgb.png")
    image = sitk.GetImageFromArray(rng.normal(size=(4, 6, 8)).astype(np.float32))
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    sitk.WriteImage(image, str(tmp_path / "b.nrrd"))
    files.append(tmp_path / "b.nrrd")
    for path in files:
        for channels in (True,) if path.suffix == ".png" else (False, True):  # colour needs channels
            info = header_info(path, channels=channels)
            record = read_source(path, channels=channels)
            assert info.shape == record.array.shape, path
            np.testing.assert_allclose(info.spacing, record.spacing, err_msg=str(path))
    assert header_info(files[0]).dtype == "float32" and header_info(files[0]).orientation == "PSL"
    assert header_info(tmp_path / "missing.nii.gz") is None
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))  # claims 64 billion voxels: the decoder's to refuse, not an estimate
    (tmp_path / "huge.nii").write_bytes(header.binaryblock + bytes(100))
    assert header_info(tmp_path / "huge.nii") is None


# ---------------------------------------------------------------------------- two processes, one cold cache


def _build_after(go, folder: Path, cache: Path, rank: int, results) -> None:
    """One of two processes building the same cache: waits for ``go``, then reports (images, decoded) or the error."""
    go.wait()
    try:
        store = CachedVolumeStore(sorted(folder.iterdir()), "minmax", cache_dir=cache, share=(rank, 2))
        results.put((rank, len(store), store.decoded))
    except BaseException as exc:  # reported to the test, which fails with it
        results.put((rank, repr(exc), -1))


def build_concurrently(folder: Path, cache: Path, target=_build_after) -> list[tuple[int, object, object]]:
    """Two forked processes running ``target`` on the same cold cache, released at the same moment; their reports."""
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    procs = [context.Process(target=target, args=(go, folder, cache, rank, results)) for rank in range(2)]
    for proc in procs:
        proc.start()
    go.set()
    reports = sorted(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return reports


def test_two_processes_build_one_cold_cache(tmp_path, make_nifti, monkeypatch):
    monkeypatch.setattr(store_module, "START_SAMPLE", 100)  # the build at start (lazy decoding: tests below)
    folder = _mixed_folder(tmp_path / "data", make_nifti, pngs=16, volumes=3)
    reference = CachedVolumeStore(sorted(folder.iterdir()), "minmax", cache_dir=tmp_path / "reference")
    expected = {p.name: p.read_bytes() for p in (tmp_path / "reference").iterdir()}
    for trial in range(2):
        cache = tmp_path / f"cache{trial}"
        reports = build_concurrently(folder, cache)
        assert [r[1] for r in reports] == [19, 19], reports
        assert sum(r[2] for r in reports) >= 19  # every image decoded at least once, by one or both
        assert {p.name: p.read_bytes() for p in cache.iterdir()} == expected
        assert json.loads(next(cache.glob("*.json")).read_text())["preset"] == "minmax"
    assert len(reference) == 19


# ------------------------------------------------------------------------------------------ lazy decoding


@pytest.mark.filterwarnings("ignore:skipped 4 unusable file")  # the PNGs, in 3D
@pytest.mark.parametrize("dim", [2, 3])
def test_lazy_batches_equal_the_eager_path_in_every_cache_state(tmp_path, make_nifti, monkeypatch, dim):
    """Two images decoded at start, the others when drawn: the same batches as decoding all up front."""
    monkeypatch.setattr(store_module, "START_SAMPLE", 2)
    folder = _mixed_folder(tmp_path / "data", make_nifti)
    paths = sorted(folder.iterdir())
    if dim == 3:
        paths = [p for p in paths if p.suffix == ".gz"]
    arrays = _eager_arrays(paths)
    built = _build(folder, dim, str(tmp_path / "cold0"))
    assert built.store.decoded == 2 and 0 < sum(built.store.lazy) < len(built)  # (in 3D the sampled PNG is refused)
    runs = {
        "memory": _batches(_build(folder, dim, None)),
        "cold": _batches(built),
        "cold, 2 workers": _batches(_build(folder, dim, str(tmp_path / "cold2")), workers=2),
        "warm (filled by 2 workers)": _batches(_build(folder, dim, str(tmp_path / "cold2"))),
    }
    for name, (batches, keys) in runs.items():
        for batch, step_keys in zip(batches, keys, strict=True):
            if dim == 2:
                expected = torch.stack([_eager_2d_item(arrays[i], s) for i, s in step_keys])
            else:
                expected = torch.stack(
                    [_eager_3d_item(arrays[i], np.argwhere(_mask(arrays[i])), s) for i, s in step_keys]
                )
            torch.testing.assert_close(batch, expected, rtol=0, atol=0, msg=name)
    assert not list((tmp_path / "cold2").glob("*.tmp"))


def test_images_decoded_before_the_first_step_do_not_grow_with_the_data_set(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "START_SAMPLE", 4)
    rng = np.random.default_rng(3)
    counts = {}
    for n in (10, 40):
        folder = tmp_path / f"n{n}"
        folder.mkdir()
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (30 + k % 5, 28)).astype(np.uint8)).save(folder / f"i{k:03d}.png")
        cache = tmp_path / f"cache{n}"
        dataset = _build(folder, 2, str(cache))
        first = next(iter(StepBatchSampler(0, 2, len(dataset), 0, 1)))
        for key in first:
            dataset[key]
        entries = [p for p in cache.glob("*.json") if not p.name.startswith("index-")]  # and one header index
        counts[n] = (dataset.store.decoded, dataset.store.lazy_decoded, len(entries))
        assert len(dataset) == n and sum(dataset.store.lazy) == n - 4
        assert "4 decoded now, 0 reused, " in dataset.store.note() and f"{n - 4} decoded when first drawn" in (
            dataset.store.note()
        )

    def no_header(*_args, **_kwargs):
        raise AssertionError("headers read again")

    monkeypatch.setattr(store_module, "header_info", no_header)
    warm = _build(tmp_path / "n40", 2, str(tmp_path / "cache40"))  # the index comes from the cache
    assert [warm.store.shape(i) for i in range(40)] == [dataset.store.shape(i) for i in range(40)]
    drawn = counts[40][1]
    assert warm.store.decoded == 0 and f"{4 + drawn} reused, {36 - drawn} decoded when first drawn" in warm.store.note()
    assert counts[10][0] == counts[40][0] == 4  # the start-up sample
    assert all(lazy <= 2 and files == 4 + lazy for _, lazy, files in counts.values()), counts  # then the batch's
    assert counts[10][1] + counts[40][1] > 0  # some drawn image was not in the sample


def test_header_metadata_equals_what_decoding_gives(tmp_path, make_nifti):
    """Lazy images are validated and described from their headers: the same shapes and spacings as decoded."""
    import SimpleITK as sitk  # noqa: N813

    from cover.data.store import decode, header_meta

    folder = _mixed_folder(tmp_path / "data", make_nifti)
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(6, 9, 7)).astype(np.float32))
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    image.SetMetaData("Modality", "MET_MOD_CT")
    sitk.WriteImage(image, str(folder / "c.mha"))
    keys = ("format", "modality", "orientation", "source_spacing", "spacing", "source_shape", "shape", "spatial_dims")
    for path in sorted(folder.iterdir()):
        info = header_info(path)
        for spacing in (None, (1.3, 0.9, 1.7) if info.shape[1:].__len__() == 3 else (0.7, 1.6)):
            expected = decode(path, None, spacing, False)[1]
            got = header_meta(path, info, None, spacing)
            assert {k: got[k] for k in keys} == pytest.approx({k: expected[k] for k in keys}), (path, spacing)
    with pytest.raises(DataError, match=r"p0.png: is 2D but the target spacing \(1.0, 1.0, 1.0\) has 3 values"):
        header_meta(folder / "p0.png", header_info(folder / "p0.png"), None, (1.0, 1.0, 1.0))


def _draw_all(go, folder: Path, cache: Path, rank: int, results) -> None:
    """One of two processes drawing every image of a lazily indexed folder from the same cold cache."""
    go.wait()
    try:
        dataset = _build(folder, 2, str(cache))
        items = [dataset[(i, 100 + i)].numpy().tobytes() for i in range(len(dataset))]
        results.put((rank, len(dataset), items))
    except BaseException as exc:  # reported, not raised: the parent asserts
        results.put((rank, repr(exc), []))


def test_two_processes_decoding_lazily_on_one_cold_cache_agree(tmp_path, make_nifti, monkeypatch):
    monkeypatch.setattr(store_module, "START_SAMPLE", 2)  # forked processes inherit it
    folder = _mixed_folder(tmp_path / "data", make_nifti, pngs=8, volumes=3)
    reference = _build(folder, 2, str(tmp_path / "reference"))
    expected = [reference[(i, 100 + i)].numpy().tobytes() for i in range(len(reference))]
    files = {p.name: p.read_bytes() for p in (tmp_path / "reference").iterdir()}
    cache = tmp_path / "shared"
    reports = build_concurrently(folder, cache, _draw_all)
    assert [r[1] for r in reports] == [11, 11], reports
    assert reports[0][2] == reports[1][2] == expected
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == files  # every entry whole, no temporary left


def _truncated_png(path: Path, seed: int) -> None:
    """A PNG whose header reads but whose pixels do not (so only decoding finds the problem)."""
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (30, 28)).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_an_image_failing_when_drawn_is_replaced_by_the_next_everywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "START_SAMPLE", 2)
    folder = tmp_path / "data"
    folder.mkdir()
    for k in range(6):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (30, 28)).astype(np.uint8)).save(folder / f"i{k}.png")
    _truncated_png(folder / "i2.png", 2)  # not in the start sample (images 0 and 5)
    cache = tmp_path / "cache"
    dataset = _build(folder, 2, str(cache))
    assert len(dataset) == 6
    with pytest.warns(UserWarning, match=r"i2.png: truncated or corrupt PNG.*the next usable image instead"):
        replaced = dataset[(2, 7)]
    torch.testing.assert_close(replaced, dataset[(3, 7)], rtol=0, atol=0)
    assert list(dataset.store.failed) == [2] and len(list(cache.glob("*.error"))) == 1
    again = _build(folder, 2, str(cache))  # a later run (or another process): the same substitute, no new decode
    with pytest.warns(UserWarning, match="i2.png"):
        torch.testing.assert_close(again[(2, 7)], replaced, rtol=0, atol=0)
    assert again.store.lazy_decoded == 0  # image 3 from the cache, image 2 known bad from its .error entry

    options = {"preset": None, "spacing": None, "on_bad_file": "error", "slice_axis": 2}
    strict = build_pretrain_dataset(str(folder), dim=2, source_size=SIZE2D, cache_dir=None, **options)[0]
    loader = torch.utils.data.DataLoader(strict, batch_sampler=[[(2, 7)]], num_workers=1)
    with pytest.raises(DataError) as raised:  # from a worker: still one line naming the file
        next(iter(loader))
    assert str(raised.value).startswith(str(folder / "i2.png")) and "\n" not in str(raised.value)


def test_a_second_process_waits_for_the_first_ones_header_index(tmp_path, monkeypatch):
    """Rank 1 reads rank 0's header index instead of every header; alone, it reads them after its wait."""
    import threading

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for k in range(30):
        Image.fromarray(rng.integers(0, 256, (30 + k % 7, 28)).astype(np.uint8)).save(folder / f"i{k:02d}.png")
    paths = sorted(folder.iterdir())
    reads = []  # every process that reads the headers for the index
    real = CachedVolumeStore._read_headers
    monkeypatch.setattr(CachedVolumeStore, "_read_headers", lambda self, *a: reads.append(1) or real(self, *a))
    monkeypatch.setattr(store_module, "INDEX_WAIT", (60.0, 0.0))
    second = {}

    def rank_one() -> None:
        second["store"] = CachedVolumeStore(paths, "minmax", cache_dir=tmp_path / "cache", share=(1, 2))

    waiting = threading.Thread(target=rank_one)
    waiting.start()  # starts first: finds no index and waits for it
    waiting.join(timeout=1.0)
    assert waiting.is_alive() and not reads
    first = CachedVolumeStore(paths, "minmax", cache_dir=tmp_path / "cache", share=(0, 2))
    waiting.join(timeout=60)
    assert len(reads) == 1  # rank 0's only
    assert [second["store"].shape(i) for i in range(30)] == [first.shape(i) for i in range(30)]
    assert [first.shape(i)[1] for i in range(7)] == [30, 31, 32, 33, 34, 35, 36]

    reads.clear()
    monkeypatch.setattr(store_module, "INDEX_WAIT", (0.2, 0.0))
    alone = CachedVolumeStore(paths, "minmax", cache_dir=tmp_path / "other", share=(1, 2))  # no rank 0: reads itself
    assert len(reads) == 1 and [alone.shape(i) for i in range(30)] == [first.shape(i) for i in range(30)]
