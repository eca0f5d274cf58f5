"""Feature geometry on hand-made features (stub backbone) and the analyze command end to end."""

import itertools
import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cover.analysis.analyze import LabeledImage, analyze, feature_geometry
from cover.analysis.dispersion import ClassSamples, class_distances
from cover.errors import ConfigError


class AngleBackbone(nn.Module):
    """Stub backbone: the image holds an angle per pixel; the feature is the unit vector at that angle (x 3)."""

    spatial_dims = 2
    in_channels = 1
    divisor = 1
    pyramid_channels = (2,)

    def forward(self, x):
        return [3.0 * torch.cat([torch.cos(x), torch.sin(x)], dim=1)]


def toy_image():
    """8x8: column 0 background; rows 0-3 class 1 (checkerboard of 0 and 60 degrees); rows 4-7 class 2 (180 deg)."""
    labels = np.ones((8, 8), dtype=np.int64)
    labels[4:] = 2
    labels[:, 0] = 0
    angles = np.zeros((8, 8))
    rows, cols = np.indices((8, 8))
    angles[(labels == 1) & ((rows + cols) % 2 == 1)] = math.pi / 3
    angles[labels == 2] = math.pi
    angles[labels == 0] = 1.0  # arbitrary, must not count
    return angles, labels


def brute_force(angles, labels, classes, max_distance):
    pixels = {c: [(r, k) for r in range(8) for k in range(8) if labels[r, k] == c] for c in classes}

    def cos(p, q):
        return math.cos(angles[p] - angles[q])

    intra = np.mean([1 - np.mean([cos(p, q) for p, q in itertools.permutations(pixels[c], 2)]) for c in classes])
    pairs = list(itertools.combinations(classes, 2))
    inter = np.mean([1 - np.mean([cos(p, q) for p in pixels[a] for q in pixels[b]]) for a, b in pairs])
    same, different = [], []
    for d in range(1, max_distance + 1):
        s, o = [], []
        for r, k in itertools.product(range(8), range(8)):
            for q in ((r + d, k), (r, k + d)):
                if q[0] < 8 and q[1] < 8 and labels[r, k] in classes and labels[q] in classes:
                    (s if labels[r, k] == labels[q] else o).append(cos((r, k), q))
        same.append(np.mean(s))
        different.append(np.mean(o))
    return intra, inter, same, different


def test_feature_geometry_matches_brute_force_on_hand_made_features():
    angles, labels = toy_image()
    item = LabeledImage("toy", torch.tensor(angles, dtype=torch.float32)[None], torch.from_numpy(labels))
    results, extras = feature_geometry(AngleBackbone(), [item], samples_per_class=1000, max_distance=3, keep=1)
    intra, inter, same, different = brute_force(angles, labels, [1, 2], 3)
    assert results["classes"] == [1, 2]
    assert results["samples_per_class"] == {"1": 28, "2": 28}  # every foreground pixel
    assert results["intra"] == pytest.approx(intra, abs=1e-6)
    assert results["inter"] == pytest.approx(inter, abs=1e-6)
    assert results["intra_over_inter"] == pytest.approx(intra / inter, rel=1e-6)
    assert results["per_class_intra"]["2"] == pytest.approx(0.0, abs=1e-6)
    curves = results["neighbour_similarity"]
    np.testing.assert_allclose(curves["same"], same, atol=1e-6)
    np.testing.assert_allclose(curves["different"], different, atol=1e-6)
    # the checkerboard: 1 px neighbours in class 1 differ by 60 degrees, 2 px ones are identical
    assert curves["same"][1] == pytest.approx(1.0)
    assert results["random_same_class_similarity"] == pytest.approx(1 - intra, abs=1e-6)
    relative = results["same_class_neighbour_distance_over_inter"]
    np.testing.assert_allclose(relative, [(1 - v) / inter for v in same], atol=1e-6)
    assert len(extras["kept"]) == 1 and extras["kept"][0][2].shape == (2, 8, 8)


def test_class_distances_of_orthogonal_classes():
    samples = {1: np.tile([1.0, 0.0], (5, 1)), 2: np.tile([0.0, 1.0], (4, 1))}
    result = class_distances(samples)
    assert result["intra"] == pytest.approx(0.0) and result["inter"] == pytest.approx(1.0)
    assert result["intra_over_inter"] == pytest.approx(0.0)


def test_class_samples_are_seeded_and_capped():
    unit = torch.randn(3, 10, 10)
    labels = torch.randint(1, 3, (10, 10))
    draws = []
    for _ in range(2):
        samples = ClassSamples(per_class=7, per_image=20, seed=5)
        samples.add(unit, labels, [1, 2])
        samples.add(unit, labels, [1, 2])
        draws.append(samples.sampled())
    assert all(v.shape == (7, 3) for v in draws[0].values())
    assert all(np.array_equal(draws[0][c], draws[1][c]) for c in (1, 2))


