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

from _support.cli import run_cli, run_cli_output
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
        "stepz: unknown key, did you mean steps?",
    ),
    "unknown model key": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"model": {"chanels": [8]}})],
        "model.chanels: unknown key, did you mean model.channels?",
    ),
    "unknown views key": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"views": {"rotation": 3}})],
        "views.rotation: unknown key, did you mean views.rotation_deg?",
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
    "bad intensity preset": (lambda t, e: ["--intensity", "ctt"], "intensity: unknown intensity preset 'ctt'"),
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
        line.startswith(note)
        and ": no modality in the header, values " in line
        and line.endswith("); pass --intensity to choose one for all")
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


# ------------------------------------------ output folders and --resume auto (issue 24)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A 1-step fine-tuning run on :func:`seg_task_2d`: ``(run folder, images, labels)``."""
    from cover.downstream.finetune import finetune

    root = tmp_path_factory.mktemp("finetuned")
    images, labels = seg_task_2d(root / "task")
    finetune(
        task="seg", dim=2, size=32, steps=1, batch_size=2, val_fraction=0.25, images=str(images),
        labels=str(labels), out=str(root / "run"), device="cpu", model={"channels": [8, 16, 32, 16, 8]},
    )  # fmt: skip
    return root / "run", images, labels


def _command_args(command: str, tmp_path: Path, earlier: Path, finetuned: tuple[Path, Path, Path]) -> list:
    run, images, labels = finetuned
    return {
        "pretrain": ["pretrain", "--config", _yaml(tmp_path, "tiny.yaml", {}), "--size", "32", "--steps", "1"],
        "finetune": ["finetune", *FINETUNE, "--images", images, "--labels", labels],
        "evaluate": ["evaluate", "--checkpoint", run, "--images", images, "--labels", labels, "--device", "cpu"],
        "predict": ["predict", "--checkpoint", run, "--images", images, "--device", "cpu"],
        "export": ["export", earlier],
        "analyze": ["analyze", "--checkpoint", earlier, "--device", "cpu"],
    }[command]


@pytest.mark.filterwarnings("ignore:labels look lateralised")
@pytest.mark.parametrize("command", ["pretrain", "finetune", "evaluate", "predict", "export", "analyze"])
def test_an_out_that_cannot_be_created_is_one_line(command, earlier, finetuned, tmp_path, monkeypatch, capsys):
    """Below a regular file, and (simulated: tests run as root) on a read-only file system."""
    args = _command_args(command, tmp_path, earlier, finetuned)
    a_file = _write(tmp_path, "a_file", "x")
    code, lines = run_cli([*args, "--out", a_file / "run"], monkeypatch, capsys)
    lines = [line for line in lines if not line.startswith(("warning: ", "data: "))]  # finetune's data notes
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (
        f"error: {a_file / 'run'}: cannot be created or written (a part of the path is a file, not a folder); "
        "check the path, or choose another --out"
    )
    assert a_file.read_text() == "x"

    def read_only(self, *_, **__):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, lines = run_cli([*args, "--out", tmp_path / "ro" / "run"], monkeypatch, capsys)
    lines = [line for line in lines if not line.startswith(("warning: ", "data: "))]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {tmp_path / 'ro'}") and "(read-only file system)" in lines[0], lines[0]


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_resume_auto_on_a_missing_folder_is_an_error(command, earlier, finetuned, tmp_path, monkeypatch, capsys):
    """A mistyped --out with --resume auto used to train from step 0 in a new folder."""
    args = _command_args(command, tmp_path, earlier, finetuned)
    typo = tmp_path / "runs" / "typo"
    code, lines = run_cli([*args, "--device", "cpu", "--out", typo, "--resume", "auto"], monkeypatch, capsys)
    assert code == 2 and lines == [
        f"error: resume: --resume auto continues the run in --out, but {typo} is not a folder; "
        "check the --out path, or leave out --resume to start a new run"
    ]
    assert not typo.exists() and not typo.parent.exists()


# ------------------------------------------------------------- label values (issue 24)


def binary_task(root: Path, values: tuple[int, ...], n: int = 4) -> tuple[Path, Path]:
    """``n`` grey PNG images with PNG masks whose classes 0, 1, ... are saved as ``values``."""
    rng = np.random.default_rng(3)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(n):
        classes = np.minimum(_classes_2d(i), len(values) - 1)
        _png(images / f"c{i}.png", (40 + 50 * classes + rng.integers(0, 20, classes.shape)).astype(np.uint8))
        _png(labels / f"c{i}.png", np.asarray(values, np.uint16 if max(values) > 255 else np.uint8)[classes])
    return images, labels


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ((0, 255), "holds values 0, 255 but the label maps hold values 0, 255 together; label values must be the "
         "class indices 0..K-1: pass --label-values 0,255 (label_values in a YAML file)"),
        ((0, 127, 254), "--label-values 0,127,254"),
        ((0, 1000, 2000), "--label-values 0,1000,2000"),
    ],
)  # fmt: skip
def test_label_values_that_are_not_class_indices_are_one_line(values, words, tmp_path, monkeypatch, capsys):
    """0/255 masks used to train a 256-class network (and 0/1000/2000 one of 2001 classes)."""
    images, labels = binary_task(tmp_path / "task", values)
    out = tmp_path / "run"
    code, lines = run_cli(
        ["finetune", *FINETUNE, "--images", images, "--labels", labels, "--out", out], monkeypatch, capsys
    )
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {labels}") and words in lines[0], lines[0]
    assert not out.exists()


