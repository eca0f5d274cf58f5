"""One checkpoint loader: every command given the same checkpoint loads it or fails with the same line.

The inputs: (a) a pretraining run folder, (b) a training checkpoint file, (c) a safetensors
export, its encoder-only variant, a fine-tuning output folder, and (d) a corrupt checkpoint, a
text file, a safetensors file without its ``cover.json``, an export with truncated weights. The
commands: finetune, evaluate, predict, analyze, register and export, each through the CLI for the
failures (one ``error:`` line, exit 2, no traceback) and through its loader for the successes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _support.cli import run_cli
from cover.errors import CoverError
from cover.models.loading import load_backbone, load_finetuned, load_vector_model, read_checkpoint

TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-step pretraining run, its exports (full, encoder-only), a 1-step fine-tuning run, a small task."""
    import cover.engine.curves as curves
    import cover.pretraining.figures as figures
    from cover.downstream.finetune import finetune
    from cover.models.export import export
    from cover.pretraining.pretrain import pretrain

    root = tmp_path_factory.mktemp("loading")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "plot_flow", lambda *a, **k: None)
        patch.setattr(curves, "plot_losses", lambda *a, **k: None)
        pretrain(
            out=str(root / "pre"), dim=2, size=32, batch_size=2, steps=2, checkpoint_every=2, device="cpu",
            model=TINY_MODEL, log_every=1, eval_pairs=2, warmup_steps=1,
        )  # fmt: skip
    rng = np.random.default_rng(0)
    for folder in ("images", "labels"):
        (root / folder).mkdir()
    for i in range(3):
        label = np.zeros((32, 32), np.uint8)
        label[4 + i : 14 + i, 6:20] = 1
        image = (40 + 150 * label + rng.integers(0, 30, (32, 32))).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"c{i}.png")
        Image.fromarray(label).save(root / "labels" / f"c{i}.png")
    export(root / "pre", root / "export")
    export(root / "pre", root / "encoder", encoder_only=True)
    finetune(
        pretrained=str(root / "pre"), images=str(root / "images"), labels=str(root / "labels"), dim=2, size=32,
        batch_size=2, steps=1, val_every=1, val_fraction=0.34, out=str(root / "ft"), device="cpu",
    )  # fmt: skip
    torch.set_num_threads(threads)
    (root / "corrupt.pt").write_bytes((root / "pre" / "checkpoints" / "step_00000002.pt").read_bytes()[:999])
    (root / "notes.pt").write_text("not a checkpoint\n")
    (root / "loose").mkdir()
    shutil.copy(root / "export" / "weights.safetensors", root / "loose" / "weights.safetensors")
    shutil.copytree(root / "export", root / "truncated")
    weights = root / "truncated" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    return root


def _inputs(root: Path) -> dict[str, Path]:
    return {
        "run folder": root / "pre",
        "checkpoint file": root / "pre" / "checkpoints" / "step_00000002.pt",
        "export": root / "export",
        "export weights file": root / "export" / "weights.safetensors",
        "encoder-only export": root / "encoder",
        "finetune folder": root / "ft",
    }


