#!/usr/bin/env bash
# The README's three nnU-Net commands, run on the tiny synthetic dataset of the tests
# (tests/_support/nnunet.py: 6 labeled 32^3 cases, 2 unlabeled) with few steps (docs/interop.md).
#   R=/tmp/nnu_readme bash benchmarks/nnunet_readme_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
R=${R:-/tmp/nnu_readme}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nnUNet_n_proc_DA=0 nnUNet_def_n_proc=1
export nnUNet_raw=$R/nnUNet_raw nnUNet_preprocessed=$R/nnUNet_preprocessed nnUNet_results=$R/nnUNet_results
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
PYTHONPATH=$PWD/tests python -c "from pathlib import Path; from _support.nnunet import write_raw_dataset; \
write_raw_dataset(Path('$nnUNet_raw'), dataset_id=1, cases=6)"  # 5 folds need more than 4 cases
nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d 1 -c 2d -np 1   # (nnU-Net's planner refuses nnUNet_n_proc_DA=0)
export PYTHONPATH=$PWD/src
# 1. pretrain nnU-Net's 2d network (3 steps here)
python -m cover pretrain --backbone nnunet --plans "$nnUNet_preprocessed/Dataset001_Tiny/nnUNetPlans.json" \
    --configuration 2d --dim 2 --data "$nnUNet_raw/Dataset001_Tiny" --intensity zscore --steps 3 --batch-size 2 --out "$R/runs/x"
# 2. export for nnU-Net
python -m cover export --checkpoint "$R/runs/x" --format nnunet --out "$R/runs/x_2d.pth"
# 3. nnUNetv2_train as written (default trainer, 1000 epochs): stopped once it has loaded the weights and begun epoch 0
nnUNet_results=$R/nnUNet_results_console nnUNetv2_train 1 2d 0 -pretrained_weights "$R/runs/x_2d.pth" -device cpu \
    > "$R/console.log" 2>&1 &
pid=$!
for _ in $(seq 120); do sleep 5; grep -q "Epoch 0" "$R/console.log" && break; done
kill "$pid"
echo "nnUNetv2_train loaded $(grep -c 'shape torch.Size' "$R/console.log") pretrained tensors; $(grep -m1 'Epoch 0' "$R/console.log")"
# 3'. the same through nnU-Net's entry point with a 5-iteration schedule, to the end of its validation
python benchmarks/nnunet_train.py 1 2d 0 -tr nnUNetTrainer_1x5 -device cpu -pretrained_weights "$R/runs/x_2d.pth"
