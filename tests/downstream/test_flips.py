"""The flip check of ``cover finetune``: lateralised labels turn flips off along their axis only.

Hand-built "brains" (an outer ring and an inner ellipse split at the midline into left/right
classes, plus symmetric ventricles) are placed off the image centre with a different size per
case, on non-square grids, so a mirror about the image centre, a swapped axis or a missed
translation gives another answer.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cover.downstream.config import AugmentConfig, FinetuneConfig, resolve_finetune_config
from cover.downstream.finetune import finetune
from cover.downstream.flips import GRID, GRID_ALONG, _similarities, check_flips, lateral_pairs, mirror_similarity
from cover.errors import ConfigError

NAMES = ("background", "left GM", "right GM", "left WM", "right WM", "ventricles")


def brain(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...], split: int) -> np.ndarray:
    """Labels: ring 1|2 and core 3|4 split at ``centre[split]`` along ``split``, ventricles 5 (symmetric)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    offset = grid - np.reshape(centre, (-1,) + (1,) * len(shape))
    r = np.sqrt((offset**2 / np.reshape(radii, (-1,) + (1,) * len(shape)) ** 2).sum(0))
    left = offset[split] < 0
    labels = np.zeros(shape, dtype=np.int64)
    labels[r <= 1] = np.where(left, 1, 2)[r <= 1]
    labels[r <= 0.7] = np.where(left, 3, 4)[r <= 0.7]
    labels[r <= 0.25] = 5
    return labels


def brains(dim: int, split: int, count: int = 4) -> list[torch.Tensor]:
    shape = (40, 56) if dim == 2 else (26, 30, 22)
    rng = np.random.default_rng(split + 10 * dim)
    maps = []
    for _ in range(count):
        radii = tuple(rng.uniform(0.28, 0.4) * n for n in shape)
        centre = tuple(rng.uniform(r + 1, n - r - 2) for r, n in zip(radii, shape, strict=True))
        maps.append(torch.from_numpy(brain(shape, centre, radii, split)))
    return maps


@pytest.mark.parametrize(("dim", "split"), [(2, 0), (2, 1), (3, 2)])
def test_left_right_split_triggers_on_its_axis_only_and_pairs_the_mirror_classes(dim, split):
    labels = brains(dim, split)
    found = lateral_pairs(labels, 6, range(dim))
    assert [(p.first, p.second) for p in found[split]] == [(1, 2), (3, 4)]
    assert all(not found[axis] for axis in range(dim) if axis != split)
    for pair in found[split]:  # a margin on both thresholds, not a narrow pass
        assert pair.similarity >= 0.9 and max(pair.self_similarity) <= 0.3
    single = lateral_pairs(labels[:1], 6, range(dim))  # one case is enough
    assert [axis for axis in range(dim) if single[axis]] == [split]


@pytest.mark.parametrize(("dim", "split"), [(2, 0), (3, 2)])
def test_symmetric_classes_do_not_trigger(dim, split):
    merged = [torch.tensor([0, 1, 1, 2, 2, 3])[m] for m in brains(dim, split)]  # left+right GM one class, ...
    found = lateral_pairs(merged, 4, range(dim))
    assert all(not pairs for pairs in found.values())
    for axis in range(dim):
        similarity = mirror_similarity(merged, 4, axis)
        assert (similarity.diagonal()[1:] > 0.8).all()  # each class is its own mirror image


@pytest.mark.parametrize("layout", ["corners", "sizes", "one-sided"])
def test_asymmetric_but_not_swapped_shapes_do_not_trigger(layout):
    shape = (40, 56)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    body = ((grid[0] - 19.5) / 18) ** 2 + ((grid[1] - 27.5) / 26) ** 2 <= 1  # class 3, symmetric

    def disc(c0: float, c1: float, r: float) -> np.ndarray:
        return (grid[0] - c0) ** 2 + (grid[1] - c1) ** 2 <= r**2

    labels = np.where(body, 3, 0)
    if layout == "corners":  # lesion 1 top-left, lesion 2 bottom-right: no single flip maps one onto the other
        labels[disc(10, 14, 5)] = 1
        labels[disc(30, 42, 5)] = 2
    elif layout == "sizes":  # a large lesion on one side, a small one inside its mirror image
        labels[disc(10, 27.5, 8)] = 1
        labels[disc(29, 27.5, 2)] = 2
    else:  # a lesion on one side only: its mirror image is plain tissue
        labels[disc(12, 20, 6)] = 1
    found = lateral_pairs([torch.from_numpy(labels)], 4, (0, 1))
    assert found == {0: [], 1: []}
    if layout == "sizes":  # the small lesion lies in the large one's mirror image, yet S stays low
        assert 0 < mirror_similarity([torch.from_numpy(labels)], 4, 0)[1, 2] < 0.5


