"""Configuration: defaults, coercion, YAML in and out, and one-line errors for bad values."""

from __future__ import annotations

import json

import pytest
import yaml

from cover.config import (
    ViewConfig,
    deep_merge,
    load_yaml,
    resolve_pretrain_config,
    save_yaml,
    to_dict,
    update_dataclass,
)
from cover.errors import ConfigError

TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}


def test_demo_and_data_defaults():
    demo = resolve_pretrain_config({})
    assert demo.is_demo and demo.size == (64, 64) and demo.batch_size == 4 and demo.lr == 1e-3
    data = resolve_pretrain_config({"data": "/scans"})
    assert data.size == (384, 384) and data.batch_size == 24 and data.steps == 200_000
    assert data.lr == pytest.approx(1e-3 * (24 / 4) ** 0.5)  # 1e-3 x sqrt(batch/4), not the paper's rule
    assert data.warmup_steps == 200_000 // 20 and data.checkpoint_every == 1000
    assert data.views == ViewConfig.reference(2)
    three = resolve_pretrain_config({"data": "/ct", "dim": 3, "size": 64, "batch_size": 2})
    assert three.size == (64, 64, 64) and three.lr == pytest.approx(1e-3 * (2 / 4) ** 0.5)
    assert three.views == ViewConfig.reference(3)
    short = resolve_pretrain_config({"steps": 7})
    assert short.checkpoint_every == 7 and short.warmup_steps == 20  # the demo's own warm-up stays


def test_values_are_coerced_from_text():
    config = resolve_pretrain_config(
        {"size": "32x48", "steps": "12", "lr": "2e-3", "compile": "yes", "spacing": "1.5,1.5,2", "model": TINY_MODEL}
    )
    assert config.size == (32, 48) and config.steps == 12 and config.lr == 2e-3 and config.compile is True
    assert config.spacing == (1.5, 1.5, 2.0) and config.model.channels == (8, 16, 32, 16, 8)
    assert resolve_pretrain_config({"steps": 10.0}).steps == 10


def test_nested_settings_keep_the_others():
    base = resolve_pretrain_config({})
    config = update_dataclass(base, {"views": {"rotation_deg": 5}, "model": {"window_radius": 3}})
    assert config.views.rotation_deg == 5.0 and config.views.translation == base.views.translation
    assert config.model.window_radius == 3 and config.model.channels == base.model.channels


def test_deep_merge():
    base = {"model": {"channels": [8], "head_dim": 4}, "steps": 3, "lr": 1.0}
    merged = deep_merge(base, {"model": {"head_dim": 2}, "steps": None, "lr": 0.5})
    assert merged == {"model": {"channels": [8], "head_dim": 2}, "steps": 3, "lr": 0.5}
    assert base["model"]["head_dim"] == 4  # the input is not changed


def test_yaml_round_trip_is_plain(tmp_path):
    config = resolve_pretrain_config({"size": 32, "model": TINY_MODEL, "views": {"scale_range": [0.9, 1.1]}})
    save_yaml(config, tmp_path / "config.yaml")
    values = load_yaml(tmp_path / "config.yaml")
    json.dumps(values)  # only plain values: no tuples, no objects
    assert json.loads(json.dumps(to_dict(config))) == values
    assert resolve_pretrain_config(values) == config
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}


BAD_KEYS_AND_TYPES = [
    ({"stepz": 3}, "stepz: unknown key, did you mean steps?"),
    ({"model": {"chanels": [8]}}, "model.chanels: unknown key, did you mean model.channels?"),
    ({"views": {"zoom": 2}}, "views.zoom: unknown key (allowed: rotation_deg,"),
    ({"steps": "ten"}, "steps: expected an integer, got 'ten'"),
    ({"steps": 2.5}, "steps: expected an integer, got 2.5"),
    ({"batch_size": True}, "batch_size: expected an integer, got True"),
    ({"lr": "fast"}, "lr: expected a number, got 'fast'"),
    ({"compile": "maybe"}, "compile: expected true or false, got 'maybe'"),
    ({"model": 5}, "model: expected a mapping of settings, got 5"),
    ({"method_options": [1]}, "method_options: expected a mapping, got [1]"),
    ({"views": {"scale_range": [1, 2, 3]}}, "views.scale_range: expected 2 values, got [1, 2, 3]"),
    ({"out": ["a"]}, "out: expected a string, got ['a']"),
    ({"dim": 4}, "dim: 4 is not allowed (allowed: 2, 3)"),
    ({"amp": "fp32"}, "amp: 'fp32' is not allowed (allowed: auto, none, bf16, fp16)"),
    ({"on_bad_file": "ignore"}, "on_bad_file: 'ignore' is not allowed (allowed: skip, error)"),
]

