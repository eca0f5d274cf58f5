import csv

import matplotlib.axes
import numpy as np

from cover.engine.curves import plot_losses
from cover.engine.logger import read_series


def test_validation_scores_are_plotted_at_the_steps_they_ran(tmp_path, monkeypatch):
    """Loss every 10 steps, validation every 50: val_dice must sit at 50…300, not at 10…60."""
    log = tmp_path / "log.csv"
    with log.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["step", "loss", "val_dice"])
        writer.writeheader()
        for step in range(10, 310, 10):
            writer.writerow({"step": step, "loss": 1 / step, "val_dice": step / 1000 if step % 50 == 0 else ""})
    drawn = []
    original = matplotlib.axes.Axes.plot

    def record(self, x, y, *args, **kwargs):
        drawn.append((self.get_title(), np.asarray(x), np.asarray(y), kwargs.get("label")))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    plot_losses(log, tmp_path / "curves.png", columns=("loss", "val_dice"))
    assert (tmp_path / "curves.png").is_file()
    lines = [(x, y) for _title, x, y, label in drawn if label == "logged"]
    loss_x, loss_y = lines[0]
    val_x, val_y = lines[1]
    np.testing.assert_array_equal(loss_x, np.arange(10, 310, 10))
    np.testing.assert_allclose(loss_y, 1 / np.arange(10, 310, 10))
    np.testing.assert_array_equal(val_x, [50, 100, 150, 200, 250, 300])
    np.testing.assert_allclose(val_y, val_x / 1000)
    smooth = [x for _title, x, _y, label in drawn if label and label.startswith("mean of")]
    assert smooth[1][-1] == 300  # the running mean of the validations ends at the last validation


def test_read_series_pairs_each_value_with_its_step(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,val_dice\n2,0.5,\n4,0.25,0.6\n6,0.125,\n8,0.0625,0.7\n")
    series = read_series(log)
    assert series == {"loss": ([2, 4, 6, 8], [0.5, 0.25, 0.125, 0.0625]), "val_dice": ([4, 8], [0.6, 0.7])}
