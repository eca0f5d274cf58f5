"""``nnUNetv2_train`` with its trainer looked up directly (same arguments, same code path).

nnU-Net finds a trainer by importing every module under ``nnunetv2/training/nnUNetTrainer``,
including the Primus trainers, which import ``timm`` and hence ``torchvision``. This machine has
the CPU build of torch 2.13.0 and only CUDA builds of torchvision, which cannot be imported
next to it, so that lookup fails before training starts. This wrapper hands nnU-Net's own
``run_training_entry`` (the ``nnUNetv2_train`` console script) the trainer class instead;
everything else (argument parsing, ``-pretrained_weights`` -> ``load_pretrained_weights``,
training, validation) is nnU-Net's unchanged code.

It also registers short schedules for a shared 2-core CPU: nnU-Net's default trainer with
``E`` epochs of ``N`` training iterations (10 validation iterations each), e.g.
``nnUNetTrainer_1x50`` and ``nnUNetTrainer_5x50``, and ``nnUNetTrainer_1x5`` (5 iterations: checks that
a command runs, e.g. docs/nnunet.md's commands on the tiny test dataset).

    python benchmarks/nnunet_train.py 501 2d 0 -tr nnUNetTrainer_1x50 -device cpu [-pretrained_weights F]
"""

import sys

import nnunetv2.run.run_training as run_training
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs


def short_trainer(epochs: int, iterations: int) -> type:
    """nnU-Net's default trainer with ``epochs`` epochs of ``iterations`` iterations (10 for validation)."""

    def init(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):  # noqa: B008
        nnUNetTrainer.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = 10

    return type(f"nnUNetTrainer_{epochs}x{iterations}", (nnUNetTrainer,), {"__init__": init})


TRAINERS = {t.__name__: t for t in (short_trainer(1, 5), short_trainer(1, 50), short_trainer(5, 50))}

if __name__ == "__main__":  # nnU-Net's validation pool spawns workers that import this file
    run_training.recursive_find_trainer_class_by_name = lambda name: (
        TRAINERS.get(name) or getattr(nnUNetTrainer_Xepochs, name)
    )
    sys.argv[0] = "nnUNetv2_train"
    run_training.run_training_entry()
