"""The built-in benchmark tasks: disjoint, seeded data made from the MNI152 template."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cover.benchmarking.tasks import TaskConfig, describe_task, resolve_task, task_data
from cover.data.demo.pseudo_subjects import REGION_SLAB, REGIONS_VARIATION, pseudo_subject, region_slices, subject_seed
from cover.data.readers import read_image
from cover.geometry import warp


def test_mni_tissue_2d_finetune_and_test_slabs_are_disjoint_and_far_apart(tmp_path):
    task = resolve_task({"name": "mni-tissue-2d", "size": 32}, 0)
    assert task.dim == 2 and task.intensity == "mri" and task.class_names[3] == "WM"
    data = task_data(task, tmp_path)
    train = sorted(p.name for p in (tmp_path / "mni-tissue-2d" / "train" / "images").iterdir())
    test = sorted(p.name for p in (tmp_path / "mni-tissue-2d" / "test" / "images").iterdir())
    train_z = [int(n[5:8]) for n in train]
    test_z = [int(n[5:8]) for n in test]
    assert len(train_z) == 8 and len(test_z) == 10
    assert min(test_z) - max(train_z) >= 10
    labels = read_image(f"{data['test_labels']}/{test[0]}").array
    assert set(np.unique(labels).astype(int)) == {0, 1, 2, 3}


def test_mni_tissue_3d_pseudo_subjects_are_seeded_and_disjoint(tmp_path):
    task = resolve_task({"name": "mni-tissue-3d", "num_train": 2, "num_test": 1, "budgets": [1, 2]}, 0)
    assert task.dim == 3
    data = task_data(task, tmp_path / "a")
    train = [read_image(tmp_path / "a/mni-tissue-3d/train/images" / f"subject{i:03d}.nii.gz").array for i in (0, 1)]
    test = read_image(tmp_path / "a/mni-tissue-3d/test/images/subject000.nii.gz").array
    labels = read_image(tmp_path / "a/mni-tissue-3d/train/labels/subject000.nii.gz").array
    assert train[0].shape == labels.shape and train[0].ndim == 4 and min(train[0].shape[1:]) > 60
    assert set(np.unique(labels).astype(int)) == {0, 1, 2, 3}
    assert not np.allclose(train[0], train[1]) and not np.allclose(train[0], test)
    assert data["test_labels"].endswith("test/labels")
    again = task_data(task, tmp_path / "b")
    assert again["images"].startswith(str(tmp_path / "b"))
    repeat = read_image(tmp_path / "b/mni-tissue-3d/train/images/subject001.nii.gz").array
    np.testing.assert_array_equal(repeat, train[1])


def test_user_task_needs_its_data():
    task = resolve_task({"name": "mine", "images": "a", "labels": "b", "test_images": "c", "test_labels": "d"}, 0)
    assert isinstance(task, TaskConfig) and not task.builtin
    with pytest.raises(Exception, match="test_images"):
        resolve_task({"name": "mine", "images": "a", "labels": "b"}, 0)


def test_a_task_maps_its_label_values_next_to_its_labels():
    values = {"name": "mine", "images": "a", "labels": "b", "test_images": "c", "test_labels": "d"}
    assert resolve_task({**values, "label_values": [0, 255]}, 0).label_values == (0, 255)
    assert resolve_task({**values, "label_values": "0,127,254"}, 0).label_values == (0, 127, 254)
    with pytest.raises(
        Exception, match=r"^tasks\[1\]\.label_values: \[0, 0\] repeats a value; each value is one class"
    ):
        resolve_task({**values, "label_values": [0, 0]}, 1)
    with pytest.raises(Exception, match=r"^tasks\[0\]\.label_values: \[255\] needs at least two values"):
        resolve_task({**values, "label_values": [255]}, 0)


def test_mni_regions_2d_is_seeded_and_its_labels_are_the_warped_template_labels(tmp_path):
    task = resolve_task({"name": "mni-regions-2d", "num_train": 3, "num_test": 2, "budgets": [1, 2], "size": 48}, 0)
    assert task.dim == 2 and task.class_names[5] == "ventricles" and task.finetune["augment"]["flip_prob"] == 0
    data = task_data(task, tmp_path / "a")
    task_data(task, tmp_path / "b")
    listing = json.loads((tmp_path / "a/mni-regions-2d/train/subjects.json").read_text())
    images, labels = region_slices(48)
    for split, count in (("train", 3), ("test", 2)):
        for i in range(count):
            for kind in ("images", "labels"):
                a = read_image(tmp_path / f"a/mni-regions-2d/{split}/{kind}/subject{i:03d}.png").array
                b = read_image(tmp_path / f"b/mni-regions-2d/{split}/{kind}/subject{i:03d}.png").array
                np.testing.assert_array_equal(a, b)
    entry = listing[1]
    assert entry["seed"] == subject_seed(0, 0, 1) and REGION_SLAB[0] <= entry["z"] < REGION_SLAB[1]
    pick = entry["z"] - REGION_SLAB[0]
    generator = torch.Generator().manual_seed(entry["seed"])
    assert int(torch.randint(len(images), (), generator=generator)) == pick
    _, _, phi = pseudo_subject(images[pick : pick + 1], labels[pick : pick + 1], generator, REGIONS_VARIATION)
    written = read_image(f"{data['labels']}/subject001.png").array[0]
    expected = warp(labels[pick : pick + 1], phi, mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(written, expected)
    assert {1, 2, 3, 4}.issubset(set(np.unique(written).astype(int)))
    train = [read_image(f"{data['images']}/subject{i:03d}.png").array for i in range(3)]
    test = read_image(f"{data['test_images']}/subject000.png").array
    assert not np.array_equal(train[0], train[1]) and not any(np.array_equal(test, t) for t in train)


def test_describe_task_names_a_users_own_data():
    values = {"name": "mine", "images": "/d/im", "labels": "/d/lb", "test_images": "/t/im", "test_labels": "/t/lb"}
    task = resolve_task({**values, "class_names": ["bg", "liver"]}, 0)
    text = describe_task(task, task_data(task, Path("unused")))
    assert "/d/im" in text and "/t/lb" in text and "liver" in text and "MNI152" not in text
    builtin = resolve_task({"name": "mni-regions-2d"}, 0)
    assert "left/right" in describe_task(builtin, {}) and "24 training" in describe_task(builtin, {})
