"""Hostile inputs through the command line: bad files, bad configs, bad options.

Every case must exit with status 2 and exactly one ``error: ...`` line on stderr naming the
problem, without a traceback, and must leave the output folder of an earlier run untouched
(its files, sizes and modification times are hashed before and after). Most cases call
``cover.cli.console.main`` in this process (same code path as the console script, a traceback would
fail the test); three run the real ``python -m cover`` in a subprocess, among them a folder
of every bad file plus a colour, a grey-as-RGB and a 16-bit PNG, which must train with the bad
files and the colour one skipped and listed in one warning line (``--on-bad-file skip``, the
default). Fine-tuning cases check label maps (palette indices kept; fractional, colour and
off-grid labels refused naming both files) and that nothing in ``--out`` is created or changed
before the data is validated; pretraining cases check what a folder's non-images, vector
images, CT without a modality header, mixed spacings and top-level YAML network options give.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import yaml
from PIL import Image
from pydicom.data import get_testdata_file

from _support.cli import run_cli
from cover.engine.checkpoint import list_checkpoints, load_checkpoint

TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}
TINY = {"model": TINY_MODEL, "log_every": 1, "eval_pairs": 2, "warmup_steps": 1}


# ------------------------------------------------------------------------------- bad files


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))
    return path


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def make_bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Every bad file: name -> (path, words the error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {}

    path = _nifti(folder / "truncated.nii.gz", rng.normal(size=(20, 20, 20)).astype(np.float32))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    files["truncated nii.gz"] = (path, "corrupt")

    (folder / "empty.nii.gz").write_bytes(b"")
    files["zero-byte file"] = (folder / "empty.nii.gz", "empty (0 bytes)")

    (folder / "notes.png").write_text("this is not an image\n")
    files["text named .png"] = (folder / "notes.png", "not a valid PNG")

    files["1x1 image"] = (_png(folder / "dot.png", np.full((1, 1), 200, np.uint8)), "too small")

    files["4D NIfTI"] = (_nifti(folder / "fmri.nii.gz", np.zeros((4, 4, 4, 3), np.float32)), "4D")

    files["NaN NIfTI"] = (_nifti(folder / "nan.nii.gz", np.full((8, 8, 8), np.nan, np.float32)), "NaN")

    path = _nifti(folder / "huge.nii", np.zeros((2, 2, 2), np.float32))
    blob = bytearray(path.read_bytes())
    struct.pack_into("<8h", blob, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim[0..7]
    path.write_bytes(bytes(blob))
    files["NIfTI header claiming a huge size"] = (path, "header claims")

    path = _png(folder / "bomb.png", np.zeros((2, 2), np.uint8))
    blob = bytearray(path.read_bytes())
    struct.pack_into(">II", blob, 16, 100_000, 100_000)  # IHDR width and height
    struct.pack_into(">I", blob, 29, zlib.crc32(bytes(blob[12:29])))  # with a valid CRC
    path.write_bytes(bytes(blob))
    files["PNG header claiming a huge size"] = (path, "absurd image size")

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del dataset.PixelData
    dataset.save_as(folder / "nopixels.dcm")
    files["DICOM without pixel data"] = (folder / "nopixels.dcm", "no pixel data")

    (folder / "scan.xyz").write_text("hello")
    files["unsupported file type"] = (folder / "scan.xyz", "unsupported file type")
    return files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return make_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """The output folder of an earlier, finished run (2 steps, a checkpoint per step)."""
    import cover.engine.curves as curves
    import cover.pretraining.figures as figures
    from cover.pretraining.pretrain import pretrain

    out = tmp_path_factory.mktemp("earlier") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "plot_flow", lambda *a, **k: None)  # states matter here, not pictures
        patch.setattr(curves, "plot_losses", lambda *a, **k: None)
        pretrain(out=str(out), dim=2, size=32, batch_size=2, steps=2, checkpoint_every=1, device="cpu", **TINY)
    torch.set_num_threads(threads)
    assert len(list_checkpoints(out)) == 2 and (out / "summary.json").is_file()
    return out


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------- the cases

DATA_CASES = [
    "truncated nii.gz",
    "zero-byte file",
    "text named .png",
    "1x1 image",
    "4D NIfTI",
    "NaN NIfTI",
    "NIfTI header claiming a huge size",
    "PNG header claiming a huge size",
    "DICOM without pixel data",
    "unsupported file type",
]


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _yaml(folder: Path, name: str, values: dict) -> Path:
    return _write(folder, name, yaml.safe_dump({**TINY, **values}))


# name -> (function (tmp, earlier) -> extra CLI arguments, words the error line must contain)
CONFIG_CASES = {
    "broken YAML": (
        lambda t, e: ["--config", _write(t, "c.yaml", "model: {channels: [8, 16\n")],
        "invalid YAML at line",
    ),
    "YAML that is a list": (lambda t, e: ["--config", _write(t, "c.yaml", "- 1\n- 2\n")], "must be a mapping"),
    "binary config": (lambda t, e: ["--config", _write(t, "c.yaml", b"\xff\xfe\x00\x81")], "not a text file"),
    "missing config": (lambda t, e: ["--config", t / "nope.yaml"], "config file not found"),
    "unknown key": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"stepz": 3})],
        "unknown config key 'stepz' (did you mean 'steps'?",
    ),
    "unknown model key": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"model": {"chanels": [8]}})],
        "unknown config key 'model.chanels'",
    ),
    "unknown views key": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"views": {"rotation": 3}})],
        "unknown config key 'views.rotation'",
    ),
    "log_every not a number": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"log_every": "ten"})],
        "log_every: expected an integer, got 'ten'",
    ),
    "model not a mapping": (lambda t, e: ["--config", _yaml(t, "c.yaml", {"model": 5})], "model: expected a mapping"),
    "boolean where a number goes": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"keep_checkpoints": True})],
        "keep_checkpoints: expected an integer, got True",
    ),
    "negative learning rate": (lambda t, e: ["--lr=-0.1"], "lr: -0.1 must be positive"),
    "size not divisible": (lambda t, e: ["--size", "30"], "size: [30, 30] must be positive multiples of 4"),
    "size with 3 values in 2D": (lambda t, e: ["--size", "32,32,32"], "size: [32, 32, 32] has 3 values"),
    "window radius 0": (lambda t, e: ["--window-radius", "0"], "model.window_radius: 0 is not allowed"),
    "dim 4": (lambda t, e: ["--dim", "4"], "dim: 4 is not allowed (allowed: 2, 3)"),
    "amp fp32": (lambda t, e: ["--amp", "fp32"], "amp: 'fp32' is not allowed"),
    "on_bad_file ignore": (lambda t, e: ["--on-bad-file", "ignore"], "on_bad_file: 'ignore' is not allowed"),
    "unknown method": (lambda t, e: ["--method", "simclrr"], "method 'simclrr' is unknown"),
    "unknown backbone": (lambda t, e: ["--backbone", "resnet"], "model.backbone 'resnet' is unknown"),
    "unknown method option": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"method_options": {"temprature": 0.1}})],
        "method_options: 'temprature' is not an option of method 'cover'",
    ),
    "bad device": (lambda t, e: ["--device", "gpu0"], "device: 'gpu0' is not a device"),
    "CUDA without a GPU": (lambda t, e: ["--device", "cuda"], "no CUDA device is available"),
    "bad intensity preset": (lambda t, e: ["--intensity", "ctt"], "preset: unknown intensity preset 'ctt'"),
    "negative spacing": (lambda t, e: ["--spacing", "1,-1,1"], "spacing: [1.0, -1.0, 1.0] is not allowed"),
    "heads of the wrong length": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"model": {**TINY_MODEL, "heads": [1, 1]}})],
        "model.heads: needs one entry per pyramid level (3)",
    ),
    "batch size 0": (lambda t, e: ["--batch-size", "0"], "batch_size: must be at least 1"),
    "more memory than the machine has": (  # would allocate ~60 GB for one batch, or be killed
        lambda t, e: ["--size", "256", "--batch-size", "100000"],
        "memory: pretraining at batch 100000 of 256x256 needs about",
    ),
    "checkpoint every 0": (lambda t, e: ["--checkpoint-every", "0"], "checkpoint_every: must be at least 1"),
    "negative checkpoint minutes": (lambda t, e: ["--checkpoint-minutes=-1"], "checkpoint_minutes: must be positive"),
    "max_nonfinite_steps 0": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"max_nonfinite_steps": 0})],
        "max_nonfinite_steps: must be at least 1",
    ),
    "unknown option": (lambda t, e: ["--stepz", "3"], "No such option: --stepz"),
    "option of the wrong type": (lambda t, e: ["--steps", "abc"], "Invalid value for '--steps'"),
    "missing resume checkpoint": (lambda t, e: ["--resume", t / "nope.pt"], "checkpoint not found"),
    "resume from a text file": (lambda t, e: ["--resume", _write(t, "x.pt", "hello")], "not a readable checkpoint"),
    "resume with another model": (
        lambda t, e: [
            "--resume",
            list_checkpoints(e)[0],
            "--config",
            _yaml(t, "c.yaml", {"model": {"channels": [4, 8, 16, 8, 4], "heads": [1, 1, 1], "head_dim": 2}}),
        ],
        "does not match this run's model",
    ),
    "bad data with --resume auto": (
        lambda t, e: ["--resume", "auto", "--data", _write(t, "bad.png", "not a png")],
        "not a valid PNG",
    ),
    "missing data": (lambda t, e: ["--data", t / "nowhere"], "no such file or folder"),
    "folder without images": (
        lambda t, e: ["--data", (_write(t, "readme.txt", "x"), t)[1]],
        "no readable images",
    ),
    "malformed datalist": (lambda t, e: ["--data", _write(t, "list.json", "{not json")], "list.json"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_file(case, bad_files, earlier, tmp_path, monkeypatch, capsys):
    path, words = bad_files[case]
    before = folder_hash(earlier)
    args = ["pretrain", "--config", _yaml(tmp_path, "tiny.yaml", {}), "--size", "32"]
    args += ["--batch-size", "2", "--steps", "1", "--device", "cpu", "--data", path, "--on-bad-file", "error"]
    args += ["--out", earlier, "--overwrite"]  # allowed to replace it, so only validation protects it
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and path.name in lines[0] and words in lines[0], lines[0]
    assert folder_hash(earlier) == before


@pytest.mark.filterwarnings("ignore:skipped 1 unusable file")
@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_or_option(case, earlier, tmp_path, monkeypatch, capsys):
    make_args, words = CONFIG_CASES[case]
    if case == "CUDA without a GPU":  # device-explicit: a machine whose GPUs torch cannot see
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = folder_hash(earlier)
    extra = [str(a) for a in make_args(tmp_path, earlier)]
    args = ["pretrain", "--size", "32", "--batch-size", "2", "--steps", "1", "--device", "cpu"]
    if "--config" not in extra:
        args += ["--config", _yaml(tmp_path, "tiny.yaml", {})]
    args = [*args, *extra]  # later options win
    args += ["--out", earlier] + ([] if "--resume" in extra else ["--overwrite"])
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert folder_hash(earlier) == before


def test_output_folder_of_another_run_is_refused(earlier, tmp_path, monkeypatch, capsys):
    before = folder_hash(earlier)
    base = ["pretrain", "--config", _yaml(tmp_path, "tiny.yaml", {}), "--size", "32", "--steps", "1"]
    code, lines = run_cli([*base, "--out", earlier], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0] == (
        f"error: out: {earlier} already holds files of another run; pass --resume auto to continue it, "
        "--overwrite to replace its results, or choose another --out"
    )
    a_file = _write(tmp_path, "a_file", "x")
    code, lines = run_cli([*base, "--out", a_file], monkeypatch, capsys)
    assert code == 2 and lines == [f"error: out: {a_file} exists and is not a folder"]
    code, lines = run_cli(["pretrian"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "No such command 'pretrian'" in lines[0]
    assert folder_hash(earlier) == before


# ------------------------------------------------------------------------- real subprocesses


def _cover(args: list, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cover", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_console_script_end_to_end(bad_files, earlier, tmp_path):
    """Real processes: bad files and a colour PNG are skipped (one warning line) while a grey PNG
    saved as RGB and a 16-bit PNG train;
    a bad file with ``--on-bad-file error`` and an unknown option each give one line, exit 2."""
    folder = tmp_path / "mixed"
    make_bad_files(folder)
    gradient = np.linspace(0, 1, 40 * 40).reshape(40, 40)
    rgb = np.stack([gradient, gradient.T, 1 - gradient], axis=-1)
    _png(folder / "colour.png", (rgb * 255).astype(np.uint8))  # colour: skipped, never mixed into grey
    _png(folder / "grey_rgb.png", (np.stack([gradient] * 3, axis=-1) * 255).astype(np.uint8))  # grey saved as RGB
    _png(folder / "deep.png", (gradient * 65535).astype(np.uint16))
    assert Image.open(folder / "deep.png").mode.startswith("I")  # really 16-bit
    config = _yaml(tmp_path, "tiny.yaml", {})
    tiny = ["--config", config, "--size", "32", "--batch-size", "2", "--device", "cpu"]
    before = folder_hash(earlier)
    runs = {
        "skip": _cover(["pretrain", *tiny, "--steps", "1", "--data", folder, "--out", tmp_path / "out"], tmp_path),
        "error": _cover(
            ["pretrain", *tiny, "--steps", "1", "--data", bad_files["NaN NIfTI"][0], "--on-bad-file", "error"]
            + ["--out", earlier, "--overwrite"],
            tmp_path,
        ),
        "option": _cover(["pretrain", "--steps", "1", "--colour", "--out", earlier, "--overwrite"], tmp_path),
    }
    results = {name: process.communicate(timeout=300) for name, process in runs.items()}
    codes = {name: process.returncode for name, process in runs.items()}

    _, err = results["skip"]
    assert codes["skip"] == 0, err
    assert "Traceback" not in err
    warned = [line for line in err.splitlines() if line.startswith("warning: skipped")]
    assert len(warned) == 1, err
    images = {name: found for name, found in bad_files.items() if name != "unsupported file type"}  # not listed
    images["colour PNG"] = (folder / "colour.png", "is a colour image (mode RGB) whose 3 samples per pixel differ")
    assert f"warning: skipped {len(images)} unusable file(s): " in warned[0]
    for path, words in images.values():
        assert f"{path.name}: " in warned[0] and words in warned[0]
    metadata = load_checkpoint(list_checkpoints(tmp_path / "out")[-1])["metadata"]["data"]
    assert metadata["num_files"] == 2 and metadata["formats"] == {"png": 2}
    assert len(metadata["skipped"]) == len(images)

    for name, words in (("error", "nan.nii.gz: "), ("option", "No such option: --colour")):
        _, err = results[name]
        lines = [line for line in err.splitlines() if line.strip()]
        assert codes[name] == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("error: ") and words in lines[0]
    assert folder_hash(earlier) == before


def test_devices_launch_with_a_bad_option_prints_only_the_processes_errors(earlier, tmp_path):
    """``--devices 2`` with a batch that does not split: each process's one line, exit 2, none of
    torchrun's log lines, and the earlier run untouched."""
    before = folder_hash(earlier)
    process = _cover(["finetune", "--devices", "2", "--batch-size", "3", "--out", earlier], tmp_path)
    _, err = process.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 2, err
    assert lines == ["error: batch_size: 3 is not divisible by 2 processes"] * 2, err
    assert folder_hash(earlier) == before


