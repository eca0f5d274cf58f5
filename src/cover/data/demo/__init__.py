"""All built-in data: what cover trains and tests on when no data is given, made from the MNI152 template.

No labeled multi-subject set can be installed offline, so every built-in data set comes from
the one MNI152 2009 T1 template that nilearn installs, with its GM/WM maps (docs/method.md §13):

- :mod:`~cover.data.demo.template`: the template, its tissue and region labels, the slabs of
  axial slices that keep pretraining, fine-tuning and testing apart, slicing;
- :mod:`~cover.data.demo.unlabeled`: the images ``cover pretrain`` uses without ``--data``;
- :mod:`~cover.data.demo.tissue`: the labeled tissue slices ``cover finetune`` and ``cover
  evaluate`` use without data (and ``cover analyze`` by default);
- :mod:`~cover.data.demo.pseudo_subjects`: seeded pseudo-subjects (random deformations and
  appearance changes of the template);
- :mod:`~cover.data.demo.tasks`: the built-in tasks of ``cover benchmark``, written from the two above.

One template gives no subject variability: this data shows that the machinery works and what
pretraining changes, not clinical performance.
"""

from cover.data.demo.tasks import BUILTIN_TASKS, BuiltinTask, write_builtin_task
from cover.data.demo.template import (
    FINETUNE_SLAB,
    REGION_NAMES,
    TEST_SLAB,
    TISSUE_NAMES,
    axial_slices,
    load_mni,
    mni_tissue_labels,
    region_labels,
)
from cover.data.demo.tissue import DEMO_SIZE, demo_slices, demo_task_paths, write_demo_task
from cover.data.demo.unlabeled import demo_datasets

__all__ = [
    "BUILTIN_TASKS",
    "DEMO_SIZE",
    "FINETUNE_SLAB",
    "REGION_NAMES",
    "TEST_SLAB",
    "TISSUE_NAMES",
    "BuiltinTask",
    "axial_slices",
    "demo_datasets",
    "demo_slices",
    "demo_task_paths",
    "load_mni",
    "mni_tissue_labels",
    "region_labels",
    "write_builtin_task",
    "write_demo_task",
]
