"""A tiny synthetic nnU-Net v2 raw dataset, and nnU-Net's own planner run on it.

Used by the ``--backbone nnunet`` tests. The planner runs as nnU-Net's console script
``nnUNetv2_plan_and_preprocess`` in a subprocess with ``nnUNet_raw``/``nnUNet_preprocessed``/
``nnUNet_results`` pointing into a temporary folder (nnU-Net reads them when imported).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "nnUNet_n_proc_DA": "1"}


def _case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """An image with a bright ellipsoid (label 1) and a dark box (label 2) on smooth noise."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    centre = [rng.uniform(0.35, 0.65) * s for s in shape]
    radii = [rng.uniform(0.15, 0.25) * s for s in shape]
    ellipsoid = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0
    label = ellipsoid.astype(np.uint8)
    corner = [int(rng.integers(1, max(2, s // 5))) for s in shape]
    box = tuple(slice(c, c + max(2, s // 6)) for c, s in zip(corner, shape, strict=True))
    label[box] = 2
    image = rng.normal(0.0, 0.3, shape).astype(np.float32) + 2.0 * (label == 1) - 1.5 * (label == 2)
    return image, label


#: nnUNetPlans.json (and dataset.json) that nnU-Net 2.8.1's planner wrote for :func:`write_raw_dataset`'s
#: defaults (4 cases of 32^3 voxels, 1 mm, 3 labels): ``plan(root)`` after ``write_raw_dataset(root / "nnUNet_raw")``
#: (``nnUNetv2_plan_and_preprocess -d 1 --no_pp -np 1``; about 30 s of CPU, so it is committed, not rerun).
PLANS = Path(__file__).parent.parent / "nn" / "data" / "nnunet_tiny" / "nnUNetPlans.json"
CONFIGURATIONS = {2: "2d", 3: "3d_fullres"}


def nnunet_network(
    dim: int, in_channels: int = 1, classes: int = 3, deep_supervision: bool = False, plans: Path = PLANS
):
    """The network nnU-Net's trainer builds for :data:`PLANS` (``build_network_architecture``)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(str(plans)).get_configuration(CONFIGURATIONS[dim])
    return get_network_from_plans(
        manager.network_arch_class_name,
        manager.network_arch_init_kwargs,
        manager.network_arch_init_kwargs_req_import,
        in_channels,
        classes,
        allow_init=True,
        deep_supervision=deep_supervision,
    )


def write_raw_dataset(
    raw: Path, dataset_id: int = 1, cases: int = 4, shape: tuple[int, ...] = (32, 32, 32), channels: int = 1
) -> Path:
    """Write ``raw/DatasetXXX_Tiny`` in nnU-Net v2's raw layout (NIfTI, 1 mm, ``imagesTs`` too).

    Args:
        raw: The ``nnUNet_raw`` folder.
        dataset_id: nnU-Net dataset id.
        cases: Labeled training cases (plus 2 unlabeled ones in ``imagesTs``).
        shape: Volume shape.
        channels: Input channels (``case_0000``, ``case_0001``, ...).

    Returns:
        The dataset folder.
    """
    rng = np.random.default_rng(dataset_id)
    folder = raw / f"Dataset{dataset_id:03d}_Tiny"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(cases + 2):
        image, label = _case(rng, shape)
        name = f"tiny_{index:03d}"
        sub = "imagesTr" if index < cases else "imagesTs"
        for channel in range(channels):
            data = image if channel == 0 else image[::-1].copy() * (channel + 1)
            nib.save(nib.Nifti1Image(data, np.eye(4)), folder / sub / f"{name}_{channel:04d}.nii.gz")
        if index < cases:
            nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "labelsTr" / f"{name}.nii.gz")
    dataset = {
        "channel_names": {str(c): "MRI" if c == 0 else f"MRI{c}" for c in range(channels)},
        "labels": {"background": 0, "ellipsoid": 1, "box": 2},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def nnunet_env(root: Path) -> dict[str, str]:
    """Environment with nnU-Net's three folders under ``root`` (created)."""
    env = dict(ENV)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(root / name)
    return env


def nnunet_script(name: str) -> str:
    """Path of one of nnU-Net's console scripts (beside this Python)."""
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def plan(root: Path, dataset_id: int = 1) -> Path:
    """Run nnU-Net's fingerprinting and planner (no preprocessing) on a raw dataset under ``root``.

    Returns:
        The ``nnUNetPlans.json`` nnU-Net wrote.
    """
    env = nnunet_env(root)
    command = [nnunet_script("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "--no_pp", "-np", "1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    plans = next((root / "nnUNet_preprocessed").glob(f"Dataset{dataset_id:03d}_*/nnUNetPlans.json"))
    return plans
