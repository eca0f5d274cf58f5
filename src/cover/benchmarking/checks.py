"""What ``cover benchmark`` checks in the data before any work starts.

:func:`cover.benchmarking.config.validate_benchmark_config` checks the configuration (every
section's keys, each pretraining and fine-tuning run's resolved settings) without reading a
file. :func:`check_data` then reads what the runs will read, so a mistake in a user task is
reported before minutes of pretraining instead of in its first cell: every training and test
case is found and paired, each label map is read against its image (a lossy JPEG label, a
label off its image's grid, non-integer or negative values are refused, naming the file), the
largest label budget fits the training cases left after each seed's validation split, and
``class_names`` has one name per class found in the label maps (training and test). Label
formats are checked first from the file names alone (no decoding); then every image and label
map is read once. The built-in tasks are written by the benchmark itself and not read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cover.benchmarking.config import PRETRAIN_SECTIONS, BenchmarkConfig
from cover.benchmarking.tasks import TaskConfig
from cover.data.labels import count_classes
from cover.data.readers import detect_format
from cover.data.record import data_error
from cover.errors import ConfigError, DataError
from cover.runtime import progress_bar


def check_data(config: BenchmarkConfig, tasks: list[TaskConfig]) -> None:
    """Check the pretraining data folders and every user task's cases; one-line errors.

    Args:
        config: The resolved benchmark config.
        tasks: Its tasks (:meth:`BenchmarkConfig.task_configs`).

    Raises:
        ConfigError: A missing folder, a budget above the cases, a wrong ``class_names`` count.
        DataError: An unreadable or illegal image or label map (named).
    """
    for key in PRETRAIN_SECTIONS:
        data = getattr(config, key).get("data")
        if data is not None and not Path(data).exists():
            raise ConfigError(f"{key}.data: {data}: no such file or folder")
    for index, task in enumerate(tasks):
        if task.builtin:
            continue
        try:
            _check_task(config, task)
        except (ConfigError, DataError) as error:
            raise type(error)(f"tasks[{index}] '{task.name}': {error}") from None


def _check_task(config: BenchmarkConfig, task: TaskConfig) -> None:
    from cover.data.folders import dataset_json_of
    from cover.downstream.cases import find_cases, split_cases

    train, _ = find_cases("seg", task.images, task.labels, task.datalist)
    if task.test_datalist is None and task.test_labels is None and dataset_json_of(task.test_images) is None:
        raise ConfigError("test_labels: give the test label-map folder matching test_images (or a test_datalist)")
    test, _ = find_cases("seg", task.test_images, task.test_labels, task.test_datalist)
    for seed in config.seeds:
        try:
            split_cases(len(train), seed=seed, val_fraction=config.val_fraction, num_labeled=max(task.budgets))
        except ConfigError as error:
            raise ConfigError(
                f"budgets: {list(task.budgets)} asks for more labeled cases than there are: {error}"
            ) from None
    for case in train + test:  # from the file names: nothing decoded yet
        if detect_format(case.label) == "jpeg":
            raise data_error(
                case.label, "is a JPEG label map; JPEG is lossy and changes class indices near edges: save it as PNG"
            )
    in_channels = int({**config.finetune, **task.finetune}.get("in_channels", 1))
    cases = progress_bar(train + test, desc=f"checking {task.name}", leave=False, disable=len(train + test) < 20)
    found = [(case.label, _label_values_found(case, task, in_channels)) for case in cases]
    declared = len(task.label_values) if task.label_values else None
    classes = count_classes(found, declared, f"label_values lists {declared} values")
    if task.class_names is not None and len(task.class_names) != classes:
        raise ConfigError(
            f"class_names: {len(task.class_names)} names {list(task.class_names)} but the label maps hold "
            f"classes 0..{classes - 1} ({classes} classes); give one name per class"
        )


def _label_values_found(case: Any, task: TaskConfig, in_channels: int) -> np.ndarray:
    """Read a case as fine-tuning will (image, then its label map on the image's grid); its distinct classes."""
    from cover.downstream.loading import read_label_map, read_normalised

    _, record, _ = read_normalised(case.image, "minmax", task.dim, in_channels)
    return np.unique(read_label_map(str(case.label), record, task.label_values))
