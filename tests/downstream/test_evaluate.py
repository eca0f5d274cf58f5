import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import cover.downstream.evaluate as evaluate_module
from cover.downstream.finetune import finetune
from cover.downstream.metrics import classification_scores, segmentation_scores

TINY = {"channels": [8, 16, 32, 16, 8]}


def square(shape, rows, cols, value):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = value
    return mask


def test_segmentation_scores_match_a_hand_computation():
    label = square((12, 12), (2, 6), (2, 6), 1) + square((12, 12), (8, 10), (1, 6), 2)  # 16 px, 10 px
    pred = square((12, 12), (3, 7), (2, 6), 1) + square((12, 12), (8, 9), (1, 6), 2)  # shifted; 5 of 10 px
    scores = segmentation_scores(torch.from_numpy(pred), torch.from_numpy(label), 4)
    # class 1: overlap 12 px -> 2*12/(16+16); class 2: 2*5/(5+10); class 3 absent from both -> not scored
    assert scores["dice"][:2] == pytest.approx([0.75, 2 * 5 / 15], abs=1e-6) and np.isnan(scores["dice"][2])
    assert scores["hd95"][0] == pytest.approx(1.0) and np.isnan(scores["hd95"][2])
    scaled = segmentation_scores(torch.from_numpy(pred), torch.from_numpy(label), 4, spacing=(2.0, 1.0))
    assert scaled["hd95"][0] == pytest.approx(2.0)  # the shift is along axis 0, 2 mm per pixel


def test_classification_scores():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    scores = classification_scores(probs, np.array([0, 0, 1, 1]))
    assert scores["auc"] == pytest.approx(1.0) and scores["accuracy"] == pytest.approx(0.75)
    assert np.isnan(classification_scores(probs, np.array([1, 1, 1, 1]))["auc"])


def test_evaluate_scores_hand_made_masks_exactly(seg2d, tmp_path, monkeypatch):
    """The 'images' are the predicted masks themselves; the network is replaced by their one-hot."""
    summary = finetune(
        images=seg2d[0], labels=seg2d[1], dim=2, size=32, steps=1, val_every=1, model=TINY,
        intensity="none", num_classes=3, out=str(tmp_path / "run"),
    )  # fmt: skip
    images, labels = tmp_path / "pred", tmp_path / "true"
    images.mkdir()
    labels.mkdir()
    cases = {
        "a": (square((16, 16), (2, 6), (2, 6), 1), square((16, 16), (3, 7), (2, 6), 1)),  # Dice 0.75
        "b": (square((16, 16), (4, 8), (4, 8), 2), square((16, 16), (4, 8), (4, 6), 2)),  # 2*8/(16+8)
        # class 2 exact; class 1 predicted where the label has none: Dice 0, HD95 the 16x16 diagonal
        "c": (square((16, 16), (9, 13), (9, 13), 2), square((16, 16), (9, 13), (9, 13), 2) + square((16, 16), (1, 3), (1, 3), 1)),  # noqa: E501
    }  # fmt: skip
    for name, (truth, predicted) in cases.items():
        Image.fromarray(truth).save(labels / f"{name}.png")
        Image.fromarray(predicted).save(images / f"{name}.png")

    def oracle(network, image, metadata, **_):
        return image[0].round().long()

    monkeypatch.setattr(evaluate_module, "segment_case", oracle)
    result = evaluate_module.evaluate(summary["checkpoint"], str(images), str(labels), out=tmp_path / "eval")
    rows = list(csv.DictReader((tmp_path / "eval" / "metrics.csv").open()))
    # a: class 2 absent from both -> not scored (empty cell); b: class 1 absent from both -> not scored
    assert [r["case"] for r in rows] == ["a", "b", "c"]
    assert float(rows[0]["dice_1"]) == pytest.approx(0.75) and np.isnan(float(rows[0]["dice_2"] or "nan"))
    assert np.isnan(float(rows[1]["dice_1"] or "nan")) and float(rows[1]["dice_2"]) == pytest.approx(2 / 3)
    assert [float(rows[2]["dice_1"]), float(rows[2]["dice_2"])] == pytest.approx([0.0, 1.0])
    assert float(rows[2]["hd95_1"]) == pytest.approx(16 * 2**0.5) and float(rows[2]["hd95_2"]) == 0.0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["classes"]["1"]["dice_mean"] == pytest.approx((0.75 + 0.0) / 2)
    assert saved["classes"]["2"]["dice_std"] == pytest.approx(np.std([2 / 3, 1.0]))
    assert [saved["classes"][k]["scored_cases"] for k in ("1", "2")] == [2, 2]
    assert saved["mean_dice"] == pytest.approx(np.mean([0.75, 2 / 3, 0.5]))
    assert saved["classes"]["1"]["hd95_mean"] == pytest.approx((1.0 + 16 * 2**0.5) / 2)
    assert saved["classes"]["2"]["hd95_mean"] == pytest.approx(1.0)
    assert "absent from both" in saved["empty_classes"]
    assert result["mean_dice"] == saved["mean_dice"]


def test_evaluate_rejects_labels_beyond_the_checkpoint_classes(seg2d, seg_task, tmp_path):
    summary = finetune(
        images=seg2d[0], labels=seg2d[1], dim=2, size=32, steps=1, val_every=1, model=TINY, out=str(tmp_path / "run")
    )
    images, labels = seg_task(tmp_path / "extra", dim=2, n=1, side=32, seed=3)
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(labels + "/case00_seg.png")
    words = r"holds value 7 but the checkpoint has 3 classes; .* indices 0..K-1 \(0..2 here\)$"
    with pytest.raises(Exception, match=words):
        evaluate_module.evaluate(summary["checkpoint"], images, labels, out=tmp_path / "eval")


class Pointwise(torch.nn.Module):
    """A network whose output at a pixel depends on that pixel only, and checks the divisor."""

    def __init__(self, divisor):
        super().__init__()
        self.divisor = divisor
        self.conv = torch.nn.Conv2d(1, 3, 1)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[2:]))
        assert all(s % self.divisor == 0 for s in x.shape[2:])
        return self.conv(x)


def test_sliding_window_and_padding_give_the_whole_image_result():
    from cover.downstream.inference import segment_logits

    network = Pointwise(divisor=8)
    image = torch.rand(1, 40, 27)  # larger than the 16x16 training size: sliding windows
    with torch.no_grad():
        expected = network.conv(image[None])[0]
    logits = segment_logits(network, image, (16, 16), 8, overlap=0.25)
    assert logits.shape == (3, 40, 27) and set(network.sizes) == {(16, 16)}
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    network.sizes.clear()
    small = torch.rand(1, 13, 10)  # smaller than the training size: padded to 16x16, cropped back
    logits = segment_logits(network, small, (32, 32), 8)
    assert logits.shape == (3, 13, 10) and network.sizes == [(16, 16)]
    torch.testing.assert_close(logits, network.conv(small[None])[0].detach(), atol=1e-6, rtol=0)
