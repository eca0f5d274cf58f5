"""Multi-channel cases (one file per channel) through fine-tuning, evaluation and prediction.

The task is only solvable from channel 1: channel 0 holds the shapes of *another* label map (a
decoy), channel 1 the shapes of the real one. A model fed the channels in the wrong order, or only
channel 0, segments the decoy.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cover.downstream.evaluate import evaluate
from cover.downstream.finetune import finetune
from cover.downstream.predict import predict
from cover.engine.checkpoint import load_checkpoint
from cover.errors import ConfigError, DataError

from .conftest import AFFINE, TINY, shapes_case

NAMES = {"0": "decoy", "1": "signal"}


def write_two_channel_dataset(folder, train=16, test=6, seed=0):
    """nnU-Net raw layout, 2D cases as NIfTI volumes one slice thick on an oblique grid."""
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    for index in range(train + test):
        decoy, _ = shapes_case(rng, 2, 32)
        signal, label = shapes_case(rng, 2, 32)
        images, labels = ("imagesTr", "labelsTr") if index < train else ("imagesTs", "labelsTs")
        name = f"case{index:02d}"
        for channel, data in enumerate((decoy, signal)):
            nib.save(nib.Nifti1Image(data[..., None], AFFINE), folder / images / f"{name}_{channel:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label[..., None], AFFINE), folder / labels / f"{name}.nii.gz")
    dataset = {"channel_names": NAMES, "labels": {"background": 0, "ball": 1, "box": 2}, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


def options(out, **extra):
    values = {
        "dim": 2,
        "size": 32,
        "batch_size": 8,
        "steps": 120,
        "lr": 1e-2,
        "val_every": 40,
        "model": TINY,
        "in_channels": 2,
        "out": str(out),
    }
    return values | extra


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_two_channel_dataset(tmp_path_factory.mktemp("two_channels") / "Dataset003_Two")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("two_channel_run") / "run"
    return finetune(images=str(dataset), **options(out))


def test_two_channel_fine_tuning_learns_from_channel_1_and_keeps_the_order(dataset, trained, tmp_path):
    metadata = load_checkpoint(trained["checkpoint"])["metadata"]
    assert metadata["in_channels"] == 2 and metadata["channel_names"] == ["decoy", "signal"]
    right = evaluate(
        trained["checkpoint"], str(dataset / "imagesTs"), str(dataset / "labelsTs"), out=tmp_path / "right"
    )
    assert right["num_cases"] == 6 and right["mean_dice"] >= 0.75, right
    rows = (tmp_path / "right" / "metrics.csv").read_text().splitlines()
    assert "case16_0000.nii.gz + " in rows[1] and "case16_0001.nii.gz" in rows[1]
    # The same test cases with the channels swapped (a datalist has no channel names to catch it).
    swapped = [
        {
            "image": [f"imagesTs/case{i:02d}_0001.nii.gz", f"imagesTs/case{i:02d}_0000.nii.gz"],
            "label": f"labelsTs/case{i:02d}.nii.gz",
        }
        for i in range(16, 22)
    ]
    (dataset / "swapped.json").write_text(json.dumps(swapped))
    wrong = evaluate(trained["checkpoint"], datalist=str(dataset / "swapped.json"), out=tmp_path / "wrong")
    assert wrong["mean_dice"] <= right["mean_dice"] - 0.3, (wrong["mean_dice"], right["mean_dice"])


def test_predict_groups_a_cases_channel_files_and_writes_case_ext_on_channel_0s_grid(dataset, trained, tmp_path):
    summary = predict(trained["checkpoint"], str(dataset / "imagesTs"), out=tmp_path / "pred")
    assert sorted(p.rsplit("/", 1)[1] for p in summary["outputs"]) == [f"case{i:02d}.nii.gz" for i in range(16, 22)]
    assert summary["cases"][0]["image"] == [
        str(dataset / "imagesTs" / "case16_0000.nii.gz"),
        str(dataset / "imagesTs" / "case16_0001.nii.gz"),
    ]
    agreement = []
    for path in summary["outputs"]:
        mask = nib.load(path)
        name = path.rsplit("/", 1)[1]
        channel0 = nib.load(dataset / "imagesTs" / name.replace(".nii.gz", "_0000.nii.gz"))
        np.testing.assert_allclose(mask.affine, channel0.affine, atol=1e-6)
        assert mask.shape == channel0.shape == (32, 32, 1)
        truth = np.asarray(nib.load(dataset / "labelsTs" / name).dataobj)
        agreement.append((np.asarray(mask.dataobj) == truth).mean())
    assert np.mean(agreement) > 0.9, agreement
    listed = [{"image": ["imagesTs/case17_0000.nii.gz", "imagesTs/case17_0001.nii.gz"]}]
    (tmp_path / "list.json").write_text(json.dumps(listed))
    (tmp_path / "imagesTs").symlink_to(dataset / "imagesTs")
    from_list = predict(trained["checkpoint"], str(tmp_path / "list.json"), out=tmp_path / "listed")
    assert [p.rsplit("/", 1)[1] for p in from_list["outputs"]] == ["case17.nii.gz"]
    np.testing.assert_array_equal(
        nib.load(from_list["outputs"][0]).dataobj, nib.load(tmp_path / "pred" / "case17.nii.gz").dataobj
    )


def test_predict_on_a_dataset_folder_reads_its_images_only_in_dataset_json_order(dataset, trained, tmp_path):
    """The dataset root used to give 22 + 22 + 6 + 6 files: labelsTr/labelsTs predicted as images."""
    summary = predict(trained["checkpoint"], str(dataset), out=tmp_path / "root")
    assert summary["num_images"] == 6 and [c["image"] for c in summary["cases"]] == [
        [str(dataset / "imagesTs" / f"case{i:02d}_{c:04d}.nii.gz") for c in range(2)] for i in range(16, 22)
    ]
    assert [Path(p).relative_to(tmp_path / "root").as_posix() for p in summary["outputs"]] == [
        f"imagesTs/case{i:02d}.nii.gz" for i in range(16, 22)
    ]
    msd = tmp_path / "msd"  # the same cases as an MSD dataset.json without test images: its training images
    msd.mkdir()
    images = [[str(dataset / "imagesTs" / f"case{i}_{c:04d}.nii.gz") for c in range(2)] for i in (16, 17)]
    training = [{"image": image, "label": str(dataset / "labelsTs" / "case16.nii.gz")} for image in images]
    (msd / "dataset.json").write_text(json.dumps({"modality": NAMES, "training": training}))
    listed = predict(trained["checkpoint"], str(msd), out=tmp_path / "msd_out")
    assert [c["image"] for c in listed["cases"]] == [e["image"] for e in training]
    for i in (16, 17):
        np.testing.assert_array_equal(
            nib.load(tmp_path / "msd_out" / f"case{i}.nii.gz").dataobj, nib.load(summary["outputs"][i - 16]).dataobj
        )
    (msd / "dataset.json").write_text(json.dumps({"modality": {"0": "signal", "1": "decoy"}, "training": training}))
    with pytest.raises(DataError, match=r"channel order: .*\['signal', 'decoy'\] but .* trained on"):
        predict(trained["checkpoint"], str(msd), out=tmp_path / "swapped")
    assert not (tmp_path / "swapped").exists()


def test_channel_counts_and_order_are_checked_with_one_line_errors(dataset, trained, tmp_path):
    with pytest.raises(
        ConfigError, match=r"in_channels: 1 but case case00 has 2 channel files .*; pass --in-channels 2"
    ):
        finetune(images=str(dataset), **options(tmp_path / "one", in_channels=1, steps=1))
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for sub in ("imagesTs", "labelsTs"):
        (renamed / sub).symlink_to(dataset / sub)
    content = json.loads((dataset / "dataset.json").read_text())
    content["channel_names"] = {"0": "signal", "1": "decoy"}
    (renamed / "dataset.json").write_text(json.dumps(content))
    (renamed / "imagesTr").symlink_to(dataset / "imagesTs")
    (renamed / "labelsTr").symlink_to(dataset / "labelsTs")
    with pytest.raises(
        DataError, match=r"channel order: .*\['signal', 'decoy'\] but .* trained on \['decoy', 'signal'\]"
    ):
        evaluate(trained["checkpoint"], str(renamed), out=tmp_path / "eval")
    three = tmp_path / "three"
    three.mkdir()
    for i in range(3):
        (three / f"x_{i:04d}.nii.gz").symlink_to(dataset / "imagesTs" / "case16_0000.nii.gz")
    with pytest.raises(DataError, match="case x has x_0002.nii.gz beyond the checkpoint's 2 channels") as error:
        predict(trained["checkpoint"], str(three), out=tmp_path / "p3")
    assert "\n" not in str(error.value)


def test_two_channel_pretraining_records_the_channels_and_fine_tunes(dataset, tmp_path):
    from cover.models.export import export
    from cover.pretraining.pretrain import pretrain

    model = {"channels": TINY["channels"], "heads": [2, 2, 1], "head_dim": 4}
    common = {"data": str(dataset), "dim": 2, "size": 32, "batch_size": 2, "steps": 2, "eval_pairs": 2, "model": model}
    with pytest.raises(
        ConfigError, match=r"in_channels: 1 but the images in .* have 2 channel\(s\); pass --in-channels 2"
    ):
        pretrain(out=str(tmp_path / "one"), **common)
    pretrain(out=str(tmp_path / "pre"), in_channels=2, checkpoint_every=2, **common)
    state = load_checkpoint(tmp_path / "pre" / "checkpoints" / "step_00000002.pt")
    metadata = state["metadata"]
    assert metadata["in_channels"] == 2 and metadata["channel_names"] == ["decoy", "signal"]
    assert metadata["data"]["num_files"] == 22 and metadata["data"]["channels"] == 2  # imagesTr + imagesTs
    assert state["model"]["backbone.encoder.0.0.weight"].shape[1] == 2
    export(tmp_path / "pre", tmp_path / "export")
    described = json.loads((tmp_path / "export" / "cover.json").read_text())
    assert described["in_channels"] == 2 and described["channel_names"] == ["decoy", "signal"]
    tuned = finetune(images=str(dataset), pretrained=str(tmp_path / "export"), **options(tmp_path / "ft", steps=2))
    tuned_metadata = load_checkpoint(tuned["checkpoint"])["metadata"]
    assert tuned_metadata["in_channels"] == 2 and tuned_metadata["channel_names"] == ["decoy", "signal"]
    with pytest.raises(ConfigError, match="in_channels: 1 but the pretrained checkpoint .* expects 2"):
        finetune(images=str(dataset), pretrained=str(tmp_path / "export"), **options(tmp_path / "x", in_channels=1))


def test_4d_msd_files_are_images_of_their_channels(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    entries = []
    for i in range(4):
        decoy, _ = shapes_case(rng, 3, 16)
        signal, label = shapes_case(rng, 3, 16)
        nib.save(nib.Nifti1Image(np.stack([decoy, signal], -1), AFFINE), tmp_path / "img" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, AFFINE), tmp_path / "lab" / f"c{i}.nii.gz")
        entries.append({"image": f"img/c{i}.nii.gz", "label": f"lab/c{i}.nii.gz"})
    msd = {"modality": {"0": "FLAIR", "1": "T1w"}, "training": entries, "test": []}
    (tmp_path / "dataset.json").write_text(json.dumps(msd))
    common = {"dim": 3, "size": 16, "batch_size": 2, "steps": 2, "model": TINY, "datalist": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"in_channels: 1 but the dataset names 2 channel\(s\) \['FLAIR', 'T1w'\]"):
        finetune(out=str(tmp_path / "one"), **common)
    summary = finetune(out=str(tmp_path / "ft"), in_channels=2, **common)
    assert load_checkpoint(summary["checkpoint"])["metadata"]["channel_names"] == ["FLAIR", "T1w"]
    written = predict(summary["checkpoint"], str(tmp_path / "img"), out=tmp_path / "pred")["outputs"]
    assert sorted(p.rsplit("/", 1)[1] for p in written) == [f"c{i}.nii.gz" for i in range(4)]
    for path in written:  # a 3D mask on the 4D file's spatial grid
        mask, source = nib.load(path), nib.load(path.replace(str(tmp_path / "pred"), str(tmp_path / "img")))
        assert mask.shape == source.shape[:3] == (16, 16, 16)
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-6)
