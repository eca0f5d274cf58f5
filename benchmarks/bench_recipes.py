"""Measure COVER's loss recipes: feature collapse, held-out EPE, class geometry and a linear probe.

For each variant, COVER is pretrained on the built-in 2D demo data (MNI152 axial slices) with
the ``default`` benchmark preset's network and settings (half-width U-Net, 64 px crops of 96 px
slices, batch 4, lr 1e-3, the demo's view ranges), then measured **without touching the
benchmark's test slab** (z 100-109):

* the collapse statistic of the final step (``cover pretrain``'s ``summary.json``) and the
  held-out endpoint error of the vector head (the demo's unlabeled held-out pairs);
* ``cover analyze``'s class geometry on a validation slab (z 86-95: between the fine-tuning slab
  z 70-77 and the test slab): inter-class cosine distance, same-class 1 px neighbour distance
  over inter-class distance, and the collapse statistic of the analysed features;
* a linear probe: a per-pixel softmax classifier on the frozen finest features, trained on the
  8 fine-tuning slices (z 70-77) and scored by mean foreground Dice on the validation slab;
* optionally (``--finetune-seeds``) a short full fine-tuning on 1 labeled slice of z 70-77,
  scored on the validation slab.

An untrained backbone (``scratch``) is measured the same way. Variants are
``LABEL=RECIPE[,key=value...]`` where keys are ``method_options`` of cover (``var_weight``, ...)
or pretraining keys ``con_weight``, ``vec_weight``, ``views.max_displacement``; a bare recipe
name is its own label.

Example (one torch thread on the shared machine)::

    OMP_NUM_THREADS=1 python benchmarks/bench_recipes.py --steps 400 --out runs/recipes \
        --variants scratch paper centred vicreg nocon=paper,con_weight=0
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

HALF_CHANNELS = [16, 32, 64, 128, 256, 128, 64, 32, 16]
VAL_SLAB = (86, 96)
PRETRAIN_KEYS = ("con_weight", "vec_weight")


def parse_variant(text: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``LABEL=RECIPE,k=v`` -> ``(label, method_options, pretrain overrides)``."""
    label, _, spec = text.partition("=")
    parts = (spec or label).split(",")
    options: dict[str, Any] = {"recipe": parts[0]}
    overrides: dict[str, Any] = {}
    for item in parts[1:]:
        key, _, value = item.partition("=")
        parsed: Any = json.loads(value) if value not in ("raw", "centred", "projected", "voxels", "relative") else value
        if key in PRETRAIN_KEYS:
            overrides[key] = parsed
        elif key.startswith("views."):
            overrides.setdefault("views", {})[key.removeprefix("views.")] = parsed
        else:
            options[key] = parsed
    return label, options, overrides


def slab(z_range: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 96, 96)`` in [0, 1] and labels ``(N, 96, 96)`` of a slab of axial slices."""
    from cover.data.demo import demo_slices

    images, labels = demo_slices(range(*z_range))
    return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None], torch.from_numpy(labels.astype(np.int64))


@torch.no_grad()
def finest(backbone: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` finest decoder features."""
    return torch.cat([backbone(images[i : i + 4])[-1].float() for i in range(0, len(images), 4)])


