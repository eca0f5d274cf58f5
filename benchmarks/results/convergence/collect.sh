#!/bin/bash
# Copy the small files of every finished convergence cell (and of the pretraining) into this folder,
# then rebuild table.md.   usage: collect.sh ROOT   (ROOT as given to run.py)
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$1
for cell in "$root"/convergence/*/n*-seed*/cell.json; do
  run=$(dirname "$cell"); name=$(basename "$(dirname "$run")")-$(basename "$run")
  mkdir -p "$here/cells/$name"
  cp "$run"/{cell.json,summary.json,config.yaml,split.json,log.csv} "$here/cells/$name/"
done
cp "$root/pretrain/cover-2d/config.yaml" "$here/pretrain_config.yaml"
cp "$root/pretrain/cover-2d/log.csv" "$here/pretrain_log.csv"
python "$here/simulate.py" "$here" > /dev/null