# What each loader gives for each valid input: None = loads, else words of its one-line error.
ONLY_FINETUNED = "but this command needs a cover finetune output folder"
ONLY_PRETRAINED = "but this command needs the cover pretrain run folder or checkpoint of a cover model"
NO_DECODER = "an encoder-only export has no decoder weights"
EXPECTED = {
    # finetune (and cover.load_pretrained): any backbone, an encoder-only one too
    "backbone": dict.fromkeys(
        ["run folder", "checkpoint file", "export", "export weights file", "encoder-only export", "finetune folder"]
    ),
    # analyze: the whole backbone
    "whole backbone": {
        **dict.fromkeys(["run folder", "checkpoint file", "export", "export weights file", "finetune folder"]),
        "encoder-only export": NO_DECODER,
    },
    # evaluate, predict
    "finetuned": {
        **dict.fromkeys(["run folder", "checkpoint file"], "a cover pretrain checkpoint, " + ONLY_FINETUNED),
        **dict.fromkeys(["export", "export weights file", "encoder-only export"], "a cover export"),
        "finetune folder": None,
    },
    # register
    "vector model": {
        **dict.fromkeys(["run folder", "checkpoint file"]),
        **dict.fromkeys(["export", "export weights file", "encoder-only export"], "a cover export"),
        "finetune folder": "a cover finetune checkpoint, " + ONLY_PRETRAINED,
    },
}
LOADERS = {
    "backbone": lambda p: load_backbone(p)[0],
    "whole backbone": lambda p: load_backbone(p, whole=True)[0],
    "finetuned": lambda p: load_finetuned(p)[0],
    "vector model": lambda p: load_vector_model(p)[0],
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_each_loader_on_each_valid_input(loader, runs):
    pretrained = torch.load(runs / "pre" / "checkpoints" / "step_00000002.pt", weights_only=True)["model"]
    for name, path in _inputs(runs).items():
        expected = EXPECTED[loader][name]
        if expected is not None:
            with pytest.raises(CoverError, match=expected) as error:
                LOADERS[loader](path)
            assert "\n" not in str(error.value) and str(error.value).startswith(str(path)[: len(str(runs))])
            continue
        model = LOADERS[loader](path)
        state = model.state_dict()
        if name == "finetune folder":  # the fine-tuned network's own weights, head included
            tuned = torch.load(runs / "ft" / "best.pt", weights_only=True)["model"]
            prefix = "" if loader == "finetuned" else "backbone."
            assert all(torch.equal(state[k], tuned[prefix + k]) for k in state)
            continue
        prefix = "" if loader == "vector model" else "backbone."
        if name == "encoder-only export":  # the encoder as pretrained, the decoder freshly initialised
            assert all(torch.equal(v, pretrained[prefix + k]) for k, v in state.items() if k.startswith("encoder."))
            assert not all(torch.equal(v, pretrained[prefix + k]) for k, v in state.items() if k.startswith("decoder."))
        else:
            assert all(torch.equal(v, pretrained[prefix + k]) for k, v in state.items()), name


BROKEN = {
    "corrupt checkpoint": ("corrupt.pt", "corrupt.pt: not a readable checkpoint"),
    "text file": ("notes.pt", "notes.pt: not a readable checkpoint"),
    "safetensors without cover.json": ("loose/weights.safetensors", "weights without their cover.json"),
    "export with truncated weights": ("truncated", "weights.safetensors: not a readable weights file"),
    "missing": ("nowhere.pt", "nowhere.pt: checkpoint not found"),
    "folder without a checkpoint": ("images", "no checkpoint found (expected checkpoints/step_*.pt"),
}


def _commands(root: Path, path: Path, out: Path) -> dict[str, list]:
    image = root / "images" / "c0.png"
    return {
        "finetune": ["finetune", "--pretrained", path, "--images", root / "images", "--labels", root / "labels"]
        + ["--dim", "2", "--size", "32", "--steps", "1", "--device", "cpu", "--out", out],
        "evaluate": ["evaluate", path, "--images", root / "images", "--labels", root / "labels", "--out", out],
        "predict": ["predict", path, "--images", root / "images", "--out", out, "--device", "cpu"],
        "analyze": ["analyze", "--checkpoint", path, "--out", out, "--device", "cpu"],
        "register": ["register", "--checkpoint", path, "--fixed", image, "--moving", image, "--out", out],
        "export": ["export", path, "--out", out],
    }


@pytest.mark.parametrize("case", list(BROKEN))
def test_every_command_gives_the_same_line_for_a_broken_checkpoint(case, runs, tmp_path, monkeypatch, capsys):
    name, words = BROKEN[case]
    seen = set()
    for command, args in _commands(runs, runs / name, tmp_path / "out").items():
        code, lines = run_cli(args, monkeypatch, capsys)
        assert code == 2 and len(lines) == 1, (command, lines)
        assert lines[0].startswith("error: ") and words in lines[0], (command, lines[0])
        assert not (tmp_path / "out").exists(), command  # nothing written
        seen.add(lines[0])
    assert len(seen) == 1, seen


def test_demo_finetune_with_a_broken_checkpoint_writes_nothing(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    code, lines = run_cli(["finetune", "--checkpoint", runs / "corrupt.pt", "--out", out], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "corrupt.pt: not a readable checkpoint" in lines[0], lines
    assert not out.exists()  # the demo data is written only after the checkpoint loaded


def test_analyze_on_an_encoder_only_export_is_one_line(runs, tmp_path, monkeypatch, capsys):
    code, lines = run_cli(["analyze", "--checkpoint", runs / "encoder", "--out", tmp_path / "a"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and NO_DECODER in lines[0], lines
    assert not (tmp_path / "a").exists()


def test_export_of_an_export_is_refused(runs, tmp_path, monkeypatch, capsys):
    code, lines = run_cli(["export", runs / "export", "--out", tmp_path / "e"], monkeypatch, capsys)
    assert code == 2 and lines == [
        f"error: {runs / 'export'}: already a cover export; export from the cover pretrain run folder"
    ]


def test_read_checkpoint_kinds(runs):
    assert read_checkpoint(runs / "pre").kind == "pretrain"
    assert read_checkpoint(runs / "pre" / "checkpoints").source.name == "step_00000002.pt"
    assert read_checkpoint(runs / "ft").source == runs / "ft" / "best.pt"
    assert read_checkpoint(runs / "ft").kind == "finetune"
    exported = read_checkpoint(runs / "encoder" / "cover.json")
    assert exported.kind == "export" and exported.encoder_only and exported.source == runs / "encoder"
