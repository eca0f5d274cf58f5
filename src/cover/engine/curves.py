"""Loss curves of a run's ``log.csv`` (``loss.png`` of pretraining, ``curves.png`` of fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cover.engine.logger import read_series


def plot_losses(log_csv: str | Path, out_png: str | Path, columns: tuple[str, ...] = ("loss_vec", "loss_con")) -> None:
    """Plot loss columns of ``log.csv`` over steps, one panel each.

    Args:
        log_csv: The run's ``log.csv``.
        out_png: Destination PNG.
        columns: Columns to plot (missing ones are skipped).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_series(log_csv)
    present = [c for c in columns if log.get(c, ((), ()))[1]]
    if not present:
        present = [c for c in ("loss",) if log.get(c, ((), ()))[1]]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4.5 * max(1, len(present)), 3.2), squeeze=False)
    for ax, column in zip(axes[0], present, strict=False):
        steps, values = (np.asarray(v) for v in log[column])  # each value at the step it was logged
        ax.plot(steps, values, lw=1.0, alpha=0.4, label="logged")
        if len(values) >= 5:
            k = max(2, len(values) // 10)
            smooth = np.convolve(values, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 : k - 1 + len(smooth)], smooth, lw=2.0, label=f"mean of {k}")
        ax.set_title(column)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