# ------------------------------------------------- label maps, colour, geometry (issue 14)

VOC = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # palette indices 0-3 -> black, red, green, olive
FINETUNE = ["--task", "seg", "--dim", "2", "--size", "32", "--steps", "1", "--batch-size", "2"]
FINETUNE += ["--val-fraction", "0.25", "--channels", "8,16,32,16,8", "--device", "cpu", "--val-every", "1"]


def _palette_png(path: Path, indices: np.ndarray) -> Path:
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(VOC + [0] * (768 - len(VOC)))
    image.save(path)
    return path


def _classes_2d(i: int) -> np.ndarray:
    labels = np.zeros((32, 32), np.uint8)
    labels[4 + i : 14 + i, 6:20] = 1
    labels[20:28, 3 + i : 12 + i] = 3
    labels[22:30, 22:30] = 2
    return labels


def seg_task_2d(root: Path, n: int = 4) -> tuple[Path, Path]:
    """``n`` grey PNG images with VOC-palette PNG label maps (classes 0-3)."""
    rng = np.random.default_rng(5)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(n):
        lab = _classes_2d(i)
        _png(images / f"c{i}.png", (40 + 50 * lab + rng.integers(0, 20, lab.shape)).astype(np.uint8))
        _palette_png(labels / f"c{i}.png", lab)
    return images, labels


