"""The built-in labeled tasks, all made from the one MNI152 template (docs/method.md §13).

No labeled multi-subject set installs offline. ``cover benchmark`` names these tasks in its
``tasks`` (:mod:`cover.benchmarking.tasks`); :func:`write_builtin_task` writes one as
``train/{images,labels}`` and ``test/{images,labels}``:

* ``mni-tissue-2d``: the demo's tissue slices (:mod:`cover.data.demo.tissue`): 8 labeled
  slices to fine-tune on, the 10 slices of the test slab to test on, 22 slices apart; the demo
  pretraining never sees the test slab.
* ``mni-tissue-3d``, ``mni-regions-2d``, ``mni-regions-3d``: seeded pseudo-subjects
  (:mod:`cover.data.demo.pseudo_subjects`), training and test subjects from disjoint seeds.

Each shows what pretraining changes under a fixed budget, not clinical performance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cover.data.demo.pseudo_subjects import write_pseudo_subjects
from cover.data.demo.template import REGION_NAMES, TISSUE_NAMES
from cover.data.demo.tissue import write_demo_task


@dataclass(frozen=True)
class BuiltinTask:
    """What a built-in task is.

    Attributes:
        dim: 2 or 3.
        kind: ``tissue`` (:data:`~cover.data.demo.template.TISSUE_NAMES`) or ``regions``
            (:data:`~cover.data.demo.template.REGION_NAMES`).
        num_train: Labeled training cases (the default number of pseudo-subjects).
        num_test: Test cases (the default number of pseudo-subjects).
        description: What the task is, in words (the benchmark's report prints it).
    """

    dim: int
    kind: str
    num_train: int
    num_test: int
    description: str

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of labels 0, 1, ..."""
        return TISSUE_NAMES if self.kind == "tissue" else REGION_NAMES

    @property
    def lateral(self) -> bool:
        """Whether labels tell left from right (a left-right flip would swap them)."""
        return self.kind == "regions"


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    "mni-tissue-2d": BuiltinTask(
        2, "tissue", 8, 10,
        "4-class tissue labelling (CSF, GM, WM) of MNI152 template axial slices: fine-tuned on z 70-77, "
        "tested on z 100-109 (never pretrained on); one template, no inter-subject variation",
    ),
    "mni-tissue-3d": BuiltinTask(
        3, "tissue", 8, 4,
        "4-class tissue labelling of seeded 3D pseudo-subjects of the MNI152 template at 2 mm (mild "
        "random affine + elastic deformation, bias field, contrast, noise)",
    ),
    "mni-regions-2d": BuiltinTask(
        2, "regions", 24, 20,
        "6 anatomical regions (left/right GM, left/right WM, lateral ventricles) of 2D pseudo-subjects: "
        "one axial slice of z 78-99 of the MNI152 template per subject under a large random diffeomorphic "
        "deformation, bias field, contrast, resolution change and noise (SynthSeg-style); left and right need the "
        "anatomy, not the intensity",
    ),
    "mni-regions-3d": BuiltinTask(
        3, "regions", 12, 4, "the mni-regions-2d regions and variation on 3D pseudo-subjects at 2 mm"
    ),
}  # fmt: skip


def write_builtin_task(name: str, folder: Path, *, size: int, num_train: int, num_test: int, seed: int) -> None:
    """Write a built-in task's cases into ``folder`` (``train/`` and ``test/``, images and labels).

    Args:
        name: A key of :data:`BUILTIN_TASKS`.
        folder: Destination (created).
        size: 2D slice side in pixels.
        num_train: Training pseudo-subjects (``mni-tissue-2d`` always has its 8 slices).
        num_test: Test pseudo-subjects (``mni-tissue-2d`` always has its 10 slices).
        seed: Seed of the pseudo-subjects.
    """
    task = BUILTIN_TASKS[name]
    if name == "mni-tissue-2d":  # the demo's slices, not pseudo-subjects
        write_demo_task(folder, size=size)
    else:
        write_pseudo_subjects(folder, num_train, num_test, seed, task.kind, task.dim, size)
