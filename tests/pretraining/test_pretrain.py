import json
import logging
import shutil

import numpy as np
import pytest
import torch

import cover.engine.loop as loop_module
from _support.clock import SteppingTime
from cover.engine.checkpoint import list_checkpoints, load_checkpoint
from cover.engine.logger import read_log
from cover.errors import ConfigError
from cover.pretraining.pretrain import pretrain

TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}


def tiny(out, dim=2, **extra):
    options = {
        "out": str(out),
        "dim": dim,
        "size": 32 if dim == 2 else 16,
        "batch_size": 4 if dim == 2 else 2,
        "steps": 40,
        "lr": 3e-3,
        "warmup_steps": 3,
        "log_every": 1,
        "eval_pairs": 4,
        "checkpoint_every": 20,
        "model": TINY_MODEL,
        "device": "cpu",  # explicit: on a CUDA machine auto would pick the GPU (and bf16), not the 1e-6 CPU numbers
    }
    options.update(extra)
    return options


@pytest.mark.parametrize("dim,steps", [(2, 60), (3, 30)])
def test_tiny_run_learns_and_writes_outputs(tmp_path, dim, steps):
    summary = pretrain(**tiny(tmp_path / "run", dim=dim, steps=steps))
    log = read_log(tmp_path / "run" / "log.csv")
    first, last = np.mean(log["loss_vec"][:5]), np.mean(log["loss_vec"][-5:])
    assert last < 0.85 * first, (first, last)
    for name in ("config.yaml", "log.csv", "summary.json", "loss.png", "flow.png"):
        assert (tmp_path / "run" / name).is_file()
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["steps"] == steps and saved["epe"] > 0 and saved["epe_zero"] > 0
    if dim == 2:  # the 3D tiny run is too short to beat the zero field; the 3D demo is measured
        assert saved["epe"] < 0.9 * saved["epe_zero"]
    assert {"final_loss_vec", "final_loss_con", "epe", "epe_zero"} <= set(saved)
    assert summary["epe"] == saved["epe"]


def test_resume_continues_with_the_same_losses(tmp_path):
    full = tmp_path / "full"
    pretrain(**tiny(full, steps=8, checkpoint_every=4, keep_checkpoints=5))
    assert [p.name for p in list_checkpoints(full)] == ["step_00000004.pt", "step_00000008.pt"]
    part = tmp_path / "part"
    shutil.copytree(full, part)
    list_checkpoints(part)[-1].unlink()  # as if killed after step 4's checkpoint
    pretrain(**tiny(part, steps=8, checkpoint_every=4, resume="auto"))
    a, b = read_log(full / "log.csv"), read_log(part / "log.csv")
    assert a["step"] == b["step"] == list(range(1, 9))
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=0, atol=1e-6)
    state = load_checkpoint(list_checkpoints(part)[-1])
    assert state["step"] == 8 and state["metadata"]["spatial_dims"] == 2


def test_log_seconds_continue_after_a_resume(tmp_path, monkeypatch):
    full = tmp_path / "full"
    monkeypatch.setattr(loop_module, "time", SteppingTime())
    pretrain(**tiny(full, steps=8, checkpoint_every=4, keep_checkpoints=5))
    part = tmp_path / "part"
    shutil.copytree(full, part)
    list_checkpoints(part)[-1].unlink()  # as if killed after step 4's checkpoint
    monkeypatch.setattr(loop_module, "time", SteppingTime())  # a new process: its clock restarts
    pretrain(**tiny(part, steps=8, checkpoint_every=4, resume="auto"))
    seconds = read_log(part / "log.csv")["seconds"]
    assert read_log(part / "log.csv")["step"] == list(range(1, 9))
    assert all(b > a for a, b in zip(seconds, seconds[1:], strict=False)), seconds
    stored = load_checkpoint(list_checkpoints(part)[0])["seconds"]
    assert seconds[3] < stored < seconds[4]  # step 4's row, its checkpoint, then the resumed step 5


