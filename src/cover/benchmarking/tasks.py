"""Downstream tasks of ``cover benchmark``: the built-in offline tasks and user tasks from folders.

The four built-in tasks (``mni-tissue-2d``, ``mni-tissue-3d``, ``mni-regions-2d``,
``mni-regions-3d``) are made from the MNI152 template by :mod:`cover.data.demo`
(:data:`~cover.data.demo.tasks.BUILTIN_TASKS`: what each is; :func:`task_data` writes its files
once). Fine-tuning must not flip left and right on a task whose labels tell them apart (the
regions): such a task sets ``finetune.augment.flip_prob: 0``.

A user task names folders (or datalists) of training and test cases; see :class:`TaskConfig`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cover.config import deep_merge, update_dataclass
from cover.data.demo import BUILTIN_TASKS, write_builtin_task
from cover.data.labels import check_label_values
from cover.errors import ConfigError


@dataclass
class TaskConfig:
    """One downstream task of the benchmark.

    Attributes:
        name: Task name; ``mni-tissue-2d`` and ``mni-tissue-3d`` are built in, any other name
            needs ``images``/``labels`` (or ``datalist``) and test data.
        dim: 2 or 3 (built-in tasks set it).
        images: Folder of training images (the labeled pool the budgets draw from).
        labels: Folder of their label maps (matched by file-name stem).
        datalist: JSON/CSV datalist with ``image`` and ``label`` instead of the two folders.
        test_images: Folder of test images.
        test_labels: Folder of their label maps.
        test_datalist: Test datalist instead of the two folders.
        budgets: Numbers of labeled training cases to fine-tune with.
        intensity: Intensity preset of the images (``None``: the pretrained checkpoint's, else each
            file's default); built-in tasks use ``mri``. Formerly ``preset`` (still read).
        class_names: Optional names of labels 0, 1, ...
        label_values: Values the label maps (training and test) hold, background first: value
            ``i`` is class ``i`` (``[0, 255]`` for binary masks saved as 0/255); ``None``: the
            values are the class indices 0..K-1.
        size: Built-in 2D tasks: slice side in pixels.
        num_train: Built-in pseudo-subject tasks: training pseudo-subjects (the labeled pool;
            ``None``: 8 for ``mni-tissue-3d``, 24 for ``mni-regions-2d``, 12 for ``mni-regions-3d``).
        num_test: Built-in pseudo-subject tasks: test pseudo-subjects (``None``: 4, 20, 4).
        seed: Built-in pseudo-subject tasks: seed of the pseudo-subjects.
        finetune: Fine-tuning settings of this task (override the benchmark's ``finetune``).
    """

    name: str = "mni-tissue-2d"
    dim: int = 2
    images: str | None = None
    labels: str | None = None
    datalist: str | None = None
    test_images: str | None = None
    test_labels: str | None = None
    test_datalist: str | None = None
    budgets: tuple[int, ...] = (1, 2, 4, 8)
    intensity: str | None = None
    class_names: tuple[str, ...] | None = None
    label_values: tuple[int, ...] | None = None
    size: int = 96
    num_train: int | None = None
    num_test: int | None = None
    seed: int = 0
    finetune: dict[str, Any] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        """Whether this is one of the built-in MNI152 tasks."""
        return self.name in BUILTIN_TASKS


def resolve_task(values: dict[str, Any], index: int) -> TaskConfig:
    """Validate one task entry of the benchmark config.

    Args:
        values: The entry (a mapping of :class:`TaskConfig` keys).
        index: Its position in ``tasks`` (for messages).

    Returns:
        The task config, with the built-in tasks' dimension, intensity preset and class names filled in.
    """
    if not isinstance(values, dict) or "name" not in values:
        raise ConfigError(f"tasks[{index}]: expected a mapping with a 'name' (e.g. name: mni-tissue-2d)")
    task = update_dataclass(TaskConfig(), values, prefix=f"tasks[{index}].")
    if task.builtin:
        builtin = BUILTIN_TASKS[task.name]
        task = dataclasses.replace(
            task,
            dim=builtin.dim,
            intensity=task.intensity or "mri",
            class_names=task.class_names or builtin.class_names,
            num_train=task.num_train or builtin.num_train,
            num_test=task.num_test or builtin.num_test,
        )
        if builtin.lateral:  # a left-right flip would swap the left and right labels
            task = dataclasses.replace(task, finetune=deep_merge({"augment": {"flip_prob": 0.0}}, task.finetune))
    else:
        if task.images is None and task.datalist is None:
            raise ConfigError(
                f"tasks[{index}] '{task.name}': not a built-in task ({', '.join(BUILTIN_TASKS)}); "
                "give images + labels or a datalist"
            )
        if task.test_images is None and task.test_datalist is None:
            raise ConfigError(f"tasks[{index}] '{task.name}': give test_images + test_labels or a test_datalist")
    if task.dim not in (2, 3):
        raise ConfigError(f"tasks[{index}].dim: {task.dim} is not allowed (allowed: 2, 3)")
    if not task.budgets or any(b < 1 for b in task.budgets):
        raise ConfigError(f"tasks[{index}].budgets: {list(task.budgets)} must be positive numbers of cases")
    if task.name == "mni-tissue-2d" and max(task.budgets) > 8:
        raise ConfigError(f"tasks[{index}].budgets: mni-tissue-2d has 8 labeled slices, got {list(task.budgets)}")
    if task.builtin and task.name != "mni-tissue-2d" and max(task.budgets) > task.num_train:
        raise ConfigError(
            f"tasks[{index}].budgets: {list(task.budgets)} exceed num_train={task.num_train} pseudo-subjects"
        )
    try:
        check_label_values(task.label_values)
    except ConfigError as error:
        raise ConfigError(f"tasks[{index}].{error}") from None
    return task


def describe_task(task: TaskConfig, data: dict[str, str | None]) -> str:
    """One Markdown line saying what a task is (built-in or the user's data).

    Args:
        task: The task.
        data: Its data locations (:func:`task_data`).

    Returns:
        The line, without a list marker.
    """
    if task.builtin:
        counts = (
            ""
            if task.name == "mni-tissue-2d"
            else f" ({task.num_train} training, {task.num_test} test subjects, seed {task.seed})"
        )
        return (
            f"`{task.name}` (built in, `cover.data.demo`): {BUILTIN_TASKS[task.name].description}{counts}. "
            "Made from one template: shows what pretraining changes, not clinical performance."
        )
    train = data["datalist"] or f"{data['images']} + {data['labels']}"
    test = data["test_datalist"] or f"{data['test_images']} + {data['test_labels']}"
    names = f", classes {list(task.class_names)}" if task.class_names else ""
    return f"`{task.name}` (your task, {task.dim}D{names}): labeled pool {train}; test cases {test}."


def task_data(task: TaskConfig, root: Path) -> dict[str, str | None]:
    """Where a task's training and test cases are, writing the built-in tasks' files once.

    Args:
        task: The task.
        root: Folder for generated data (``OUT/data``).

    Returns:
        ``images``, ``labels``, ``datalist``, ``test_images``, ``test_labels``,
        ``test_datalist``.
    """
    if not task.builtin:
        keys = ("images", "labels", "datalist", "test_images", "test_labels", "test_datalist")
        return {k: getattr(task, k) for k in keys}
    folder = root / task.name
    marker = folder / "done.json"
    description = {"name": task.name, "size": task.size, "num_train": task.num_train, "num_test": task.num_test}
    description["seed"] = task.seed
    if not (marker.is_file() and json.loads(marker.read_text()).get("task") == description):
        write_builtin_task(
            task.name, folder, size=task.size, num_train=task.num_train, num_test=task.num_test, seed=task.seed
        )
        marker.write_text(json.dumps({"task": description}))
    train, test = folder / "train", folder / "test"
    return {
        "images": str(train / "images"),
        "labels": str(train / "labels"),
        "datalist": None,
        "test_images": str(test / "images"),
        "test_labels": str(test / "labels"),
        "test_datalist": None,
    }
