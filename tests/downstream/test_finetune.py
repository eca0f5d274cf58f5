import json
import logging
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

import cover
from cover.downstream.evaluate import evaluate
from cover.downstream.finetune import finetune
from cover.downstream.predict import predict
from cover.engine.checkpoint import load_checkpoint
from cover.errors import ConfigError

RUN_FILES = ("config.yaml", "split.json", "log.csv", "curves.png", "best.pt", "last.pt", "summary.json", "tensorboard")


TINY = {"channels": [8, 16, 32, 16, 8]}


def seg_options(images, labels, out, dim, **extra):
    options = {
        "images": images,
        "labels": labels,
        "dim": dim,
        "size": 32 if dim == 2 else 16,
        "batch_size": 8 if dim == 2 else 4,
        "steps": 120 if dim == 2 else 100,
        "lr": 1e-2,
        "val_every": 40,
        "model": TINY,
        "out": str(out),
    }
    options.update(extra)
    return options


@pytest.fixture(scope="module")
def trained3d(seg3d, tmp_path_factory):
    out = tmp_path_factory.mktemp("run3d")
    summary = finetune(**seg_options(*seg3d, out / "run", dim=3))
    return out / "run", summary


def test_api_names_resolve():
    assert cover.finetune is finetune and cover.evaluate is evaluate and cover.predict is predict


def test_scratch_2d_learns_the_shapes(seg2d, seg_task, tmp_path):
    summary = finetune(**seg_options(*seg2d, tmp_path / "run", dim=2))
    for name in RUN_FILES:
        assert (tmp_path / "run" / name).exists(), name
    assert summary["num_train"] + summary["num_val"] == 24 and summary["steps"] == 120
    # Held-out cases drawn with another seed, never seen in training or validation.
    test_images, test_labels = seg_task(tmp_path / "test", dim=2, n=8, side=32, seed=99)
    result = evaluate(summary["checkpoint"], test_images, test_labels, out=tmp_path / "eval")
    assert result["mean_dice"] >= 0.8, result
    assert set(result["classes"]) == {"1", "2"} and result["num_cases"] == 8
    for name in ("metrics.csv", "metrics.json", "cases.png", "config.yaml"):
        assert (tmp_path / "eval" / name).is_file()
    rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["case", "image", "label", "dice_1", "dice_2"] and len(rows) == 9


def test_bf16_fine_tuning_learns_like_float32(seg2d, seg_task, tmp_path):
    """bf16 autocast on CPU: the same recipe reaches the same quality (weights stay float32)."""
    summary = finetune(**seg_options(*seg2d, tmp_path / "run", dim=2, amp="bf16"))
    test_images, test_labels = seg_task(tmp_path / "test", dim=2, n=8, side=32, seed=99)
    result = evaluate(summary["checkpoint"], test_images, test_labels, out=tmp_path / "eval")
    assert result["mean_dice"] >= 0.8, result
    weights = torch.load(summary["checkpoint"], weights_only=True)["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    # fp16 (with loss scaling) also runs on the CPU, slowly: a short run completes with finite losses
    half = finetune(**seg_options(*seg2d, tmp_path / "fp16", dim=2, amp="fp16", device="cpu", steps=6, val_every=3))
    assert half["nonfinite_steps"] <= 2 and math.isfinite(half["final_loss"]), half  # the scaler's first overflows
    with pytest.raises(ConfigError, match="amp: 'fp8' is not allowed"):
        finetune(**seg_options(*seg2d, tmp_path / "fp8", dim=2, amp="fp8"))


def test_scratch_3d_learns_and_predicts_in_the_input_geometry(trained3d, seg_task, oblique_affine, tmp_path):
    run, summary = trained3d
    test_images, test_labels = seg_task(tmp_path / "test", dim=3, n=4, side=16, seed=99)
    result = evaluate(run / "best.pt", test_images, test_labels, out=tmp_path / "eval")
    assert result["mean_dice"] >= 0.8, result
    assert result["mean_hd95"] >= 0  # in mm of the oblique affine
    written = predict(run / "best.pt", test_images, out=tmp_path / "pred")["outputs"]
    assert len(written) == 4
    for path in written:
        mask, source = nib.load(path), nib.load(path.replace(str(tmp_path / "pred"), test_images))
        np.testing.assert_allclose(mask.affine, oblique_affine, atol=1e-6)
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-6)
        assert mask.shape == source.shape and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
    truth = np.asarray(nib.load(test_labels + "/case00.nii.gz").dataobj)
    predicted = np.asarray(nib.load(written[0]).dataobj)
    assert (predicted == truth).mean() > 0.9  # the mask lines up voxel for voxel with the file