def test_refuses_non_empty_output_of_another_run(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already holds files"):
        pretrain(**tiny(out, steps=1))
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_channels_last_run_matches_the_default_layout_and_resumes_exactly(tmp_path):
    plain, converted = tmp_path / "plain", tmp_path / "channels_last"
    pretrain(**tiny(plain, steps=6, checkpoint_every=3))
    pretrain(**tiny(converted, steps=6, checkpoint_every=3, keep_checkpoints=5, channels_last=True))
    a, b = read_log(plain / "log.csv"), read_log(converted / "log.csv")
    # Only rounding differs: equal at first, then drifting apart as the weights' rounding compounds
    # through Adam (relative 3.4e-4 at step 5 in a one-thread process; 2 threads stayed within 1e-4).
    np.testing.assert_allclose(b["loss"][:3], a["loss"][:3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=2e-3)
    assert "channels_last: true" in (converted / "config.yaml").read_text()
    part = tmp_path / "part"
    shutil.copytree(converted, part)
    list_checkpoints(part)[-1].unlink()  # killed after step 3's checkpoint; config.yaml keeps the layout
    pretrain(out=str(part), resume="auto")
    np.testing.assert_allclose(read_log(part / "log.csv")["loss"], b["loss"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method,options", [("cover", {}), ("simclr", {"hidden_dim": 16})])
def test_collapse_statistic_is_logged_summarised_and_warned(tmp_path, monkeypatch, caplog, method, options):
    import cover.methods.collapse as collapse

    run = tmp_path / method
    summary = pretrain(**tiny(run, steps=4, log_every=2, method=method, method_options=options))
    log = read_log(run / "log.csv")
    assert log["step"] == [2, 4]
    assert all(-1 <= v <= 1 for v in log["feat_pair_cos"]) and all(0 < v <= 8 for v in log["feat_eff_rank"])
    saved = json.loads((run / "summary.json").read_text())
    assert saved["final_feat_pair_cos"] == log["feat_pair_cos"][-1] == summary["final_feat_pair_cos"]
    assert saved["features_collapsed"] is False and "collapsed" not in caplog.text
    assert list((run / "tensorboard").iterdir())
    monkeypatch.setattr(collapse, "COLLAPSE_COSINE", -1.0)  # everything counts as collapsed now
    pretrain(**tiny(tmp_path / "again", steps=2, log_every=2, method=method, method_options=options))
    warned = [r for r in caplog.records if "collapsed" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert warned[0].getMessage().startswith("the finest features collapsed")
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["features_collapsed"] is True


def test_recipe_is_recorded_and_a_bad_one_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from tests._support.cli import run_cli

    summary = pretrain(**tiny(tmp_path / "run", steps=1, method_options={"recipe": "centred"}))
    assert summary["recipe"] == "centred"
    capsys.readouterr()
    code, lines = run_cli(["pretrain", "--recipe", "papr", "--out", tmp_path / "bad"], monkeypatch, capsys)
    assert code == 2 and lines == [
        "error: method_options.recipe: 'papr' is unknown (allowed: paper, centred, projected, predictor, vicreg, "
        "centred-vicreg, balanced)"
    ]
    code, lines = run_cli(
        ["pretrain", "--method", "simclr", "--recipe", "paper", "--out", tmp_path / "bad"], monkeypatch, capsys
    )
    assert code == 2 and len(lines) == 1 and "'recipe'" in lines[0] and "simclr" in lines[0]
    assert not (tmp_path / "bad").exists()


def test_the_resolved_config_names_the_default_recipe_and_paper_stays_available(tmp_path):
    from cover.config import resolve_pretrain_config
    from cover.methods.cover import DEFAULT_RECIPE

    assert DEFAULT_RECIPE == "vicreg"
    assert resolve_pretrain_config({}).method_options == {"recipe": "vicreg"}
    assert resolve_pretrain_config({"method_options": {"recipe": "paper"}}).method_options == {"recipe": "paper"}
    assert resolve_pretrain_config({"method": "simclr"}).method_options == {}
    summary = pretrain(**tiny(tmp_path / "run", steps=1))
    assert summary["recipe"] == "vicreg" and "final_loss_var" in summary
    assert "recipe: vicreg" in (tmp_path / "run" / "config.yaml").read_text()


def quick_compile(monkeypatch):
    """``torch.compile`` with the ``aot_eager`` backend: Dynamo and AOT autograd trace what inductor
    would get (graph breaks and wrapper bugs show), without minutes of C++ compilation on a CPU."""
    import functools

    import torch

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


def test_compiled_pretraining_runs_and_records_the_mov_schedule(tmp_path, monkeypatch):
    # The fused MoV is traced with the model; the chunked one (the CPU default) is left out of the
    # graph by torch.compiler.disable and ran with inductor by hand (the command, benchmarks/RESULTS.md).
    quick_compile(monkeypatch)
    schedule = "fused"
    model = {**TINY_MODEL, "mov_schedule": schedule}
    summary = pretrain(**tiny(tmp_path / "run", steps=2, compile=True, checkpoint_every=2, model=model))
    log = read_log(tmp_path / "run" / "log.csv")
    assert summary["steps"] == 2 and log["step"] == [1, 2]
    assert all(np.isfinite(log["loss"])) and np.isfinite(summary["epe"])
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "compile: true" in saved and f"mov_schedule: {schedule}" in saved
    with pytest.raises(ConfigError, match="model.mov_schedule: 'tiled' is not allowed"):
        pretrain(**tiny(tmp_path / "bad", model={**TINY_MODEL, "mov_schedule": "tiled"}))


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_half_precision_pretraining_completes_on_cpu(tmp_path, amp):
    """fp16 (with the grad scaler) and bf16 autocast each run a short pretraining to the end, every step finite."""
    summary = pretrain(**tiny(tmp_path / amp, steps=4, checkpoint_every=4, amp=amp))
    # fp16's scaler starts at 2^16 and skips the steps whose gradients overflow while it lowers the scale
    assert summary["nonfinite_steps"] <= (2 if amp == "fp16" else 0) and np.isfinite(summary["final_loss"]), summary
    assert f"amp: {amp}" in (tmp_path / amp / "config.yaml").read_text()
    scaler = torch.load(summary["checkpoint"], weights_only=True)["scaler"]
    assert bool(scaler) == (amp == "fp16")  # fp16 scales the loss (its state is checkpointed); bf16 does not
    if amp == "fp16":
        assert scaler["scale"] == 2.0**16 / 2 ** summary["nonfinite_steps"]  # halved once per skipped step