def mean_foreground_dice(prediction: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """Mean over images of the mean Dice over foreground classes present in the reference."""
    scores = []
    for pred, ref in zip(prediction, labels, strict=True):
        per = []
        for c in range(1, classes):
            if (ref == c).any():
                inter = ((pred == c) & (ref == c)).sum().item()
                per.append(2 * inter / ((pred == c).sum().item() + (ref == c).sum().item()))
        scores.append(np.mean(per))
    return float(np.mean(scores))


def linear_probe(
    backbone: torch.nn.Module, train: tuple, val: tuple, steps: int = 300, standardise: bool = True
) -> float:
    """Per-pixel softmax classifier on frozen features; validation mean foreground Dice.

    ``standardise`` divides each channel by its spread first, which undoes a collapse's scale
    (any affine-separable code is found); without it the classifier sees the features as
    fine-tuning's 1x1 head does.
    """
    feats_train, feats_val = finest(backbone, train[0]), finest(backbone, val[0])
    channels = feats_train.shape[1]
    x = feats_train.movedim(1, -1).reshape(-1, channels)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    if not standardise:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    x = (x - mean) / std
    y = train[1].reshape(-1)
    classes = int(max(train[1].max(), val[1].max())) + 1
    torch.manual_seed(0)
    layer = torch.nn.Linear(channels, classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    weights = 1.0 / torch.bincount(y, minlength=classes).float().clamp(min=1)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(layer(x), y, weight=weights / weights.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        xv = (feats_val.movedim(1, -1) - mean) / std
        prediction = layer(xv).argmax(-1)
    return mean_foreground_dice(prediction, val[1], classes)


def geometry(backbone: torch.nn.Module, val: tuple) -> dict[str, float]:
    """``cover analyze``'s numbers on the validation slab plus the collapse statistic."""
    from cover.analysis.analyze import LabeledImage, feature_geometry
    from cover.methods.collapse import collapse_stats

    data = [LabeledImage(f"val{i}", val[0][i], val[1][i]) for i in range(len(val[0]))]
    results, _ = feature_geometry(backbone, data, samples_per_class=500, max_distance=4)
    stats = collapse_stats(finest(backbone, val[0]), 2048, torch.Generator().manual_seed(0))
    return {
        "inter": results["inter"],
        "intra_over_inter": results["intra_over_inter"],
        "neighbour_over_inter_1px": results["same_class_neighbour_distance_over_inter_1px"],
        "val_pair_cos": stats["pair_cos"],
        "val_eff_rank": stats["eff_rank"],
    }


def finetune_dice(checkpoint: str | None, folders: dict[str, str], out: Path, seed: int) -> float:
    """1 labeled slice of z 70-77, 120 steps (the default preset's recipe); validation-slab Dice."""
    from cover.downstream.finetune import finetune

    summary = finetune(
        pretrained=checkpoint,
        images=folders["images"],
        labels=folders["labels"],
        val_images=folders["val_images"],
        val_labels=folders["val_labels"],
        num_labeled=1,
        steps=120,
        batch_size=4,
        size=64,
        lr=2e-3,
        seed=seed,
        select="last",
        val_every=120,
        out=str(out),
        overwrite=True,
        model=None if checkpoint else {"channels": HALF_CHANNELS},
        evaluate_test=False,
    )
    return float(summary["last_val_dice"])


def saved_checkpoint(record: dict[str, Any], root: Path) -> str | None:
    """The pretrained checkpoint of a variant's record (``None`` for scratch)."""
    if record.get("checkpoint") or record["variant"] == "scratch":
        return record.get("checkpoint")
    return str(sorted((root / "pretrain" / record["label"] / "checkpoints").glob("*.pt"))[-1])


def write_folders(root: Path) -> dict[str, str]:
    """Fine-tuning slab (z 70-77) and validation slab as PNG folders."""
    from PIL import Image

    from cover.data.demo import FINETUNE_SLAB

    paths = {}
    for prefix, z_range in (("", FINETUNE_SLAB), ("val_", VAL_SLAB)):
        images, labels = slab(z_range)
        for role, arrays in (("images", images[:, 0]), ("labels", labels)):
            folder = root / f"{prefix or 'train_'}{role}"
            folder.mkdir(parents=True, exist_ok=True)
            for z, array in zip(range(*z_range), arrays, strict=True):
                value = (array.numpy() * 255).round() if role == "images" else array.numpy()
                Image.fromarray(value.astype(np.uint8)).save(folder / f"z{z:03d}.png")
            paths[prefix + role] = str(folder)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--out", default="runs/recipes")
    args = parser.parse_args()
    from cover.analysis.analyze import load_backbone
    from cover.data.demo import FINETUNE_SLAB
    from cover.pretraining.pretrain import pretrain

    torch.set_num_threads(1)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    train, val = slab(FINETUNE_SLAB), slab(VAL_SLAB)
    one_slice = (train[0][:1], train[1][:1])
    folders = write_folders(root / "data") if args.finetune_seeds else {}
    rows = []
    for text in args.variants:
        label, options, overrides = parse_variant(text)
        record_path = root / f"{label}.json"
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            if "probe_raw_dice" not in record:  # added after the first runs: computed from the checkpoint
                checkpoint = saved_checkpoint(record, root)
                backbone, _ = load_backbone(checkpoint, None if checkpoint else {"channels": HALF_CHANNELS}, args.seed)
                record["probe_raw_dice"] = linear_probe(backbone, train, val, standardise=False)
                record["probe_raw_1slice_dice"] = linear_probe(backbone, one_slice, val, standardise=False)
            for seed in args.finetune_seeds:  # seeds asked for later
                key = f"finetune_dice_seed{seed}"
                if key not in record:
                    checkpoint = saved_checkpoint(record, root)
                    record[key] = finetune_dice(checkpoint, folders, root / "finetune" / f"{label}-{seed}", seed)
            record_path.write_text(json.dumps(record, indent=2))
            rows.append(record)
            continue
        tic = time.process_time()
        record: dict[str, Any] = {"label": label, "variant": text, "steps": args.steps}
        if options["recipe"] == "scratch":
            backbone, _ = load_backbone(None, {"channels": HALF_CHANNELS}, args.seed)
            checkpoint = None
        else:
            summary = pretrain(
                {
                    "method": "cover",
                    "method_options": options,
                    "model": {"channels": HALF_CHANNELS},
                    "steps": args.steps,
                    "warmup_steps": 30,
                    "seed": args.seed,
                    "out": str(root / "pretrain" / label),
                    "overwrite": True,
                    **overrides,
                }
            )
            checkpoint = summary["checkpoint"]
            backbone, _ = load_backbone(checkpoint)
            record.update(
                {
                    "pair_cos": summary["final_feat_pair_cos"],
                    "eff_rank": summary["final_feat_eff_rank"],
                    "collapsed": summary["features_collapsed"],
                    "epe": summary["epe"],
                    "epe_zero": summary["epe_zero"],
                    "final_loss_vec": summary["final_loss_vec"],
                    "final_loss_con": summary["final_loss_con"],
                }
            )
        record.update(geometry(backbone, val))
        record["checkpoint"] = checkpoint
        record["probe_dice"] = linear_probe(backbone, train, val)
        record["probe_raw_dice"] = linear_probe(backbone, train, val, standardise=False)
        record["probe_raw_1slice_dice"] = linear_probe(backbone, one_slice, val, standardise=False)
        for seed in args.finetune_seeds:
            record[f"finetune_dice_seed{seed}"] = finetune_dice(checkpoint, folders, root / "finetune" / label, seed)
        record["cpu_seconds"] = round(time.process_time() - tic, 1)
        record_path.write_text(json.dumps(record, indent=2))
        rows.append(record)
        print(json.dumps(record), file=sys.stderr)
    print(f"machine: {platform.machine()} {torch.__version__}, {torch.get_num_threads()} torch thread(s)")
    columns = [
        ("pair_cos", "train pair cos"),
        ("eff_rank", "train eff. rank"),
        ("epe", "EPE px"),
        ("val_pair_cos", "val pair cos"),
        ("val_eff_rank", "val eff. rank"),
        ("inter", "inter-class dist."),
        ("neighbour_over_inter_1px", "1 px nbr / inter"),
        ("probe_dice", "probe Dice (standardised)"),
        ("probe_raw_dice", "probe Dice (raw)"),
        ("probe_raw_1slice_dice", "probe Dice (raw, 1 slice)"),
    ] + [(f"finetune_dice_seed{s}", f"fine-tune Dice s{s}") for s in args.finetune_seeds]
    print("| variant | " + " | ".join(name for _, name in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[k]:.3f}" if isinstance(row.get(k), float) else "–" for k, _ in columns]
        print(f"| {row['variant']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