def test_predict_png_stays_png(seg2d, tmp_path):
    summary = finetune(**seg_options(*seg2d, tmp_path / "run", dim=2, steps=2, val_every=2))
    folder = tmp_path / "pngs"
    folder.mkdir()
    image = np.load(seg2d[0] + "/case00.npy")
    Image.fromarray(np.clip(image * 200, 0, 255).astype(np.uint8)).save(folder / "a.png")
    written = predict(summary["checkpoint"], str(folder), out=tmp_path / "pred")["outputs"]
    assert [p.rsplit("/", 1)[1] for p in written] == ["a.png"]
    assert np.asarray(Image.open(written[0])).shape == (32, 32)


def test_classification_separates_a_trivial_task(cls_task, tmp_path):
    images = cls_task(tmp_path / "data", n=24)
    summary = finetune(
        task="cls",
        images=images,
        dim=2,
        size=32,
        batch_size=8,
        steps=40,
        lr=1e-2,
        val_fraction=0.25,
        val_every=20,
        model=TINY,
        out=str(tmp_path / "run"),
    )
    assert summary["class_names"] == ["disc", "empty"] and summary["best_val_auc"] >= 0.9, summary
    test = cls_task(tmp_path / "test", n=12, seed=5)
    result = evaluate(summary["checkpoint"], test, out=tmp_path / "eval")
    assert result["auc"] >= 0.9 and result["accuracy"] >= 0.75, result
    predictions = predict(summary["checkpoint"], test, out=tmp_path / "pred")["outputs"][0]
    assert (tmp_path / "pred" / "predictions.csv").is_file() and predictions.endswith("predictions.csv")


def test_validation_without_any_score_neither_stops_early_nor_loses_the_checkpoint(
    seg2d, tmp_path, monkeypatch, caplog
):
    # Every validation unscorable (no class in any label or prediction): NaN must not count as
    # "no improvement" (patience 1 would stop at the second validation) and best.pt must exist.
    import cover.downstream.finetune_task as task_module

    monkeypatch.setattr(task_module, "validation_score", lambda *a, **k: {"score": math.nan, "val_dice": math.nan})
    options = seg_options(*seg2d, tmp_path / "run", dim=2, steps=12, val_every=3, patience=1)
    with caplog.at_level(logging.WARNING, logger="cover"):
        summary = finetune(**options)
    assert summary["steps"] == 12 and summary["best_val_dice"] is None and summary["best_step"] == 12
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert summary["checkpoint"] == str(tmp_path / "run" / "best.pt")
    for key, value in last["model"].items():
        assert torch.equal(best["model"][key], value), key
    assert any("no validation gave a score" in r.getMessage() for r in caplog.records)


def test_split_is_reproducible_and_written(seg2d, tmp_path):
    def split(out, seed):
        options = seg_options(*seg2d, out, dim=2, steps=1, val_every=1, label_fraction=0.25, seed=seed)
        finetune(**options, augment={"enabled": False})
        return json.loads((out / "split.json").read_text())

    a, b, c = split(tmp_path / "a", 3), split(tmp_path / "b", 3), split(tmp_path / "c", 4)
    assert a == b and a != c
    assert len(a["val"]) == 5 and len(a["train"]) == 5 and len(a["unused"]) == 14  # ceil(0.25 * 19)
    names = {e["name"] for part in ("train", "val", "unused") for e in a[part]}
    assert len(names) == 24
    assert all(e["label"].endswith("_seg.png") for e in a["train"])
    with pytest.raises(ConfigError, match="num_labeled"):
        finetune(**seg_options(*seg2d, tmp_path / "d", dim=2, steps=1, num_labeled=30))


