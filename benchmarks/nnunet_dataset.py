"""Write the MNI152 tissue task as an nnU-Net v2 raw dataset (2D PNG slices) for the nnU-Net run.

Labeled ``imagesTr``/``labelsTr``: axial slices z = 40, 43, ..., 127 (30 slices) with the
background/CSF/GM/WM labels of ``cover.data.demo.tissue``; unlabeled ``imagesTs``: the slices in
between (z = 41, 42, 44, 45, ..., 128; 59 slices), for pretraining only. 64 x 64 pixels.

    python benchmarks/nnunet_dataset.py $nnUNet_raw/Dataset501_MNITissue
"""

import json
import sys
from pathlib import Path

from PIL import Image

from cover.data.demo import TISSUE_NAMES, demo_slices

SIZE = 64
LABELED = list(range(40, 128, 3))
UNLABELED = [z for z in range(41, 129) if z not in LABELED]


def main(folder: Path) -> None:
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    images, labels = demo_slices(LABELED, SIZE)
    for z, image, label in zip(LABELED, images, labels, strict=True):
        Image.fromarray(image).save(folder / "imagesTr" / f"mni_z{z:03d}_0000.png")
        Image.fromarray(label).save(folder / "labelsTr" / f"mni_z{z:03d}.png")
    unlabeled, _ = demo_slices(UNLABELED, SIZE)
    for z, image in zip(UNLABELED, unlabeled, strict=True):
        Image.fromarray(image).save(folder / "imagesTs" / f"mni_z{z:03d}_0000.png")
    dataset = {
        "channel_names": {"0": "MRI"},
        "labels": {name: index for index, name in enumerate(TISSUE_NAMES)},
        "numTraining": len(LABELED),
        "file_ending": ".png",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
