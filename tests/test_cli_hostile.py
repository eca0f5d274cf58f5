"""Hostile inputs through the command line: bad files, bad configs, bad options.

Every case must exit with status 2 and exactly one ``error: ...`` line on stderr naming the
problem, without a traceback, and must leave the output folder of an earlier run untouched
(its files, sizes and modification times are hashed before and after). Most cases call
``cover.cli.main`` in this process (same code path as the console script, a traceback would
fail the test); three run the real ``python -m cover`` in a subprocess, among them a folder
of every bad file plus an RGB and a 16-bit PNG, which must train with the bad files skipped
and listed in one warning line (``--on-bad-file skip``, the default).
"""

from __future__ import annotations

import hashlib
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
from cover.train.checkpoint import list_checkpoints, load_checkpoint

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
    import cover.analysis.figures as figures
    from cover.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("earlier") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "plot_flow", lambda *a, **k: None)  # states matter here, not pictures
        patch.setattr(figures, "plot_losses", lambda *a, **k: None)
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
    "fp16 on CPU": (lambda t, e: ["--amp", "fp16"], "amp: fp16 needs a CUDA device"),
    "bad preset": (lambda t, e: ["--preset", "ctt"], "preset: unknown intensity preset 'ctt'"),
    "negative spacing": (lambda t, e: ["--spacing", "1,-1,1"], "spacing: [1.0, -1.0, 1.0] is not allowed"),
    "heads of the wrong length": (
        lambda t, e: ["--config", _yaml(t, "c.yaml", {"model": {**TINY_MODEL, "heads": [1, 1]}})],
        "model.heads: needs one entry per pyramid level (3)",
    ),
    "batch size 0": (lambda t, e: ["--batch-size", "0"], "batch_size: must be at least 1"),
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
    """Real processes: bad files are skipped (one warning line) while RGB and 16-bit PNGs train;
    a bad file with ``--on-bad-file error`` and an unknown option each give one line, exit 2."""
    folder = tmp_path / "mixed"
    make_bad_files(folder)
    gradient = np.linspace(0, 1, 40 * 40).reshape(40, 40)
    rgb = np.stack([gradient, gradient.T, 1 - gradient], axis=-1)
    _png(folder / "colour.png", (rgb * 255).astype(np.uint8))
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