def test_palette_label_maps_keep_their_indices(tmp_path, monkeypatch, capsys):
    images, labels = seg_task_2d(tmp_path)
    out = tmp_path / "run"
    args = ["finetune", *FINETUNE, "--images", images, "--labels", labels, "--out", out, "--num-labeled", "2"]
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 0, lines
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_classes"] == 4  # indices 0-3, not luminance values up to 113.4 (114 classes)
    assert len(json.loads((out / "split.json").read_text())["unused"]) == 1  # its palette label counted too
    note = "data: intensity preset chosen per file (no --intensity): minmax for 3 file(s) (e.g. "
    assert any(
        line.startswith(note) and line.endswith(": no modality in the header); pass --intensity to choose one for all")
        for line in lines
    ), lines


def _nifti_pair(folder: Path, name: str, label: np.ndarray, label_affine: np.ndarray) -> None:
    image = np.random.default_rng(len(name)).normal(size=label.shape).astype(np.float32)
    _nifti_with(folder / "images" / f"{name}.nii.gz", image, np.diag([0.8, 0.8, 1.0, 1.0]))
    _nifti_with(folder / "labels" / f"{name}.nii.gz", label, label_affine)


def _nifti_with(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _bad_label_task(root: Path, kind: str) -> tuple[Path, Path, Path, str]:
    """A 2D task of 4 one-slice NIfTI cases, the last one's label or image spoiled as ``kind``.

    Returns ``(images, labels, spoiled file, words the error must contain)``.
    """
    grid = np.diag([0.8, 0.8, 1.0, 1.0])
    for i in range(3):
        _nifti_pair(root, f"c{i}", _classes_2d(i)[..., None], grid)
    label = _classes_2d(3)[..., None].astype(np.float32)
    label_affine = grid.copy()
    words = ""
    if kind == "fractional label":
        label = label * 0.5 + np.linspace(0, 0.3, label.size, dtype=np.float32).reshape(label.shape)
        words = "non-integer value(s)"
    elif kind == "label shifted by 10 mm":
        label_affine[1, 3] = 10.0
        words = "has its origin 10 mm away from its image's"
    elif kind == "label with another spacing":
        label_affine[0, 0] = 1.0
        words = "has voxel size [1.0, 0.8, 1.0] mm but its image has [0.8, 0.8, 1.0] mm"
    _nifti_pair(root, "c3", label, label_affine)
    spoiled = root / "labels" / "c3.nii.gz"
    if kind == "colour label":
        spoiled = root / "labels" / "c3.png"
        (root / "labels" / "c3.nii.gz").unlink()
        _png(spoiled, np.stack([_classes_2d(3) * 60, _classes_2d(3) * 20, 255 - _classes_2d(3) * 60], -1))
        words = "is a colour label map"
    elif kind == "colour image":
        spoiled = root / "images" / "c3.png"
        (root / "images" / "c3.nii.gz").unlink()
        _png(spoiled, np.stack([_classes_2d(3) * 60, _classes_2d(3) * 20, 255 - _classes_2d(3) * 60], -1))
        words = "is a colour image (mode RGB) whose 3 samples per pixel differ"
    return root / "images", root / "labels", spoiled, words


BAD_LABEL_CASES = [
    "fractional label",
    "label shifted by 10 mm",
    "label with another spacing",
    "colour label",
    "colour image",
]


@pytest.mark.parametrize("kind", BAD_LABEL_CASES)
def test_bad_label_or_colour_image_is_one_line_naming_both_files(kind, earlier, tmp_path, monkeypatch, capsys):
    """Refused before --out is touched: a new --out is not created, --overwrite keeps the earlier run."""
    images, labels, spoiled, words = _bad_label_task(tmp_path / "task", kind)
    before = folder_hash(earlier)
    base = ["finetune", *FINETUNE, "--images", images, "--labels", labels]
    for out in ([earlier, "--overwrite"], [tmp_path / "new"]):
        code, lines = run_cli([*base, "--out", *out], monkeypatch, capsys)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"error: {spoiled}: ") and words in lines[0], lines[0]
        if kind != "colour image":
            assert f"(label map of {images / 'c3.nii.gz'})" in lines[0], lines[0]
    assert not (tmp_path / "new").exists()
    assert folder_hash(earlier) == before