IMPOSSIBLE_VALUES = [
    ({"size": 30}, "size: [30, 30] must be positive multiples of 16 (the U-Net down-samples 4 times)"),
    ({"size": 30, "model": TINY_MODEL}, "size: [30, 30] must be positive multiples of 4"),
    ({"size": 0}, "size: [0, 0] must be positive multiples of 16"),
    ({"size": [32, 32, 32]}, "size: [32, 32, 32] has 3 values, expected 1 or 2"),
    ({"lr": -0.1}, "lr: -0.1 must be positive"),
    ({"lr": 0}, "lr: 0.0 must be positive"),
    ({"model": {"window_radius": 0}}, "model.window_radius: 0 is not allowed (allowed: integers >= 1)"),
    ({"model": {"head_dim": 0}}, "model.head_dim: must be at least 1"),
    ({"model": {"heads": [1, 1]}}, "model.heads: needs one entry per pyramid level (5)"),
    ({"model": {"heads": [4, 4, 0, 1, 1]}}, "model.heads: entries must be >= 1"),
    ({"batch_size": 0}, "batch_size: must be at least 1"),
    ({"steps": 0}, "steps: must be at least 1"),
    ({"weight_decay": -1}, "weight_decay: must be >= 0"),
    ({"warmup_steps": -1}, "warmup_steps: must be >= 0"),
    ({"grad_clip": -1}, "grad_clip: must be >= 0 (0 disables clipping)"),
    ({"checkpoint_every": 0}, "checkpoint_every: must be at least 1"),
    ({"checkpoint_minutes": 0}, "checkpoint_minutes: must be positive"),
    ({"keep_checkpoints": 0}, "keep_checkpoints: must be at least 1"),
    ({"max_nonfinite_steps": 0}, "max_nonfinite_steps: must be at least 1"),
    ({"log_every": 0}, "log_every: must be at least 1"),
    ({"num_workers": -1}, "num_workers: must be >= 0"),
    ({"cache_memory_mb": 0}, "cache_memory_mb: must be positive"),
    ({"eval_pairs": 0}, "eval_pairs: must be at least 1"),
    ({"in_channels": 0}, "in_channels: must be at least 1"),
    ({"slice_axis": 3}, "slice_axis: must be 0, 1 or 2"),
    ({"spacing": [1, -1, 1]}, "spacing: [1.0, -1.0, 1.0] is not allowed (allowed: positive voxel sizes in mm)"),
    ({"views": {"source_scale": 0.5}}, "views.source_scale: must be >= 1"),
    ({"views": {"scale_range": [1.2, 0.8]}}, "views.scale_range: needs 0 < low <= high"),
    ({"views": {"block_prob": 2}}, "views.block_prob: must be in [0, 1]"),
    ({"views": {"block_size_range": [0.1, 2]}}, "views.block_size_range: needs 0 < low <= high <= 1"),
    ({"views": {"contrast_range": [1.5, 0.5]}}, "views.contrast_range: needs 0 <= low <= high"),
    ({"views": {"gamma_range": [0.0, 1.5]}}, "views.gamma_range: needs 0 < low <= high"),
    ({"views": {"bias_std": -0.1}}, "views.bias_std: must be >= 0"),
    ({"views": {"bias_spacing": 1.5}}, "views.bias_spacing: must be in (0, 1]"),
    ({"views": {"max_blocks": -1}}, "views.max_blocks: must be >= 0"),
    ({"views": {"num_rotations": 3}}, "views.num_rotations: must be 0, 1 or 2"),
    ({"views": {"translation": -0.1}}, "views.translation: must be >= 0"),
    ({"views": {"noise_std_max": -1}}, "views.noise_std_max: must be >= 0"),
    ({"views": {"elastic_spacing": 0}}, "views.elastic_spacing: must be positive"),
    ({"con_weight": -1}, "con_weight: must be >= 0"),
    ({"device": "gpu0"}, "device: 'gpu0' is not a device (allowed: auto, cpu, cuda, cuda:N)"),
    ({"device": "meta"}, "device: 'meta' is not supported (allowed: auto, cpu, cuda, cuda:N)"),
    ({"intensity": "ct:abc"}, "intensity: parameters of 'ct:abc' must be numbers"),
]