def test_refuses_a_folder_of_another_run(seg2d, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "other.txt").write_text("x")
    with pytest.raises(ConfigError, match="already holds files"):
        finetune(**seg_options(*seg2d, tmp_path / "run", dim=2, steps=1))


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    """A tiny 2-step COVER pretraining run on the demo data; its checkpoint."""
    from cover.pretraining.pretrain import pretrain

    out = tmp_path_factory.mktemp("pretrain") / "pre"
    pretrain(
        out=str(out), dim=2, size=32, batch_size=2, steps=2, eval_pairs=4, checkpoint_every=2,
        model={"channels": TINY["channels"], "heads": [2, 2, 1], "head_dim": 4},
    )  # fmt: skip
    return out / "checkpoints" / "step_00000002.pt"


def test_pretrained_backbone_is_loaded_exactly(pretrain_run, seg2d, tmp_path):
    source = load_checkpoint(pretrain_run)
    pretrained = {k: v for k, v in source["model"].items() if k.startswith("backbone.")}
    options = seg_options(*seg2d, tmp_path / "probe", dim=2, steps=3, val_every=3, freeze="all")
    options.pop("model")
    summary = finetune(pretrained=str(pretrain_run.parent), **options)
    assert summary["pretrained"].endswith("step_00000002.pt")
    probe = load_checkpoint(tmp_path / "probe" / "last.pt")
    assert probe["metadata"]["preset"] == "mri" == source["metadata"]["data"]["preset"]
    for key, value in pretrained.items():  # linear probe: the whole backbone stays as pretrained
        assert torch.equal(probe["model"][key], value), key
    run_folder = str(pretrain_run.parent.parent)
    fresh = finetune(pretrained=run_folder, **{**options, "freeze": "encoder", "out": str(tmp_path / "ft")})
    tuned = load_checkpoint(fresh["last_checkpoint"])["model"]
    assert all(torch.equal(tuned[k], v) for k, v in pretrained.items() if k.startswith("backbone.encoder."))
    assert not all(torch.equal(tuned[k], v) for k, v in pretrained.items() if k.startswith("backbone.decoder."))


def test_freeze_steps_hold_the_pretrained_backbone_then_release_it(pretrain_run, seg2d, tmp_path):
    source = load_checkpoint(pretrain_run)
    pretrained = {k: v for k, v in source["model"].items() if k.startswith("backbone.")}
    options = seg_options(*seg2d, tmp_path / "lpft", dim=2, steps=4, val_every=4, warmup_steps=1)
    options.pop("model")
    finetune(
        pretrained=str(pretrain_run), freeze_steps=2, backbone_lr_scale=0.5, checkpoint_every=1,
        keep_checkpoints=4, **options,
    )  # fmt: skip
    for step, frozen in ((1, True), (2, True), (3, False)):
        state = load_checkpoint(tmp_path / "lpft" / "checkpoints" / f"step_{step:08d}.pt")
        same = [torch.equal(state["model"][k], v) for k, v in pretrained.items()]
        assert all(same) if frozen else not all(same), step
        head, backbone = state["optimizer"]["param_groups"]
        assert backbone["lr"] == (0.0 if step < 2 else pytest.approx(0.5 * head["lr"])), step