def test_mirror_similarity_equals_a_plain_loop_over_mirrored_masks():
    # On a grid of exactly GRID_ALONG x GRID cells with foreground on every border, each cell is one
    # pixel: S(a, b) = 2 * sum_x min(n_a(mirror x), n_b(x)) / (sum n_a + sum n_b), n_c(x) = number
    # of maps with class c at x, counted over the maps that hold both a and b. The third map lacks
    # class 2, so the pairs with class 2 are counted over the first two maps only.
    rng = np.random.default_rng(3)
    maps = []
    for k in range(3):
        labels = rng.integers(0, 4, size=(GRID_ALONG, GRID))
        if k == 2:
            labels[labels == 2] = 3
        labels[0, 0] = labels[-1, -1] = 1
        maps.append(labels)
    assert all((m == c).any() for m in maps[:2] for c in (1, 2, 3)) and not (maps[2] == 2).any()
    expected, own = np.zeros((4, 4)), np.zeros((4, 4))
    for a in range(1, 4):
        for b in range(1, 4):
            used = [m for m in maps if (m == a).any() and (m == b).any()]
            shared = shared_self = 0.0
            for i in range(GRID_ALONG):
                for j in range(GRID):
                    n_a = sum(int(m[GRID_ALONG - 1 - i, j] == a) for m in used)
                    shared += min(n_a, sum(int(m[i, j] == b) for m in used))
                    shared_self += min(n_a, sum(int(m[i, j] == a) for m in used))
            expected[a, b] = 2 * shared / sum(int((m == a).sum() + (m == b).sum()) for m in used)
            own[a, b] = shared_self / sum(int((m == a).sum()) for m in used)
    got = mirror_similarity([torch.from_numpy(m) for m in maps], 4, axis=0)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(_similarities([torch.from_numpy(m) for m in maps], 4, 0)[1].numpy(), own, atol=1e-12)
    first_two = mirror_similarity([torch.from_numpy(m) for m in maps[:2]], 4, axis=0)
    assert first_two[1, 2] == pytest.approx(expected[1, 2]) and first_two[1, 3] != pytest.approx(expected[1, 3])
    # background padding (a translation) and 2x upsampling do not change it
    moved = [np.pad(np.repeat(np.repeat(m, 2, 0), 2, 1), ((3, 9), (0, 5))) for m in maps]
    np.testing.assert_allclose(mirror_similarity([torch.from_numpy(m) for m in moved], 4, 0).numpy(), expected)


@pytest.mark.parametrize(("dim", "split"), [(2, 0), (2, 1), (3, 2)])
def test_one_case_missing_a_side_does_not_hide_the_pair(dim, split):
    """Left/right classes only, the right one erased from one case: that case's box holds the left
    side alone, centred, which pooled into every pair made the left class look symmetric
    (S(1, 1) about 0.45 against S(1, 2) about 0.76) and switched the check off."""
    labels = [torch.tensor([0, 1, 2, 1, 2, 0])[m] for m in brains(dim, split)]
    labels[1] = torch.where(labels[1] == 2, 0, labels[1])
    found = lateral_pairs(labels, 3, range(dim))
    assert [(p.first, p.second) for p in found[split]] == [(1, 2)]
    assert found[split][0].similarity >= 0.9 and max(found[split][0].self_similarity) <= 0.15
    assert all(not found[axis] for axis in range(dim) if axis != split)
    assert mirror_similarity(labels, 3, split)[1, 1] > 0.4  # class 1 over all its maps: the lone side counts


