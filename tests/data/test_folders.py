"""Dataset folders: nnU-Net v2 raw datasets and MSD ``dataset.json`` as pretraining / fine-tuning data."""

import json

import nibabel as nib
import numpy as np
import pytest

from cover.data.datasets import build_pretrain_dataset
from cover.data.folders import pretraining_images, read_dataset_folder
from cover.downstream.cases import find_cases
from cover.errors import DataError


def write_nnunet(folder, cases=("b", "a", "c"), unlabeled=("t1", "t2"), channels=1, ending=".nii.gz"):
    """A raw dataset; every volume has a distinct value so a mix-up shows."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    value = 1.0
    for sub, names in (("imagesTr", cases), ("imagesTs", unlabeled)):
        for name in names:
            for channel in range(channels):
                data = np.full((8, 8, 8), value, np.float32)
                data[:2] = 0
                nib.save(nib.Nifti1Image(data, np.eye(4)), folder / sub / f"{name}_{channel:04d}{ending}")
                value += 1
            if sub == "imagesTr":
                nib.save(
                    nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), folder / "labelsTr" / f"{name}{ending}"
                )
    dataset = {
        "channel_names": {str(c): f"M{c}" for c in range(channels)},
        "labels": {"background": 0, "x": 1},
        "numTraining": len(cases),
        "file_ending": ending,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


def test_nnunet_raw_folder_pairs_images_with_labels_and_keeps_test_images_unlabeled(tmp_path):
    folder = write_nnunet(tmp_path / "Dataset001_X")
    dataset = read_dataset_folder(folder)
    assert dataset.kind == "nnunet" and dataset.channels == 1
    assert [(c.name, c.images[0].name, c.label.name) for c in dataset.training] == [
        ("a", "a_0000.nii.gz", "a.nii.gz"),
        ("b", "b_0000.nii.gz", "b.nii.gz"),
        ("c", "c_0000.nii.gz", "c.nii.gz"),
    ]
    assert [(c.name, c.label) for c in dataset.test] == [("t1", None), ("t2", None)]
    # pretraining: imagesTr then imagesTs, never a label
    images = pretraining_images(folder / "dataset.json")
    assert [p.relative_to(folder).as_posix() for p in images] == [
        "imagesTr/a_0000.nii.gz",
        "imagesTr/b_0000.nii.gz",
        "imagesTr/c_0000.nii.gz",
        "imagesTs/t1_0000.nii.gz",
        "imagesTs/t2_0000.nii.gz",
    ]


def test_pretraining_on_a_raw_folder_reads_the_five_images_not_the_labels(tmp_path):
    folder = write_nnunet(tmp_path / "Dataset001_X")
    dataset, meta = build_pretrain_dataset(
        str(folder), dim=3, source_size=(8, 8, 8), preset="minmax", spacing=None, cache_dir=None, on_bad_file="error"
    )
    assert len(dataset) == 5 and meta["num_files"] == 5
    assert not any("labelsTr" in str(p) for p in dataset.store.paths)


def test_fine_tuning_cases_from_a_raw_folder_and_from_its_images_labels_pair(tmp_path):
    folder = write_nnunet(tmp_path / "Dataset001_X")
    cases, classes = find_cases("seg", images=str(folder))
    assert classes is None and [(c.name, c.label.name) for c in cases] == [
        ("a", "a.nii.gz"),
        ("b", "b.nii.gz"),
        ("c", "c.nii.gz"),
    ]
    assert [c.image.name for c in find_cases("seg", datalist=str(folder / "dataset.json"))[0]] == [
        "a_0000.nii.gz",
        "b_0000.nii.gz",
        "c_0000.nii.gz",
    ]
    paired, _ = find_cases("seg", images=str(folder / "imagesTr"), labels=str(folder / "labelsTr"))
    assert sorted((c.name, c.image.name, c.label.name) for c in paired) == [
        ("a", "a_0000.nii.gz", "a.nii.gz"),
        ("b", "b_0000.nii.gz", "b.nii.gz"),
        ("c", "c_0000.nii.gz", "c.nii.gz"),
    ]


def test_multi_channel_cases_become_input_channels_in_channel_order(tmp_path):
    folder = write_nnunet(tmp_path / "Dataset002_Y", cases=("a", "b"), unlabeled=("t",), channels=2)
    dataset = read_dataset_folder(folder)
    assert dataset.channels == 2 and dataset.channel_names == ["M0", "M1"]
    assert [p.name for p in dataset.training[0].images] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    sources = pretraining_images(folder)
    assert [[p.name for p in s] for s in sources] == [
        ["a_0000.nii.gz", "a_0001.nii.gz"],
        ["b_0000.nii.gz", "b_0001.nii.gz"],
        ["t_0000.nii.gz", "t_0001.nii.gz"],
    ]
    pretraining, meta = build_pretrain_dataset(
        str(folder), dim=3, source_size=(8, 8, 8), preset="none", spacing=None, cache_dir=None, on_bad_file="error"
    )
    assert meta["channels"] == 2 and meta["channel_names"] == ["M0", "M1"] and meta["num_files"] == 3
    # write_nnunet numbers the volumes 1, 2 (a), 3, 4 (b), 5, 6 (t): each channel keeps its own file's values
    for index, (first, second) in enumerate([(1, 2), (3, 4), (5, 6)]):
        array = pretraining.store[index]
        assert array.shape == (2, 8, 8, 8) and array[0].max() == first and array[1].max() == second
    for cases in (
        find_cases("seg", images=str(folder))[0],
        find_cases("seg", images=str(folder / "imagesTr"), labels=str(folder / "labelsTr"))[0],
    ):
        assert [(c.name, [p.name for p in c.image], c.label.name) for c in cases] == [
            ("a", ["a_0000.nii.gz", "a_0001.nii.gz"], "a.nii.gz"),
            ("b", ["b_0000.nii.gz", "b_0001.nii.gz"], "b.nii.gz"),
        ]


def test_an_images_labels_pair_with_a_missing_channel_names_the_file(tmp_path):
    folder = write_nnunet(tmp_path / "Dataset002_Y", cases=("a", "b"), unlabeled=(), channels=3)
    (folder / "imagesTr" / "b_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"imagesTr/b_0001.nii.gz: channel 1 of case b not found") as error:
        find_cases("seg", images=str(folder / "imagesTr"), labels=str(folder / "labelsTr"))
    assert "\n" not in str(error.value)


def test_msd_image_lists_and_4d_files(tmp_path):
    write_nnunet(tmp_path / "raw", cases=("a", "b"), unlabeled=(), channels=2)
    four_d = np.stack([np.full((8, 8, 8), 7.0, np.float32), np.full((8, 8, 8), 9.0, np.float32)], axis=-1)
    nib.save(nib.Nifti1Image(four_d, np.eye(4)), tmp_path / "brats.nii.gz")
    msd = {
        "modality": {"0": "FLAIR", "1": "T1w"},
        "training": [
            {
                "image": ["./raw/imagesTr/a_0000.nii.gz", "./raw/imagesTr/a_0001.nii.gz"],
                "label": "./raw/labelsTr/a.nii.gz",
            }
        ],
        "test": ["./brats.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(msd))
    dataset = read_dataset_folder(tmp_path)
    assert dataset.channel_names == ["FLAIR", "T1w"] and len(dataset.training[0].images) == 2
    pretraining, meta = build_pretrain_dataset(
        str(tmp_path), dim=3, source_size=(8, 8, 8), preset="none", spacing=None, cache_dir=None,
        on_bad_file="error", channels=True,
    )  # fmt: skip
    assert meta["channels"] == 2 and meta["channel_names"] == ["FLAIR", "T1w"]
    assert [float(pretraining.store[i][c].max()) for i in range(2) for c in range(2)] == [1.0, 2.0, 7.0, 9.0]
    msd["test"] = ["./raw/imagesTr/b_0000.nii.gz"]  # one channel where the others have two
    (tmp_path / "dataset.json").write_text(json.dumps(msd))
    with pytest.raises(DataError, match=r"different channel counts \[1, 2\] \(1 in b_0000.nii.gz, 2 in a_0000"):
        build_pretrain_dataset(
            str(tmp_path), dim=3, source_size=(8, 8, 8), preset="none", spacing=None, cache_dir=None,
            on_bad_file="error", channels=True,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "imagesTr" / "a_0001.nii.gz").unlink(), "case a lacks a_0001.nii.gz"),
        (lambda f: (f / "labelsTr" / "a.nii.gz").unlink(), r"a.nii.gz: label of case a not found"),
        (lambda f: (f / "imagesTr" / "a_0000.nii.gz").rename(f / "imagesTr" / "a.nii.gz"), "not an nnU-Net image name"),
    ],
)
def test_a_broken_raw_folder_is_a_one_line_error_naming_the_file(tmp_path, damage, message):
    folder = write_nnunet(tmp_path / "Dataset002_Y", cases=("a", "b"), unlabeled=(), channels=2)
    damage(folder)
    with pytest.raises(DataError, match=message) as error:
        read_dataset_folder(folder)
    assert "\n" not in str(error.value)


def test_msd_dataset_json_labeled_training_and_unlabeled_test(tmp_path):
    write_nnunet(tmp_path / "raw", cases=("a", "b"), unlabeled=("t",))
    (tmp_path / "raw" / "dataset.json").unlink()
    msd = {
        "name": "X",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "x"},
        "training": [
            {"image": "./raw/imagesTr/b_0000.nii.gz", "label": "./raw/labelsTr/b.nii.gz"},
            {"image": "./raw/imagesTr/a_0000.nii.gz", "label": "./raw/labelsTr/a.nii.gz"},
        ],
        "test": ["./raw/imagesTs/t_0000.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(msd))
    dataset = read_dataset_folder(tmp_path)
    assert dataset.kind == "msd" and [c.label.name for c in dataset.training] == ["b.nii.gz", "a.nii.gz"]
    assert [p.name for p in pretraining_images(tmp_path / "dataset.json")] == [
        "b_0000.nii.gz",
        "a_0000.nii.gz",
        "t_0000.nii.gz",
    ]
    cases, _ = find_cases("seg", datalist=str(tmp_path / "dataset.json"))
    assert [(c.image.name, c.label.name) for c in cases] == [
        ("b_0000.nii.gz", "b.nii.gz"),
        ("a_0000.nii.gz", "a.nii.gz"),
    ]
    msd["training"][0]["label"] = "./raw/labelsTr/missing.nii.gz"
    (tmp_path / "dataset.json").write_text(json.dumps(msd))
    with pytest.raises(DataError, match=r"missing.nii.gz: listed in .*training\[0\].label"):
        read_dataset_folder(tmp_path)