def test_transfer_encoder_starts_the_decoder_fresh_like_an_encoder_only_export(pretrain_run, seg2d, tmp_path):
    from cover.models.export import export

    source = load_checkpoint(pretrain_run)["model"]
    options = seg_options(*seg2d, tmp_path / "enc", dim=2, steps=1, val_every=1, freeze="all")
    options.pop("model")
    tuned = load_checkpoint(finetune(pretrained=str(pretrain_run), transfer="encoder", **options)["last_checkpoint"])
    folder = export(pretrain_run, tmp_path / "export", encoder_only=True)
    exported = finetune(pretrained=str(folder), **{**options, "out": str(tmp_path / "exp")})
    reference = load_checkpoint(exported["last_checkpoint"])["model"]
    backbone = [k for k in tuned["model"] if k.startswith("backbone.")]
    assert all(torch.equal(tuned["model"][k], reference[k]) for k in backbone)
    encoder = [k for k in backbone if k.startswith("backbone.encoder.")]
    decoder = [k for k in backbone if k.startswith("backbone.decoder.") and k.endswith("weight")]
    assert encoder and all(torch.equal(tuned["model"][k], source[k]) for k in encoder)
    assert decoder and not any(torch.equal(tuned["model"][k], source[k]) for k in decoder)


def test_pretrained_from_an_export_folder(pretrain_run, seg2d, tmp_path):
    from cover.models.export import export

    source = load_checkpoint(pretrain_run)
    options = seg_options(*seg2d, tmp_path / "probe", dim=2, steps=1, val_every=1, freeze="all")
    options.pop("model")
    for encoder_only in (False, True):
        folder = export(pretrain_run, tmp_path / f"export{encoder_only}", encoder_only=encoder_only)
        out = tmp_path / f"probe{encoder_only}"
        summary = finetune(pretrained=str(folder), **{**options, "out": str(out)})
        probe = load_checkpoint(summary["last_checkpoint"])["model"]
        part = "backbone.encoder." if encoder_only else "backbone."
        compared = [k for k in source["model"] if k.startswith(part)]
        assert compared and all(torch.equal(probe[k], source["model"][k]) for k in compared)


def test_channels_last_fine_tuning_matches_the_default_layout(seg2d, tmp_path):
    from cover.engine.logger import read_log

    runs = {}
    for name, extra in (("plain", {}), ("channels_last", {"channels_last": True})):
        finetune(**seg_options(*seg2d, tmp_path / name, dim=2, steps=6, val_every=3, log_every=1, **extra))
        runs[name] = read_log(tmp_path / name / "log.csv")
    plain, converted = runs["plain"], runs["channels_last"]
    assert plain["step"] == converted["step"] == list(range(1, 7))
    # Same weights and batch at step 1: only rounding differs. Later steps: Adam's normalised
    # update amplifies rounding in near-zero gradients, so a looser match.
    assert converted["loss"][0] == pytest.approx(plain["loss"][0], rel=1e-5)
    np.testing.assert_allclose(converted["loss"], plain["loss"], rtol=5e-3)
    assert "channels_last: true" in (tmp_path / "channels_last" / "config.yaml").read_text()
    weights = torch.load(tmp_path / "channels_last" / "last.pt", weights_only=True)["model"]
    reference = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)["model"]
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in reference.items()}


def _relabel_all_but_the_labeled_case(seg_task, root, seed):
    """Four cases; the one ``--num-labeled 1`` draws keeps labels 0-2, the others' boxes become 7."""
    from cover.downstream.cases import split_cases

    images, labels = seg_task(root, dim=2, n=4, side=32, seed=seed)
    labeled = split_cases(4, seed=0, val_fraction=0.0, num_labeled=1)["train"]
    for i in set(range(4)) - set(labeled):
        path = f"{labels}/case{i:02d}_seg.png"
        label = np.asarray(Image.open(path))
        Image.fromarray(np.where(label == 2, 7, label).astype(np.uint8)).save(path)
    return images, labels, labeled[0]