def write_pairs(folder, count=3, size=20):
    rng = np.random.default_rng(0)
    for role in ("images", "labels"):
        (folder / role).mkdir(parents=True)
    for i in range(count):
        labels = np.zeros((size, size), dtype=np.uint8)
        labels[4:16, 3:10] = 1
        labels[4:16, 10:17] = 2
        image = (labels * 90 + rng.integers(0, 20, (size, size))).astype(np.uint8)
        Image.fromarray(image).save(folder / "images" / f"case{i}.png")
        Image.fromarray(labels).save(folder / "labels" / f"case{i}.png")


def test_analyze_writes_json_and_figures_and_refuses_to_overwrite(tmp_path):
    write_pairs(tmp_path)
    options = {
        "images": str(tmp_path / "images"),
        "labels": str(tmp_path / "labels"),
        "out": str(tmp_path / "out"),
        "model": {"channels": [8, 16, 32, 16, 8]},  # untrained tiny U-Net; 20 px images get padded to 32
        "samples_per_class": 50,
        "max_distance": 4,
        "class_names": ["bg", "left", "right"],
        "device": "cpu",
    }
    summary = analyze(**options)
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert saved["method"] == "scratch" and saved["num_images"] == 3 and saved["classes"] == [1, 2]
    assert saved["class_names"] == {"1": "left", "2": "right"}
    assert 0 <= saved["intra"] <= 2 and 0 <= saved["inter"] <= 2
    assert len(saved["neighbour_similarity"]["same"]) == 4
    assert summary["intra"] == saved["intra"]
    for name in ("features_pca.png", "embedding.png", "neighbour_similarity.png", "config.yaml"):
        assert (tmp_path / "out" / name).is_file()
    with pytest.raises(ConfigError, match="already holds files"):
        analyze(**options)
    with pytest.raises(ConfigError, match="embedding"):
        analyze(**{**options, "out": str(tmp_path / "other"), "embedding": "umap"})


def test_collapse_verdict_and_report_line():
    from cover.analysis.analyze import report_line

    angles, labels = toy_image()
    item = LabeledImage("toy", torch.tensor(angles, dtype=torch.float32)[None], torch.from_numpy(labels))
    spread, _ = feature_geometry(AngleBackbone(), [item], samples_per_class=100, max_distance=1)
    # Every pixel within 0.02 rad of one angle: collapsed onto one direction.
    rng = np.random.default_rng(0)
    narrow = LabeledImage(
        "narrow", torch.tensor(0.5 + 0.02 * rng.random((8, 8)), dtype=torch.float32)[None], item.label
    )
    collapsed, _ = feature_geometry(AngleBackbone(), [narrow], samples_per_class=100, max_distance=1)
    # Oracle for the spread map: angles 0, 60, 180 degrees and 1 rad; the mean cosine of random
    # pairs is the squared length of the mean unit vector, far below the limit.
    unit = np.stack([np.cos(angles), np.sin(angles)], -1).reshape(-1, 2)
    expected = float(unit.mean(0) @ unit.mean(0))
    assert spread["pair_cos"] == pytest.approx(expected, abs=0.08)
    assert collapsed["pair_cos"] > 0.999 and collapsed["collapsed"]
    line = report_line({**collapsed, "untrained": {**spread}})
    assert "features collapsed" in line and "neighbour distance / inter-class distance" in line
    assert f"untrained: inter-class {spread['inter']:.4f}" in line
    # (two channels can hold little effective rank, so the verdict is set by hand here)
    assert "features not collapsed" in report_line({**spread, "collapsed": False})


def test_analyze_of_a_checkpoint_reports_the_untrained_reference(tmp_path, caplog):
    from cover.pretraining.pretrain import pretrain

    write_pairs(tmp_path)
    tiny_model = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}
    pretrain(out=str(tmp_path / "pre"), size=32, batch_size=2, steps=1, warmup_steps=1, eval_pairs=2, model=tiny_model)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="cover")
    summary = analyze(
        str(tmp_path / "pre"),
        str(tmp_path / "images"),
        str(tmp_path / "labels"),
        out=str(tmp_path / "out"),
        samples_per_class=50,
        max_distance=2,
        device="cpu",
    )
    reference = summary["untrained"]
    assert set(reference) == {
        "inter",
        "same_class_neighbour_distance_over_inter_1px",
        "pair_cos",
        "eff_rank",
        "collapsed",
    }
    assert 0 < reference["inter"] <= 2 and reference["pair_cos"] != summary["pair_cos"]
    lines = [r.getMessage() for r in caplog.records if r.name == "cover.analysis.analyze"]
    assert "untrained: inter-class" in lines[-1] and "collapsed" in lines[-1]
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert saved["untrained"]["inter"] == pytest.approx(reference["inter"])
