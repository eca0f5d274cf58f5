"""The built-in benchmark tasks: disjoint, seeded data made from the MNI152 template."""

import numpy as np
import pytest

from cover.benchmark.tasks import TaskConfig, resolve_task, task_data
from cover.data.readers import read_image


def test_mni_tissue_2d_finetune_and_test_slabs_are_disjoint_and_far_apart(tmp_path):
    task = resolve_task({"name": "mni-tissue-2d", "size": 32}, 0)
    assert task.dim == 2 and task.preset == "mri" and task.class_names[3] == "WM"
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
