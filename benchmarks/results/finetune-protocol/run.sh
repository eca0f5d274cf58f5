#!/bin/bash
# One fine-tuning cell of benchmarks/results/README.md, "Fine-tuning protocol for pretrained backbones
# (stop 14)": the benchmark's own cell settings (default preset, mni-regions-2d, flip_prob 0, half-width
# U-Net for scratch), then `cover evaluate` of the best-validated checkpoint on the 20 test subjects.
# usage: run.sh METHOD N SEED TAG [key=value ...]   (writes /tmp/ftproto/runs/METHOD/TAG/nN-seedS)
# e.g.   run.sh cover 1 0 fz60 freeze_steps=60
set -e
m=$1; n=$2; s=$3; tag=$4; shift 4
case $m in
  scratch) pre="";;
  cover) pre=/tmp/prot/r300vic/pretrain/cover-2d/checkpoints/step_00000300.pt;;
  cover-cv) pre=$(ls /tmp/prot/r300cv/pretrain/cover-2d/checkpoints/step_00000300.pt);;
  cover-paper) pre=$(ls /tmp/prot/r300p/pretrain/cover-2d/checkpoints/step_00000300.pt);;
  dense-infonce) pre=/tmp/prot/r300/pretrain/dense-infonce-2d/checkpoints/step_00000300.pt;;
  # cover-enc: encoder-only export of the cover backbone (the decoder starts from a fresh initialisation):
  #   cover export --checkpoint <cover step_00000300.pt> --encoder-only --out /tmp/ftproto/cover-enc
  cover-enc) pre=/tmp/ftproto/cover-enc;;
  simclr) pre=/tmp/prot/r300/pretrain/simclr-2d/checkpoints/step_00000300.pt;;
esac
out=/tmp/ftproto/runs/$m/$tag/n$n-seed$s
mkdir -p $out
D=/tmp/prot/r300/data/mni-regions-2d
steps=$(( 40*n > 300 ? 40*n : 300 ))
cfg=$out.yaml
cat > $cfg <<EOC
images: $D/train/images
labels: $D/train/labels
dim: 2
class_names: [background, left GM, right GM, left WM, right WM, ventricles]
num_labeled: $n
val_fraction: 0.2
steps: $steps
batch_size: 4
size: 64
lr: 0.002
patience: 4
preset: mri
seed: $s
out: $out
overwrite: true
evaluate_test: false
augment: {flip_prob: 0.0}
model: {channels: [16, 32, 64, 128, 256, 128, 64, 32, 16]}
EOC
[ -n "$pre" ] && echo "pretrained: $pre" >> $cfg
for kv in "$@"; do echo "${kv%%=*}: ${kv#*=}" >> $cfg; done
cd /path/to/cover/checkout
PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python -m cover finetune --config $cfg > $out.log 2>&1
PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python -m cover evaluate --checkpoint $out/best.pt --images $D/test/images --labels $D/test/labels --out $out/test >> $out.log 2>&1