@pytest.mark.parametrize("values, message", BAD_KEYS_AND_TYPES + IMPOSSIBLE_VALUES)
def test_unknown_keys_wrong_types_and_impossible_values(values, message):
    """Each gives one line naming the key and what is allowed, before any work starts."""
    with pytest.raises(ConfigError) as error:
        resolve_pretrain_config(values)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {channels: [8, 16\n", "invalid YAML at line 2"),
        ("- 1\n- 2\n", "the config must be a mapping of keys to values"),
        ("a: b: c\n", "invalid YAML at line 1: mapping values are not allowed here"),
    ],
)
def test_bad_yaml(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="^" + str(path).replace(".", r"\.") + ": ") as error:
        load_yaml(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_binary_and_missing_yaml(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match="bin.yaml: not a text file"):
        load_yaml(tmp_path / "bin.yaml")
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_invalid_config_fails_before_any_work(tmp_path):
    from cover.pretraining.pretrain import pretrain

    with pytest.raises(ConfigError, match="lr: -1.0 must be positive"):
        pretrain(out=str(tmp_path / "run"), lr=-1)
    with pytest.raises(ConfigError, match="method_options: 'temprature' is not an option of method 'cover'"):
        pretrain(out=str(tmp_path / "run"), size=32, model=TINY_MODEL, method_options={"temprature": 1})
    assert not (tmp_path / "run").exists()


def test_3d_demo_uses_its_small_network_unless_the_user_names_one():
    demo = resolve_pretrain_config({"dim": 3})
    assert demo.model.channels == (16, 32, 64, 128, 64, 32, 16) and demo.model.heads == (4, 4, 1, 1)
    assert demo.model.window_radius == 1 and demo.size == (24, 24, 24) and demo.views.rotation_deg == 15.0
    assert demo.steps == 1000 and demo.warmup_steps == 50 and demo.batch_size == 1
    assert resolve_pretrain_config({"dim": 3, "model": {"window_radius": 2}}).model.channels == demo.model.channels
    monai = resolve_pretrain_config({"dim": 3, "model": {"backbone": "monai-basicunet"}})
    assert monai.model.channels == (32, 64, 128, 256, 512, 256, 128, 64, 32) and len(monai.model.heads) == 5
    assert monai.size == (32, 32, 32)  # the demo's 24^3 rounded up to the 4-down-sampling network's 16
    paper = resolve_pretrain_config({"dim": 3, "model": {"channels": [8, 16, 32, 64, 128, 64, 32, 16, 8]}})
    assert paper.size == (32, 32, 32) and resolve_pretrain_config({"dim": 3, "size": 48}).size == (48, 48, 48)
    with pytest.raises(ConfigError, match="multiples of 16"):
        resolve_pretrain_config({"dim": 3, "size": 24, "model": {"channels": [8, 16, 32, 64, 128, 64, 32, 16, 8]}})
    assert resolve_pretrain_config({"dim": 3, "data": "/ct"}).model.channels[4] == 512


def test_only_the_3d_demo_trains_channels_last_by_default():
    assert resolve_pretrain_config({"dim": 3}).channels_last
    assert not resolve_pretrain_config({"dim": 3, "channels_last": False}).channels_last
    assert not resolve_pretrain_config({"dim": 3, "data": "/ct"}).channels_last
    assert not resolve_pretrain_config({"dim": 2}).channels_last
    assert resolve_pretrain_config({"dim": 2, "data": "/cxr", "channels_last": "true"}).channels_last


def test_default_output_folder_depends_on_the_dimension_also_on_resume(tmp_path, monkeypatch):
    from cover.config import default_pretrain_out, run_values

    assert resolve_pretrain_config({}).out == "cover_runs/pretrain"
    assert resolve_pretrain_config({"dim": 3}).out == "cover_runs/pretrain-3d"
    assert resolve_pretrain_config({"dim": 3, "out": "mine"}).out == "mine"
    monkeypatch.chdir(tmp_path)
    saved = tmp_path / "cover_runs" / "pretrain-3d"
    saved.mkdir(parents=True)
    (saved / "config.yaml").write_text("dim: 3\nsteps: 7\n")
    values = run_values({}, {"dim": 3, "resume": "auto"}, lambda v: default_pretrain_out(v.get("dim", 2)))
    assert values["steps"] == 7  # the 3D run's own settings, found without --out


def test_network_options_at_the_top_of_a_yaml_file_go_under_model(tmp_path):
    from cover.config import lift_model_keys, resolve_pretrain_config, run_values
    from cover.downstream.config import resolve_finetune_config

    path = tmp_path / "top.yaml"
    path.write_text("window_radius: 1\nheads: [2, 2, 1]\nchannels: [8, 16, 32, 16, 8]\nhead_dim: 4\n")
    config = resolve_pretrain_config(run_values(str(path), {}, "out"))
    assert config.model.window_radius == 1 and config.model.heads == (2, 2, 1)
    assert config.model.channels == (8, 16, 32, 16, 8) and config.model.head_dim == 4
    # the command line (nested, as cover.cli.pretrain builds it) wins over the file's top level
    config = resolve_pretrain_config(run_values(str(path), {"model": {"window_radius": 3}}, "out"))
    assert config.model.window_radius == 3
    assert resolve_finetune_config({"channels": [8, 16, 32, 16, 8]}).model.channels == (8, 16, 32, 16, 8)
    assert lift_model_keys({"steps": 3, "model": {"heads": [1]}}) == {"steps": 3, "model": {"heads": [1]}}
    with pytest.raises(ConfigError, match=r"^window_radius: given as 1 and as model.window_radius 2; give it once$"):
        lift_model_keys({"window_radius": 1, "model": {"window_radius": 2}})


def test_default_learning_rate_scales_with_the_square_root_of_the_batch():
    from cover.config import default_lr, resolve_pretrain_config

    assert resolve_pretrain_config({"data": "d", "dim": 2, "batch_size": 4}).lr == pytest.approx(1e-3)
    assert resolve_pretrain_config({"data": "d", "dim": 2, "batch_size": 1}).lr == pytest.approx(5e-4)
    assert resolve_pretrain_config({"data": "d", "dim": 2}).lr == pytest.approx(1e-3 * 6**0.5)  # batch 24
    assert resolve_pretrain_config({"data": "d", "dim": 2, "batch_size": 4, "lr": 3e-4}).lr == 3e-4
    assert default_lr(16) == pytest.approx(2e-3)


def test_lr_notes_name_the_rule_and_warn_about_far_too_small_rates():
    from cover.config import lr_notes

    assert lr_notes(1e-3, 4) == ("default 1e-3 x sqrt(batch/4)", None)
    assert lr_notes(3e-4, 4) == ("configured", None)  # 3x below: a choice, not a mistake
    origin, warning = lr_notes(1e-4 * 4 / 256, 4)  # the paper's rule at batch 4
    assert origin == "configured"
    assert warning == (
        "warning: lr 1.56e-06 is 640x below 0.001 (1e-3 x sqrt(batch/4) at batch 4), "
        "the rate pretraining has been measured to learn with; it may learn nothing"
    )


def test_resuming_a_run_saved_before_recipes_keeps_the_paper_objective(tmp_path):
    from cover.config import run_values, save_yaml

    out = tmp_path / "old_run"
    out.mkdir()
    save_yaml({"method": "cover", "method_options": {}, "steps": 10, "out": str(out)}, out / "config.yaml")
    values = run_values(None, {"out": str(out), "resume": "auto"}, "unused")
    assert values["method_options"] == {"recipe": "paper"}
    # A run that names its recipe keeps it, and a fresh run is not touched.
    save_yaml({"method": "cover", "method_options": {"recipe": "vicreg"}, "out": str(out)}, out / "config.yaml")
    assert run_values(None, {"out": str(out), "resume": "auto"}, "unused")["method_options"] == {"recipe": "vicreg"}
    assert "method_options" not in run_values(None, {"out": str(out)}, "unused")


# ---------------------------------------------------------------- one name: intensity


@pytest.mark.parametrize("resolve", ["pretrain", "finetune"])
def test_intensity_is_the_key_and_preset_its_old_name_read_with_a_notice(resolve, tmp_path, caplog):
    from cover.config import save_yaml
    from cover.downstream.config import resolve_finetune_config

    def run(values):
        return resolve_pretrain_config(values) if resolve == "pretrain" else resolve_finetune_config(values)

    with caplog.at_level("WARNING"):
        new = run({"intensity": "ct:-175,250"})
    assert new.intensity == "ct:-175,250" and caplog.messages == []
    with caplog.at_level("WARNING"):
        old = run({"preset": "ct:-175,250"})
    assert old == new
    assert caplog.messages == ["preset is deprecated (the intensity preset): use intensity"]
    with pytest.raises(ConfigError, match="intensity: given as 'ct' and under its old name preset as 'mri'"):
        run({"intensity": "ct", "preset": "mri"})
    save_yaml(new, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "intensity: ct:-175,250" in text and "preset" not in text


def test_a_run_saved_by_an_older_version_with_preset_resumes_silently(tmp_path, caplog):
    from cover.config import run_values

    (tmp_path / "config.yaml").write_text("preset: mri\ndim: 2\nsteps: 5\n")
    with caplog.at_level("WARNING"):
        values = run_values({"out": str(tmp_path), "resume": "auto"}, {}, "unused")
        config = resolve_pretrain_config(values)
    assert config.intensity == "mri" and config.steps == 5 and "preset" not in values
    assert caplog.messages == []  # the user did not write the old name: nothing to change


def test_the_python_api_takes_intensity_and_its_old_name():
    from cover.config import intensity_argument

    assert intensity_argument("ct", None) == "ct"
    assert intensity_argument(None, "mri") == "mri"
    with pytest.raises(ConfigError, match="intensity: given as 'ct'"):
        intensity_argument("ct", "mri")


def test_an_unknown_finetune_key_names_its_section_and_the_nearest_key():
    from cover.downstream.config import resolve_finetune_config

    with pytest.raises(ConfigError) as error:
        resolve_finetune_config({"augment": {"flip_prb": 0.0}})
    assert str(error.value) == "augment.flip_prb: unknown key, did you mean augment.flip_prob?"


def test_recipe_paper_with_data_is_the_release_run_and_leaves_the_demo_and_other_recipes_alone():
    """``--recipe paper --data``: lr 1e-4 * batch / 256, 467,200 steps (100 epochs of 112,120 images
    at batch 24), no warm-up, the authors' U-Net initialisation; values the user gives still win."""
    from cover.config import lr_notes, resolve_pretrain_config

    paper = resolve_pretrain_config({"data": "d", "method_options": {"recipe": "paper"}, "views": "authors"})
    assert paper.lr == pytest.approx(9.375e-6) and paper.steps == 100 * -(-112_120 // 24) == 467_200
    assert paper.warmup_steps == 0 and paper.model.backbone_args == {"init": "authors"}
    assert paper.views.style == "authors" and paper.views.rotation_deg == 30.0  # the reference ranges
    assert lr_notes(paper.lr, 24, "paper")[0] == "recipe paper: 1e-4 x batch/256"
    given = resolve_pretrain_config(
        {"data": "d", "method_options": {"recipe": "paper"}, "batch_size": 48, "steps": 10, "lr": 1e-3}
    )
    assert (given.lr, given.steps, given.warmup_steps) == (1e-3, 10, 0)
    assert resolve_pretrain_config({"data": "d", "method_options": {"recipe": "paper"}, "batch_size": 48}).lr == (
        pytest.approx(1e-4 * 48 / 256)
    )
    default = resolve_pretrain_config({"data": "d"})
    assert (default.steps, default.model.backbone_args, default.views.style) == (200_000, {}, "cover")
    demo = resolve_pretrain_config({"method_options": {"recipe": "paper"}})
    assert (demo.lr, demo.steps, demo.warmup_steps, demo.model.backbone_args) == (1e-3, 300, 20, {})
    three = resolve_pretrain_config({"data": "d", "dim": 3, "method_options": {"recipe": "paper"}})
    assert three.lr == pytest.approx(1e-4 * 4 / 256) and three.steps == 100_000
    with pytest.raises(ConfigError, match=r"^views.style: 'paper' is not allowed \(allowed: cover, authors\)$"):
        resolve_pretrain_config({"views": "paper"})


def test_pretrain_views_option_names_the_style_and_rejects_others_in_one_line(monkeypatch, capsys, tmp_path):
    from _support.cli import run_cli_output

    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli_output(["pretrain", "--views", "authors", "--dry-run"], monkeypatch, capsys)
    views = yaml.safe_load(out)["views"]
    assert code == 0 and views["style"] == "authors" and views["rotation_deg"] == 10.0  # the demo's ranges stay
    code, _, lines = run_cli_output(["pretrain", "--views", "bogus", "--dry-run"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: views.style: 'bogus' is not allowed (allowed: cover, authors)"]
