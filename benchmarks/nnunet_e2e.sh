#!/usr/bin/env bash
# End-to-end nnU-Net path (docs/interop.md, benchmarks/RESULTS.md): an nnU-Net raw dataset,
# nnU-Net's planner, COVER pretraining of nnU-Net's 2d network, export, and nnUNetv2_train
# (nnUNetTrainer for 1 epoch of 50 iterations, fold 0, CPU) with and without the pretrained weights.
#   E=/tmp/nnu_e2e bash benchmarks/nnunet_e2e.sh [plan|scratch|pretrain|cover]
set -euo pipefail
cd "$(dirname "$0")/.."
E=${E:-/tmp/nnu_e2e}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nnUNet_n_proc_DA=0 nnUNet_def_n_proc=1 PYTHONPATH=$PWD/src
export nnUNet_raw=$E/nnUNet_raw nnUNet_preprocessed=$E/nnUNet_preprocessed
RAW=$nnUNet_raw/Dataset501_MNITissue
PLANS=$nnUNet_preprocessed/Dataset501_MNITissue/nnUNetPlans.json
case "${1:?usage: nnunet_e2e.sh plan|pretrain|scratch|cover (in that order; scratch may run beside pretrain)}" in
  plan)
    python benchmarks/nnunet_dataset.py "$RAW"
    nnUNet_n_proc_DA=1 nnUNet_results=$E/results_scratch nnUNetv2_plan_and_preprocess -d 501 -c 2d -np 1 ;;
  scratch)
    nnUNet_results=$E/results_scratch python benchmarks/nnunet_train.py 501 2d 0 -tr nnUNetTrainer_1x50 -device cpu ;;
  pretrain)
    python -m cover pretrain --dim 2 --backbone nnunet --plans "$PLANS" --configuration 2d --data "$RAW" \
        --intensity zscore --steps 150 --batch-size 8 --lr 1e-3 --seed 0 --device cpu --out "$E/cover_run"
    python -m cover export "$E/cover_run" --format nnunet --out "$E/cover_2d.pth" ;;
  cover)
    nnUNet_results=$E/results_cover python benchmarks/nnunet_train.py 501 2d 0 -tr nnUNetTrainer_1x50 -device cpu \
        -pretrained_weights "$E/cover_2d.pth" ;;
esac