def test_check_flips_turns_off_only_an_unset_flip_along_the_lateral_axis():
    labels = brains(2, 1)
    config, decision = check_flips(FinetuneConfig(dim=2), labels, 6, NAMES)
    assert config.augment.flip_prob == 0.5 and config.augment.flip_axes == (0,)
    assert decision.disabled_axes == [1] and decision.warnings == [
        "labels look lateralised along axis 1 (flipping swaps 'left GM' <-> 'right GM', "
        "'left WM' <-> 'right WM'): flips along that axis are off; set augment.flip_prob to override"
    ]
    record = decision.record(NAMES, config)
    assert record["flips_turned_off_along"] == [1] and record["flip_axes"] == [0]
    assert record["lateralised"][0]["pairs"][1]["names"] == ["left WM", "right WM"]

    given = FinetuneConfig(dim=2, augment=AugmentConfig(flip_prob=0.3))
    config, decision = check_flips(given, labels, 6, None)
    assert config.augment == given.augment and decision.disabled_axes == []
    assert decision.warnings[0].endswith(
        "class 3 <-> class 4): flips along that axis stay on (augment.flip_prob=0.3 given)"
    )

    mapped = FinetuneConfig(dim=2, label_values=(0, 10, 20, 30, 40, 50))  # the label maps' own values are named
    assert (
        check_flips(mapped, labels, 6, None)[1]
        .warnings[0]
        .startswith("labels look lateralised along axis 1 (flipping swaps class 1 (value 10) <-> class 2 (value 20), ")
    )

    axes_given = FinetuneConfig(dim=2, augment=AugmentConfig(flip_axes=(0,)))  # the lateral axis is not flipped anyway
    config, decision = check_flips(axes_given, labels, 6, NAMES)
    assert config.augment.flip_axes == (0,) and decision.warnings == [] and decision.checked_axes == [0]

    for quiet in (FinetuneConfig(dim=2, augment=AugmentConfig(flip_prob=0.0)), FinetuneConfig(dim=2, task="cls")):
        config, decision = check_flips(quiet, labels, 6, NAMES)  # nothing flips / no label maps: no check
        assert decision is None and config.augment.flip_axes is None


def test_flip_settings_are_validated():
    with pytest.raises(ConfigError, match=r"^augment.flip_prob: 1.5 must lie in \[0, 1\]$"):
        resolve_finetune_config(images="i", labels="l", augment={"flip_prob": 1.5})
    with pytest.raises(ConfigError, match=r"^augment.flip_axes: \[0, 2\] must be axes 0..1$"):
        resolve_finetune_config(images="i", labels="l", augment={"flip_axes": [0, 2]})
    config = resolve_finetune_config(images="i", labels="l", dim=3, augment={"flip_axes": "0,2"})
    assert config.augment.flip_axes == (0, 2) and config.augment.flip_prob is None


def write_lateral_task(root, count: int = 6):
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, label in enumerate(brains(2, 0, count)):
        label = label.numpy()[:32, :32]  # left and right look the same: only the side tells them apart
        image = 0.1 + 0.3 * (label > 0) + 0.3 * np.isin(label, (3, 4)) + 0.05 * rng.standard_normal(label.shape)
        np.save(images / f"case{i}.npy", image.astype(np.float32))
        Image.fromarray(label.astype(np.uint8)).save(labels / f"case{i}.png")
    return str(images), str(labels)


def test_finetune_on_lateralised_labels_turns_flips_off_and_records_it(tmp_path, caplog):
    images, labels = write_lateral_task(tmp_path / "data")
    options = dict(
        images=images, labels=labels, dim=2, size=32, batch_size=2, steps=2, val_every=2, class_names=NAMES,
        model={"channels": [8, 16, 32, 16, 8]}, device="cpu",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="cover"):
        summary = finetune(**options, out=str(tmp_path / "auto"))
    warnings = [r.getMessage() for r in caplog.records if "lateralised" in r.getMessage()]
    assert warnings == [
        "labels look lateralised along axis 0 (flipping swaps 'left GM' <-> 'right GM', "
        "'left WM' <-> 'right WM'): flips along that axis are off; set augment.flip_prob to override"
    ]
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["augment"]
    assert saved["flip_prob"] == 0.5 and saved["flip_axes"] == [1]
    on_disk = json.loads((tmp_path / "auto" / "summary.json").read_text())["flip_check"]
    assert on_disk == summary["flip_check"] and on_disk["flips_turned_off_along"] == [0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cover"):
        summary = finetune(**options, out=str(tmp_path / "given"), augment={"flip_prob": 0.5})
    assert any("stay on (augment.flip_prob=0.5 given)" in r.getMessage() for r in caplog.records)
    saved = yaml.safe_load((tmp_path / "given" / "config.yaml").read_text())["augment"]
    assert saved["flip_prob"] == 0.5 and saved["flip_axes"] is None
    assert summary["flip_check"]["flips_turned_off_along"] == []


def test_cli_warns_in_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from cover import cli

    images, labels = write_lateral_task(tmp_path / "data", count=4)
    monkeypatch.setattr(sys, "argv", [
        "cover", "finetune", "--images", images, "--labels", labels, "--dim", "2", "--size", "32", "--batch-size", "2",
        "--steps", "1", "--channels", "8,16,32,16,8", "--val-fraction", "0", "--device", "cpu",
        "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    try:
        cli.main()
    except SystemExit as error:
        assert error.code in (0, None)
    err = capsys.readouterr().err
    assert (
        "warning: labels look lateralised along axis 0 (flipping swaps class 1 <-> class 2, class 3 <-> class 4): "
        "flips along that axis are off; set augment.flip_prob to override\n"
    ) in err
