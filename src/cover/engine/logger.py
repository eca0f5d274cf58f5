"""Run logging: a CSV file and TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path


class RunLogger:
    """Append scalar rows to ``OUT/log.csv`` and TensorBoard event files in ``OUT/tensorboard``.

    On resume, rows of steps after the resumed checkpoint's step are dropped from the CSV
    first, so the log reads like one uninterrupted run.

    Args:
        out: Output folder.
        fields: Column names after ``step``.
        resume_step: Steps already done by the resumed checkpoint (0 for a fresh run).
        tensorboard: Also write TensorBoard events.
    """

    def __init__(self, out: str | Path, fields: list[str], resume_step: int = 0, tensorboard: bool = True):
        self.path = Path(out) / "log.csv"
        self.fields = ["step", *fields]
        kept: list[dict[str, str]] = []
        if resume_step > 0 and self.path.is_file():
            with self.path.open() as stream:
                kept = [row for row in csv.DictReader(stream) if int(row["step"]) <= resume_step]
        with self.path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(Path(out) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None
            )

    def log(self, step: int, values: dict[str, float]) -> None:
        """Write one row.

        Args:
            step: Optimiser step (1-based count of finished steps).
            values: Scalars by field name.
        """
        with self.path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.fields, extrasaction="ignore")
            writer.writerow({"step": step, **values})
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def read_log(path: str | Path) -> dict[str, list[float]]:
    """Read ``log.csv`` into columns.

    Args:
        path: The CSV file.

    Returns:
        Column name to values.
    """
    with Path(path).open() as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return {}
    return {key: [float(row[key]) for row in rows if row[key] not in ("", None)] for key in rows[0]}


def read_series(path: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """Read ``log.csv`` into per-column ``(steps, values)``, keeping each value's own step.

    Columns logged on some rows only (validation scores) are paired with the steps of the rows
    that hold them, not with the first steps of the log.

    Args:
        path: The CSV file.

    Returns:
        Column name (``step`` excluded) to ``(steps, values)``.
    """
    with Path(path).open() as stream:
        rows = list(csv.DictReader(stream))
    series: dict[str, tuple[list[int], list[float]]] = {}
    for key in rows[0] if rows else []:
        if key != "step":
            kept = [row for row in rows if row[key] not in ("", None)]
            series[key] = ([int(row["step"]) for row in kept], [float(row[key]) for row in kept])
    return series
