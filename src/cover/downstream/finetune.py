"""Fine-tuning and linear probing behind ``cover finetune`` and :func:`cover.finetune`.

A pretrained backbone (or a freshly initialised one: the scratch baseline, same recipe) gets
a new head and is trained on labeled cases:

- segmentation: 1x1(x1) convolution on the finest decoder features, MONAI ``DiceCELoss``,
  random crops of the training size, flips + small affine + intensity augmentation;
  validation by whole-image (sliding-window) inference and mean foreground Dice;
- classification: linear layer on pooled bottleneck features, cross-entropy, validation AUC.

Adam with linear warm-up and cosine decay, gradient clipping; ``freeze=encoder`` or
``freeze=all`` (linear probe) keep pretrained parts fixed. The output folder holds
``config.yaml``, ``split.json`` (which cases were labeled, validation, unused), ``log.csv``,
TensorBoard events, ``curves.png``, ``best.pt`` (best validation score), ``last.pt`` and
``summary.json``. Checkpoints carry plain-JSON metadata (task, classes, preset, patch size,
backbone) so ``cover evaluate``/``cover predict`` need nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn
from tqdm.auto import tqdm

import cover
from cover.config import save_yaml, to_dict
from cover.data.record import data_error
from cover.downstream.augment import augment_batch
from cover.downstream.batches import BatchSampler
from cover.downstream.cases import Case, find_cases, split_cases
from cover.downstream.config import FinetuneConfig, resolve_finetune_config, resolve_steps
from cover.downstream.inference import classify, segment_logits
from cover.downstream.loading import LoadedCase, load_case
from cover.downstream.metrics import classification_scores, json_safe, mean_std, segmentation_scores
from cover.downstream.models import (
    build_network,
    freeze_backbone,
    load_backbone_weights,
    load_pretrained_backbone,
    pretrained_preset,
    save_finetuned,
)
from cover.downstream.outputs import prepare_output
from cover.errors import ConfigError, CoverError
from cover.train.distributed import resolve_device
from cover.train.logger import RunLogger
from cover.train.schedule import warmup_cosine


@dataclasses.dataclass
class _Data:
    """Where the cases come from, after the demo has been written out."""

    images: str | None
    labels: str | None
    datalist: str | None
    val_images: str | None
    val_labels: str | None
    val_datalist: str | None
    test_images: str | None = None
    test_labels: str | None = None


def _data_sources(config: FinetuneConfig, out: Path) -> _Data:
    if not config.is_demo:
        return _Data(
            config.images, config.labels, config.datalist, config.val_images, config.val_labels, config.val_datalist
        )
    from cover.downstream.demo import write_demo_task

    paths = write_demo_task(out / "demo_data", size=config.size[0])
    # The demo validates on its test slab (no other labeled slices exist); it reports ``select``.
    return _Data(
        paths["images"],
        paths["labels"],
        None,
        paths["test_images"],
        paths["test_labels"],
        None,
        paths["test_images"],
        paths["test_labels"],
    )


def _backbone_spec(config: FinetuneConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """Backbone description, pretrained weights (or ``None``) and information about their source."""
    if config.pretrained is None:
        spec = {
            "backbone": config.model.backbone,
            "backbone_args": {"channels": list(config.model.channels)},
            "spatial_dims": config.dim,
            "in_channels": config.in_channels,
        }
        return spec, None, {"pretrained": None}
    weights, metadata, path = load_pretrained_backbone(config.pretrained)
    dims, channels = int(metadata["spatial_dims"]), int(metadata["in_channels"])
    if dims != config.dim:
        raise ConfigError(f"dim: {config.dim} but the pretrained checkpoint {path} is {dims}D; use --dim {dims}")
    if channels != config.in_channels:
        raise ConfigError(f"in_channels: {config.in_channels} but the pretrained checkpoint {path} expects {channels}")
    spec = {
        "backbone": metadata["backbone"],
        "backbone_args": dict(metadata.get("backbone_args") or {}),
        "spatial_dims": dims,
        "in_channels": channels,
    }
    source = {
        "pretrained": str(path),
        "pretrained_method": metadata.get("method"),
        "pretrained_preset": pretrained_preset(metadata),
        "encoder_only": bool(metadata.get("encoder_only")),
    }
    return spec, weights, source


def _select_cases(config: FinetuneConfig, data: _Data) -> tuple[list[Case], list[Case], list[Case], list[str] | None]:
    cases, class_names = find_cases(config.task, data.images, data.labels, data.datalist)
    explicit_val = data.val_images is not None or data.val_datalist is not None
    split = split_cases(
        len(cases),
        seed=config.seed,
        val_fraction=0.0 if explicit_val else config.val_fraction,
        label_fraction=config.label_fraction,
        num_labeled=config.num_labeled,
    )
    train = [cases[i] for i in split["train"]]
    unused = [cases[i] for i in split["unused"]]
    val = [cases[i] for i in split["val"]]
    if explicit_val:
        val, val_names = find_cases(config.task, data.val_images, data.val_labels, data.val_datalist)
        if config.task == "cls":
            val = _remap_classes(val, val_names or [], class_names or [], data.val_images or data.val_datalist)
    return train, val, unused, class_names


def _remap_classes(cases: list[Case], names: list[str], known: list[str], source: Any) -> list[Case]:
    """Express class indices of ``cases`` (over ``names``) in the training classes ``known``."""
    lookup = {name: i for i, name in enumerate(known)}
    unknown = sorted(set(names) - set(lookup))
    if unknown:
        raise data_error(source, f"classes {unknown} do not occur in the training labels {known}")
    return [dataclasses.replace(c, target=lookup[names[c.target]]) for c in cases]


def _write_split(out: Path, config: FinetuneConfig, train: list[Case], val: list[Case], unused: list[Case]) -> None:
    def listing(cases: list[Case]) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "image": str(c.image)}
            | ({"label": str(c.label)} if c.label is not None else {})
            | ({"target": c.target} if c.target is not None else {})
            for c in cases
        ]

    split = {
        "seed": config.seed,
        "label_fraction": config.label_fraction,
        "num_labeled": len(train),
        "train": listing(train),
        "val": listing(val),
        "unused": listing(unused),
    }
    (out / "split.json").write_text(json.dumps(split, indent=2))


def _load(cases: list[Case], config: FinetuneConfig, preset: str | None, desc: str) -> list[LoadedCase]:
    return [
        load_case(c, task=config.task, dim=config.dim, preset=preset, in_channels=config.in_channels, size=config.size)
        for c in tqdm(cases, desc=desc, leave=False, disable=len(cases) < 20)
    ]


def _num_classes(config: FinetuneConfig, loaded: list[LoadedCase], class_names: list[str] | None) -> int:
    if config.task == "cls":
        found = len(class_names or [])
        if found < 2:
            raise CoverError(f"labels: classification needs at least 2 classes, found {class_names}")
        if config.num_classes is not None and config.num_classes < found:
            raise ConfigError(f"num_classes: {config.num_classes} but the labels hold {found} classes")
        return config.num_classes or found
    top = max(int(c.label.max()) for c in loaded)
    if config.num_classes is None:
        return max(2, top + 1)
    if top >= config.num_classes:
        bad = next(c for c in loaded if int(c.label.max()) == top)
        raise data_error(bad.case.label, f"holds label {top} but num_classes is {config.num_classes}")
    return config.num_classes


@torch.no_grad()
def validation_score(
    network: nn.Module,
    cases: list[LoadedCase],
    task: str,
    num_classes: int,
    patch_size: tuple[int, ...],
    divisor: int,
    overlap: float,
    device: torch.device,
) -> dict[str, float]:
    """Validation metrics of the current network.

    Args:
        network: The network (switched to eval mode and back).
        cases: Loaded validation cases.
        task: ``seg`` or ``cls``.
        num_classes: ``K``.
        patch_size: Sliding-window size.
        divisor: Backbone divisor.
        overlap: Sliding-window overlap.
        device: Device.

    Returns:
        seg: ``{"score", "val_dice"}`` (mean over cases of the mean foreground Dice);
        cls: ``{"score", "val_auc", "val_accuracy"}`` (score = AUC, or accuracy when AUC is
        undefined).
    """
    was_training = network.training
    network.eval()
    try:
        if task == "seg":
            dices = []
            for case in cases:
                logits = segment_logits(network, case.image.to(device), patch_size, divisor, overlap=overlap)
                scores = segmentation_scores(logits.argmax(0), case.label, num_classes, hd95=False)
                dices.append(float(np.nanmean(scores["dice"])))
            dice = mean_std(dices)[0]
            return {"score": dice, "val_dice": dice}
        probabilities = np.concatenate(
            [
                classify(network, torch.stack([c.image for c in cases[i : i + 16]]).to(device)).cpu().numpy()
                for i in range(0, len(cases), 16)
            ]
        )
        scores = classification_scores(probabilities, np.asarray([c.case.target for c in cases]))
        score = scores["auc"] if not math.isnan(scores["auc"]) else scores["accuracy"]
        return {"score": score, "val_auc": scores["auc"], "val_accuracy": scores["accuracy"]}
    finally:
        network.train(was_training)


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.default_rng([seed, step, 0xA06]).integers(0, 2**62))


def finetune(config: FinetuneConfig | dict[str, Any] | str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Fine-tune (or linear-probe) a pretrained backbone, or train from scratch, on labeled data.

    Args:
        config: A :class:`~cover.downstream.config.FinetuneConfig`, a dict of its keys, a YAML
            path, or ``None`` (the built-in MNI152 tissue demo when no data is given).
        **options: Config keys overriding ``config`` (same names as the CLI options).

    Returns:
        The run summary (also ``OUT/summary.json``): steps, best/last validation score,
        checkpoint paths, case counts and, for the demo, the test metrics.
    """
    config = resolve_finetune_config(config, **options)
    device = resolve_device(config.device)
    out = prepare_output(config.out, config.overwrite, "finetune")
    data = _data_sources(config, out)
    spec, weights, source = _backbone_spec(config)
    preset = config.preset or source.get("pretrained_preset")
    train_cases, val_cases, unused, class_names = _select_cases(config, data)
    if not train_cases:
        raise CoverError("no labeled training cases left after the split; lower val_fraction or add data")
    _write_split(out, config, train_cases, val_cases, unused)
    train = _load(train_cases, config, preset, "loading training cases")
    val = _load(val_cases, config, preset, "loading validation cases")
    num_classes = _num_classes(config, train + val, class_names)
    names = list(config.class_names) if config.class_names else class_names
    if names is not None and len(names) != num_classes:
        raise ConfigError(f"class_names: {len(names)} names for {num_classes} classes")
    config = resolve_steps(config, len(train))
    save_yaml(config, out / "config.yaml")

    torch.manual_seed(config.seed)
    network = build_network(config.task, spec, num_classes)
    if weights is not None:
        load_backbone_weights(network, weights, source["encoder_only"], source["pretrained"])
    backbone = network.backbone
    try:
        backbone.check_size(config.size)
    except ConfigError as error:
        raise ConfigError(f"size: {error}") from None
    freeze_backbone(network, config.freeze)
    network.to(device)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, config.steps, config.warmup_steps)
    )
    criterion = DiceCELoss(to_onehot_y=True, softmax=True) if config.task == "seg" else nn.CrossEntropyLoss()
    metric = "val_dice" if config.task == "seg" else "val_auc"
    metadata = {
        "cover_version": cover.__version__,
        "task": config.task,
        "num_classes": num_classes,
        "class_names": names,
        "spatial_dims": spec["spatial_dims"],
        "in_channels": spec["in_channels"],
        "preset": preset or "auto",
        "patch_size": list(config.size),
        "overlap": config.overlap,
        "backbone": spec["backbone"],
        "backbone_args": spec["backbone_args"],
        "divisor": int(backbone.divisor),
        "pyramid_channels": list(backbone.pyramid_channels),
        "freeze": config.freeze,
        "demo": config.is_demo,
        "seed": config.seed,
        **source,
    }
    sampler = BatchSampler(train, config.batch_size, config.size, config.seed, config.foreground_prob)
    fields = ["loss", "lr", "seconds", metric] + (["val_accuracy"] if config.task == "cls" else [])
    logger = RunLogger(out, fields)
    start = f"pretrained={source['pretrained']}" if weights is not None else "scratch"
    print(
        f"cover finetune: task={config.task} dim={config.dim} {start} "
        f"freeze={config.freeze} train={len(train)} val={len(val)} classes={num_classes} steps={config.steps} "
        f"batch={config.batch_size} size={list(config.size)} device={device}",
        file=sys.stderr,
    )
    best, best_step, stale, history = -math.inf, 0, 0, []
    last_val: dict[str, float] = {}
    tic = time.monotonic()
    network.train()
    progress = tqdm(total=config.steps, desc="finetune", dynamic_ncols=True)
    done = 0
    try:
        for step in range(config.steps):
            images, targets = sampler.batch(step)
            images, targets = images.to(device), targets.to(device)
            generator = torch.Generator(device=device).manual_seed(_step_seed(config.seed, step))
            with torch.no_grad():
                if config.task == "seg":
                    images, targets = augment_batch(images, targets, config.augment, generator)
                else:
                    images, _ = augment_batch(images, None, config.augment, generator)
            logits = network(images)
            loss = criterion(logits, targets[:, None] if config.task == "seg" else targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            done = step + 1
            history.append(float(loss.detach()))
            row: dict[str, float] = {}
            if val and (done % config.val_every == 0 or done == config.steps):
                last_val = validation_score(
                    network, val, config.task, num_classes, config.size, backbone.divisor, config.overlap, device
                )
                row.update({k: v for k, v in last_val.items() if k != "score"})
                if last_val["score"] > best:
                    best, best_step, stale = last_val["score"], done, 0
                    save_finetuned(out / "best.pt", network, {**metadata, "step": done, metric: best}, to_dict(config))
                else:
                    stale += 1
            if done % config.log_every == 0 or done == config.steps or row:
                row.update(loss=history[-1], lr=scheduler.get_last_lr()[0], seconds=time.monotonic() - tic)
                logger.log(done, row)
            progress.update(1)
            progress.set_postfix({"loss": f"{history[-1]:.3f}", metric: f"{best:.3f}" if best > -math.inf else "-"})
            if config.patience is not None and stale >= config.patience:
                tqdm.write(f"early stop at step {done}: no better {metric} in {config.patience} validations")
                break
    finally:
        progress.close()
        logger.close()
    save_finetuned(out / "last.pt", network, {**metadata, "step": done, metric: last_val.get("score")}, to_dict(config))
    if not val:  # nothing to select on
        save_finetuned(out / "best.pt", network, {**metadata, "step": done}, to_dict(config))
        best_step = done
    selected = out / ("best.pt" if config.select == "best" else "last.pt")
    summary: dict[str, Any] = {
        "task": config.task,
        "pretrained": source["pretrained"],
        "freeze": config.freeze,
        "seed": config.seed,
        "num_train": len(train),
        "num_val": len(val),
        "num_unused": len(unused),
        "num_classes": num_classes,
        "class_names": names,
        "steps": done,
        "planned_steps": config.steps,
        "seconds": round(time.monotonic() - tic, 1),
        "final_loss": float(np.mean(history[-max(1, min(20, len(history) // 5)) :])),
        f"best_{metric}": best if best > -math.inf else None,
        "best_step": best_step,
        f"last_{metric}": last_val.get("score"),
        "best_checkpoint": str(out / "best.pt"),
        "last_checkpoint": str(out / "last.pt"),
        "select": config.select,
        "checkpoint": str(selected),
    }
    _plot_curves(out, metric)
    if config.is_demo and config.evaluate_test:
        from cover.downstream.evaluate import evaluate

        test = evaluate(
            selected,
            images=data.test_images,
            labels=data.test_labels,
            out=out / "test",
            device=config.device,
            overwrite=True,
        )
        summary["test"] = {k: test[k] for k in ("mean_dice", "mean_dice_std", "classes", "num_cases")}
        summary["test_note"] = (
            f"demo: {summary['checkpoint']} on the 10 test-slab slices (z 100-109); the demo validates on this slab, "
            "so it reports the last checkpoint, not the best"
        )
    summary = json_safe(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    score = summary.get("test", {}).get("mean_dice")
    tail = f", test mean Dice {score:.3f}" if score is not None else ""
    best_text = f"{best:.3f} at step {best_step}" if best > -math.inf else "n/a (no validation cases)"
    print(f"best {metric} {best_text}{tail}; results in {out}", file=sys.stderr)
    return summary


def _plot_curves(out: Path, metric: str) -> None:
    from cover.analysis.figures import plot_losses

    plot_losses(out / "log.csv", out / "curves.png", columns=("loss", metric))
