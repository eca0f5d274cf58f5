"""Crash-safe checkpoints: atomic writes, the last K kept, newest valid one found on resume."""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from cover.errors import CoverError

CHECKPOINT_DIR = "checkpoints"
_PATTERN = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(out: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives inside an output folder."""
    return Path(out) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically: temporary file, flush + fsync, rename.

    A failure (disk full, no permission) raises a one-line :class:`CoverError` and leaves
    every earlier file intact.

    Args:
        state: JSON-able metadata and tensors (``torch.save`` compatible, no pickled objects).
        path: Destination.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(state, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        reason = error.strerror or error
        raise CoverError(f"{path}: could not save checkpoint ({reason}); earlier checkpoints are intact") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code is unpickled).

    Args:
        path: Checkpoint file.
        map_location: Where tensors go.

    Returns:
        The saved dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CoverError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means an unusable file
        raise CoverError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CoverError(f"{path}: not a cover checkpoint")
    return state


def list_checkpoints(out: str | Path) -> list[Path]:
    """Checkpoints in an output folder, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(out: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``out`` that loads, skipping corrupt or partial ones.

    Args:
        out: Output folder.

    Returns:
        ``(path, state)`` or ``None`` when no valid checkpoint exists.
    """
    for path in reversed(list_checkpoints(out)):
        try:
            return path, load_checkpoint(path)
        except CoverError as error:
            warnings.warn(f"skipping unusable checkpoint: {error}", stacklevel=2)
    return None


def prune_checkpoints(out: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for path in list_checkpoints(out)[:-keep]:
        path.unlink(missing_ok=True)