def test_classes_come_from_every_label_not_only_the_labeled_subset(seg_task, tmp_path):
    images, labels, labeled = _relabel_all_but_the_labeled_case(seg_task, tmp_path / "task", seed=4)
    assert np.asarray(Image.open(f"{labels}/case{labeled:02d}_seg.png")).max() == 2
    options = dict(num_labeled=1, val_fraction=0.0, steps=2, seed=0)
    # classes 3-6 occur nowhere: 0, 1, 2, 7 are not the indices 0..K-1 unless num_classes says so
    with pytest.raises(Exception, match=r"hold values 0, 1, 2, 7 together; .* pass --label-values 0,1,2,7"):
        finetune(**seg_options(images, labels, tmp_path / "gap", dim=2, **options))
    summary = finetune(**seg_options(images, labels, tmp_path / "run", dim=2, num_classes=8, **options))
    assert summary["num_classes"] == 8 and summary["num_train"] == 1 and summary["num_unused"] == 3
    result = evaluate(summary["checkpoint"], images, labels, out=tmp_path / "eval")  # no "holds label 7"
    assert result["num_cases"] == 4 and set(result["classes"]) == {str(k) for k in range(1, 8)}
    assert result["classes"]["7"]["scored_cases"] == 3


def test_class_names_set_the_number_of_classes(seg_task, tmp_path):
    images, labels, _ = _relabel_all_but_the_labeled_case(seg_task, tmp_path / "task", seed=4)
    names = [f"c{k}" for k in range(9)]
    options = dict(num_labeled=1, val_fraction=0.0, steps=1, seed=0)
    summary = finetune(**seg_options(images, labels, tmp_path / "run", dim=2, class_names=names, **options))
    assert summary["num_classes"] == 9 and summary["class_names"] == names
    with pytest.raises(Exception, match=r"case0\d_seg.png: holds values 0, 1, 7 but class_names has 3 names"):
        finetune(**seg_options(images, labels, tmp_path / "few", dim=2, class_names=["a", "b", "c"], **options))


def test_a_monai_datalist_keeps_its_own_validation_list(tmp_path):
    from types import SimpleNamespace

    from cover.downstream.cases import datalist_validation
    from cover.downstream.finetune import _Data, _select_cases

    entry = {n: {"image": f"raw/imagesTr/{n}_0000.nii.gz", "label": f"raw/labelsTr/{n}.nii.gz"} for n in "abcde"}
    datalist = {
        "training": [entry["a"], entry["c"], entry["d"]],
        "validation": [entry["e"], entry["b"]],
        "test": [{"image": "raw/imagesTs/t_0000.nii.gz"}],  # unlabeled: not a fine-tuning case
    }
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    path = str(tmp_path / "datalist.json")
    assert datalist_validation(path) == [False, False, False, True, True]
    for seed in (0, 1, 2):
        config = SimpleNamespace(task="seg", seed=seed, val_fraction=0.4, label_fraction=None, num_labeled=None)
        train, val, unused, _ = _select_cases(config, _Data(None, None, path, None, None, None))
        assert [c.image.name for c in val] == ["e_0000.nii.gz", "b_0000.nii.gz"]
        assert [c.image.name for c in train] == ["a_0000.nii.gz", "c_0000.nii.gz", "d_0000.nii.gz"] and not unused
    # without a validation list the split is still drawn from the seed
    (tmp_path / "train_only.json").write_text(json.dumps({"training": datalist["training"]}))
    assert datalist_validation(str(tmp_path / "train_only.json")) is None


def test_compiled_fine_tuning_runs_end_to_end(seg2d, tmp_path, monkeypatch):
    import functools

    # aot_eager: Dynamo and AOT autograd trace what inductor would get, without C++ compilation.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    summary = finetune(**seg_options(*seg2d, tmp_path / "run", dim=2, steps=4, val_every=2, compile=True))
    assert summary["steps"] == 4 and (tmp_path / "run" / "best.pt").is_file()
    assert "compile: true" in (tmp_path / "run" / "config.yaml").read_text()
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert not any("_orig_mod" in key for key in weights)  # saved under the plain network's names