def test_negative_label_values_are_an_error(tmp_path, monkeypatch, capsys):
    images, labels = binary_task(tmp_path / "task", (0, 1))
    label = _classes_2d(0).astype(np.float32) - 1  # -1 background: used to wrap to class 255
    _nifti_with(labels / "c0.nii.gz", label[..., None], np.eye(4))
    (labels / "c0.png").unlink()
    _nifti_with(images / "c0.nii.gz", np.ones((32, 32, 1), np.float32), np.eye(4))
    (images / "c0.png").unlink()
    args = ["finetune", *FINETUNE, "--images", images, "--labels", labels, "--label-values", "0,1"]
    code, lines = run_cli([*args, "--out", tmp_path / "run"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {labels / 'c0.nii.gz'}: label map has negative values (values -1, 0, 1, 2)")
    assert "class indices are 0, 1, ..., K-1: rewrite the file with non-negative values" in lines[0], lines[0]


@pytest.mark.filterwarnings("ignore:labels look lateralised")
def test_label_values_map_masks_for_training_evaluation_and_prediction(tmp_path, monkeypatch, capsys):
    """--label-values 0,255: 2 classes, recorded, applied at evaluation, masks written back as 0/255."""
    images, labels = binary_task(tmp_path / "task", (0, 255))
    out = tmp_path / "run"
    args = ["finetune", *FINETUNE, "--images", images, "--labels", labels, "--label-values", "0,255", "--out", out]
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 0, lines
    assert any("classes=2 " in line for line in lines), lines
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_classes"] == 2 and summary["label_values"] == [0, 255]
    assert yaml.safe_load((out / "config.yaml").read_text())["label_values"] == [0, 255]

    code, lines = run_cli(["evaluate", "--checkpoint", out, "--images", images, "--labels", labels,
                           "--out", tmp_path / "eval", "--device", "cpu"], monkeypatch, capsys)  # fmt: skip
    assert code == 0, lines
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["label_values"] == [0, 255] and metrics["num_cases"] == 4

    code, lines = run_cli(["predict", "--checkpoint", out, "--images", images, "--out", tmp_path / "pred",
                           "--device", "cpu"], monkeypatch, capsys)  # fmt: skip
    assert code == 0, lines
    masks = [np.asarray(Image.open(tmp_path / "pred" / f"c{i}.png")) for i in range(4)]
    assert set(np.unique(np.stack(masks)).tolist()) <= {0, 255} and any(m.max() == 255 for m in masks)

    # the same masks as 0/1 evaluated with --label-values 0,1 (the checkpoint's 0,255 would refuse them)
    _, ones = binary_task(tmp_path / "ones", (0, 1))
    base = ["evaluate", "--checkpoint", out, "--images", images, "--labels", ones, "--device", "cpu"]
    code, lines = run_cli([*base, "--out", tmp_path / "e1"], monkeypatch, capsys)
    assert code == 2 and "which label_values [0, 255] does not list" in lines[-1], lines
    code, lines = run_cli([*base, "--out", tmp_path / "e2", "--label-values", "0,1"], monkeypatch, capsys)
    assert code == 0, lines
    again = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert again["mean_dice"] == pytest.approx(metrics["mean_dice"])


# ------------------------------------------------------------- messages in the user's words


def test_4d_files_without_in_channels_name_the_flag_once(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "fmri"
    folder.mkdir()
    for i in range(3):
        _nifti(folder / f"v{i}.nii.gz", np.random.default_rng(i).random((16, 16, 16, 2)).astype(np.float32))
    args = ["pretrain", "--config", _yaml(tmp_path, "tiny.yaml", {}), "--dim", "3", "--size", "16", "--steps", "1"]
    with pytest.warns(UserWarning) as warned:
        code, lines = run_cli(
            [*args, "--device", "cpu", "--data", folder, "--out", tmp_path / "out"], monkeypatch, capsys
        )
    assert code == 2 and len(lines) == 1
    (skipped,) = [str(w.message) for w in warned if "unusable file" in str(w.message)]
    for line in (skipped, lines[0]):
        assert line.count("--in-channels 2") == 1 and "channels=True" not in line, line
    assert "(3 files: v0.nii.gz, v1.nii.gz, v2.nii.gz)" in skipped  # the advice said once for the 3 files


def test_a_crop_size_too_large_for_the_images_names_the_size_given_and_the_limit(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "small"
    folder.mkdir()
    for i in range(2):
        _png(folder / f"p{i}.png", np.random.default_rng(i).integers(0, 255, (64, 64), dtype=np.uint8))
    code, lines = run_cli(_pretrain_args(tmp_path, folder, tmp_path / "out", "--size", "4096"), monkeypatch, capsys)
    assert code == 2 and len(lines) == 1
    assert "image is 64x64 px, too small for --size 4096x4096" in lines[0]
    assert "these images allow --size 341 at most" in lines[0]  # 64 px x 8 / 1.5 (views.source_scale)


def test_endpoint_error_on_training_images_says_so(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(2):
        _png(folder / f"p{i}.png", np.random.default_rng(i).integers(0, 255, (40, 40), dtype=np.uint8))
    out = tmp_path / "out"
    code, lines = run_cli(_pretrain_args(tmp_path, folder, out), monkeypatch, capsys)
    assert code == 0, lines
    said = "view pairs of the training images (no image held out) with transforms never drawn in training"
    assert any(line.startswith("endpoint error ") and said in line for line in lines), lines
    assert not any("held-out endpoint error" in line for line in lines)
    assert said in json.loads((out / "summary.json").read_text())["epe_pairs"]


def test_ctrl_c_during_the_final_evaluation_still_writes_the_summary(tmp_path, monkeypatch, capsys):
    import cover.pretraining.pretrain as pretrain_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module, "evaluate_fields", interrupted)
    folder = tmp_path / "data"
    folder.mkdir()
    _png(folder / "p.png", np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    out = tmp_path / "out"
    code, lines = run_cli(_pretrain_args(tmp_path, folder, out), monkeypatch, capsys)
    assert code == 130 and lines[-1].startswith("interrupted during the final evaluation (the endpoint error)")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_evaluation"] == "interrupted: the endpoint error was not computed"
    assert summary["steps"] == 1 and summary["checkpoint"] and "epe" not in summary


def test_ctrl_c_during_the_demo_finetuning_test_still_writes_the_summary(tmp_path, monkeypatch, capsys):
    import cover.downstream.finetune as finetune_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_module, "_demo_test", interrupted)
    out = tmp_path / "demo"
    code, lines = run_cli(["finetune", *FINETUNE, "--out", out], monkeypatch, capsys)
    assert code == 130 and lines[-1].startswith("interrupted during the final evaluation (the demo's test-slab")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_evaluation"] == "interrupted: the demo's test-slab evaluation was not computed"
    assert summary["steps"] == 1 and (out / "last.pt").is_file()


def test_finetune_takes_dim_from_a_3d_checkpoint_and_refuses_a_contradicting_dim(tmp_path, monkeypatch, capsys):
    from cover.pretraining.pretrain import pretrain

    volumes = tmp_path / "volumes"
    volumes.mkdir()
    for i in range(2):
        _nifti(volumes / f"v{i}.nii.gz", np.random.default_rng(i).random((16, 16, 16)).astype(np.float32))
    run = tmp_path / "pre3d"
    pretrain(data=str(volumes), out=str(run), dim=3, size=16, batch_size=1, steps=1, device="cpu", **TINY)
    images, labels = seg_task_2d(tmp_path)
    base = ["finetune", "--checkpoint", run, "--images", images, "--labels", labels, "--out", tmp_path / "ft"]
    code, out, lines = run_cli_output([*base, "--dry-run"], monkeypatch, capsys)
    assert code == 0 and yaml.safe_load(out)["dim"] == 3, lines  # not the default 2
    code, lines = run_cli([*base, "--dim", "2", *FINETUNE[4:]], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: dim: 2 but the pretrained checkpoint ")
    assert lines[0].endswith("is 3D; use --dim 3") and not (tmp_path / "ft").exists()


def test_finetune_says_an_intensity_preset_comes_from_the_checkpoint(earlier, tmp_path, monkeypatch, capsys):
    images, labels = seg_task_2d(tmp_path)
    args = ["finetune", *FINETUNE, "--checkpoint", earlier, "--images", images, "--labels", labels]
    code, lines = run_cli([*args, "--out", tmp_path / "ft"], monkeypatch, capsys)
    assert code == 0, lines
    (note,) = [line for line in lines if line.startswith("data: intensity preset ")]
    assert note == "data: intensity preset mri (from checkpoint) for 4 file(s)", note


def test_a_checkpoint_of_an_older_version_naming_preset_loads_silently(earlier, tmp_path, caplog):
    from cover.models.loading import load_vector_model

    state = load_checkpoint(list_checkpoints(earlier)[-1])
    state["config"]["preset"] = state["config"].pop("intensity")  # as written before the rename
    torch.save(state, tmp_path / "old.pt")
    with caplog.at_level("WARNING"):
        _, metadata, _ = load_vector_model(tmp_path / "old.pt")
    assert metadata["spatial_dims"] == 2 and caplog.messages == []