def test_a_run_that_failed_on_its_data_does_not_block_the_corrected_rerun(tmp_path, monkeypatch, capsys):
    images, labels, spoiled, _ = _bad_label_task(tmp_path / "task", "fractional label")
    out = tmp_path / "run"
    args = ["finetune", *FINETUNE, "--images", images, "--labels", labels, "--out", out]
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "non-integer" in lines[0]
    assert not out.exists()  # no split.json / config.yaml left behind
    _nifti_with(spoiled, _classes_2d(3)[..., None], np.diag([0.8, 0.8, 1.0, 1.0]))
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 0, lines
    assert json.loads((out / "summary.json").read_text())["num_classes"] == 4


def test_one_slice_and_true_2d_nifti_fine_tune_with_dim_2(tmp_path, monkeypatch, capsys):
    root = tmp_path / "task"
    grid = np.diag([0.8, 0.8, 1.0, 1.0])
    for i in range(4):  # two true 2D NIfTI (32x32) and two of shape (32, 32, 1)
        label = _classes_2d(i) if i % 2 else _classes_2d(i)[..., None]
        _nifti_pair(root, f"c{i}", label, grid)
    out = tmp_path / "run"
    args = ["finetune", *FINETUNE, "--images", root / "images", "--labels", root / "labels", "--out", out]
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 0, lines
    assert json.loads((out / "summary.json").read_text())["num_classes"] == 4
    volume = _nifti_with(tmp_path / "vol" / "images" / "v.nii.gz", np.zeros((32, 32, 5), np.float32), grid)
    _nifti_with(tmp_path / "vol" / "labels" / "v.nii.gz", np.zeros((32, 32, 5), np.uint8), grid)
    args = ["finetune", *FINETUNE, "--images", volume.parent, "--labels", tmp_path / "vol" / "labels"]
    code, lines = run_cli([*args, "--out", tmp_path / "run3d", "--val-fraction", "0"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1
    assert "is a 3D volume (32x32x5) but dim is 2" in lines[0] and "use --dim 3" in lines[0], lines[0]
    assert "use --dim 2" not in lines[0]


# --------------------------------------------- pretraining: what a folder holds, CT, YAML


def _pretrain_args(tmp_path: Path, data: Path, out: Path, *extra) -> list:
    args = ["pretrain", "--config", _yaml(tmp_path, "tiny.yaml", {}), "--size", "32", "--batch-size", "2"]
    return [*args, "--steps", "1", "--device", "cpu", "--dim", "2", "--data", data, "--out", out, *extra]


def test_feature_arrays_and_label_maps_in_a_folder_are_not_pretraining_images(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mixed"
    (folder / "masks").mkdir(parents=True)
    gradient = (np.linspace(0, 255, 40 * 40).reshape(40, 40)).astype(np.uint8)
    for name in ("a.png", "b.png"):
        _png(folder / name, gradient)
    np.save(folder / "features.npy", np.random.default_rng(0).normal(size=(40, 40)).astype(np.float32))
    for name in ("a_seg.png", "mask_b.png", "masks/c.png"):
        _png(folder / name, (gradient > 128).astype(np.uint8))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"not used as pretraining images: 1 NumPy array and 3 label maps \(") as got:
        code, lines = run_cli(_pretrain_args(tmp_path, folder, out), monkeypatch, capsys)
    assert code == 0, lines
    assert len([w for w in got if "not used as pretraining images" in str(w.message)]) == 1
    data = load_checkpoint(list_checkpoints(out)[-1])["metadata"]["data"]
    assert data["num_files"] == 2
    assert sorted(Path(p).name for p, _ in data["not_images"]) == ["a_seg.png", "c.png", "features.npy", "mask_b.png"]


def test_vector_image_is_refused_not_mixed_to_grey(tmp_path, monkeypatch, capsys):
    import SimpleITK as sitk  # noqa: N813

    values = np.random.default_rng(2).random((40, 40, 4)).astype(np.float32)
    path = tmp_path / "probabilities.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(values, isVector=True), str(path))
    args = _pretrain_args(tmp_path, path, tmp_path / "out", "--on-bad-file", "error")
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 2 and len(lines) == 1
    assert f"{path.name}: is a vector image whose 4 samples per pixel differ" in lines[0], lines[0]
    assert "--in-channels 4" in lines[0]
    assert not (tmp_path / "out").exists()


def test_nrrd_ct_gets_the_ct_window_and_it_is_recorded(tmp_path, monkeypatch, capsys):
    import SimpleITK as sitk  # noqa: N813

    from cover.models.export import export

    rng = np.random.default_rng(1)
    folder = tmp_path / "ct"
    folder.mkdir()
    for i in range(2):  # air -1024, soft tissue 40, bone 1500, padding to 3071: no modality in NRRD
        hu = np.full((6, 40, 40), -1024, np.int16)
        hu[:, 8:32, 8:32] = 40 + rng.integers(-20, 20, (6, 24, 24))
        hu[:, 18:22, 18:22], hu[0, 0, 0] = 1500, 3071
        image = sitk.GetImageFromArray(hu)
        image.SetSpacing((0.7, 0.7, 2.5))
        image.SetOrigin((25.74, -125.76, -320.0))
        sitk.WriteImage(image, str(folder / f"lung{i}.nrrd"))
    out = tmp_path / "out"
    code, lines = run_cli(_pretrain_args(tmp_path, folder, out), monkeypatch, capsys)
    assert code == 0, lines
    state = load_checkpoint(list_checkpoints(out)[-1])
    data = state["metadata"]["data"]
    assert data["preset"] == "ct:-1000,1000" and data["presets"] == {"ct:-1000,1000": 2}
    assert data["spacing"] == pytest.approx([0.7, 0.7, 2.5])  # one value per axis (RAS order: x, y, z)
    exported = tmp_path / "export"
    export(list_checkpoints(out)[-1], exported)
    described = json.loads((exported / "cover.json").read_text())
    assert described["preset"] == "ct:-1000,1000" and described["spacing"] == pytest.approx([0.7, 0.7, 2.5])


def test_mixed_spacings_are_one_explicit_note_not_a_list_of_lists(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mr"
    folder.mkdir()
    ramp = np.linspace(0, 500, 40 * 40 * 3, dtype=np.float32).reshape(40, 40, 3)
    nib.save(nib.Nifti1Image(ramp, np.diag([1.0, 1.0, 3.0, 1.0])), str(folder / "a.nii.gz"))
    nib.save(nib.Nifti1Image(ramp, np.diag([0.9, 0.9, 3.0, 1.0])), str(folder / "b.nii.gz"))
    out = tmp_path / "out"
    code, lines = run_cli(_pretrain_args(tmp_path, folder, out), monkeypatch, capsys)
    assert code == 0, lines
    data = load_checkpoint(list_checkpoints(out)[-1])["metadata"]["data"]
    assert data["spacing"] is None and data["preset"] == "minmax"
    assert data["spacing_note"].startswith("per case: the 2 files have 2 different spacings")
    assert any(line == f"data: {data['spacing_note']}" for line in lines), lines
    chosen = "data: intensity preset chosen per file (no --intensity): minmax for 2 file(s)"
    assert any(line.startswith(chosen) for line in lines), lines


def test_window_radius_at_the_top_of_a_yaml_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    config = _yaml(tmp_path, "radius.yaml", {"window_radius": 1})
    args = ["pretrain", "--config", config, "--size", "32", "--batch-size", "2", "--steps", "1", "--device", "cpu"]
    code, lines = run_cli([*args, "--out", out], monkeypatch, capsys)
    assert code == 0, lines
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["window_radius"] == 1
    both = _yaml(tmp_path, "both.yaml", {"window_radius": 1, "model": {**TINY_MODEL, "window_radius": 3}})
    code, lines = run_cli([*args, "--config", both, "--out", tmp_path / "out2"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: window_radius: given as 1 and as model.window_radius 3; give it once"]


def test_analyze_on_an_encoder_only_export_is_one_line_not_a_traceback(earlier, tmp_path, monkeypatch, capsys):
    from cover.models.export import export

    before = folder_hash(earlier)
    folder = export(earlier, tmp_path / "encoder", encoder_only=True)
    out = tmp_path / "analysis"
    code, lines = run_cli(["analyze", "--checkpoint", folder, "--out", out, "--device", "cpu"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (
        f"error: {folder}: an encoder-only export has no decoder weights, which this command uses; "
        "give the cover pretrain run folder or an export made without --encoder-only"
    )
    assert not out.exists() and folder_hash(earlier) == before
