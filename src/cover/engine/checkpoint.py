"""Crash-safe checkpoints: atomic writes, the last K kept, newest valid one found on resume.

A checkpoint is a plain dict loadable with ``torch.load(..., weights_only=True)``: tensors,
numbers, strings, lists and dicts only (no pickled objects). Besides model, optimizer,
scheduler and grad-scaler states it holds the random states of torch (CPU and CUDA), NumPy
and Python (:func:`capture_rng_state`). The data order needs no state: batches are a pure
function of ``(seed, step)`` (:mod:`cover.engine.sampler`) and every item is drawn from its own
``(index, item_seed)`` key, so DataLoader workers give the same batches after a resume.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cover.errors import ConfigError, CoverError

log = logging.getLogger(__name__)

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
        _fsync_folder(path.parent)
        log.debug("checkpoint saved: %s", path)
    except OSError as error:
        reason = error.strerror or error
        raise CoverError(f"{path}: could not save checkpoint ({reason}); earlier checkpoints are intact") from None


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: not every file system allows opening folders)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_partial_files(out: str | Path) -> list[Path]:
    """Delete temporary files left by a save that was killed half-way.

    Args:
        out: Output folder.

    Returns:
        The removed paths.
    """
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    partial = [p for p in folder.iterdir() if p.name.startswith(".step_") and p.name.endswith(".tmp")]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def capture_rng_state() -> dict[str, Any]:
    """Random states of torch (CPU, CUDA), NumPy's global generator and Python's ``random``.

    Returns:
        A dict of tensors, ints, floats and lists (``weights_only``-loadable).
    """
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the random states saved by :func:`capture_rng_state` (missing parts are skipped).

    Args:
        state: The ``"rng"`` entry of a checkpoint.
    """
    if isinstance(state.get("torch"), torch.Tensor):
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    numpy_state = state.get("numpy")
    if isinstance(numpy_state, dict):
        np.random.set_state(
            (
                numpy_state["bit_generator"],
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
    python_state = state.get("python")
    if isinstance(python_state, dict):
        random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))


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


def resume_state(resume: str | None, out: str | Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The checkpoint a run continues from.

    Args:
        resume: ``None`` (fresh start), ``auto`` (the newest valid checkpoint in ``out``, or a
            fresh start when the folder holds none) or a checkpoint path.
        out: The run's output folder.

    Returns:
        ``(state, path)``, or ``(None, None)`` for a fresh start.

    Raises:
        ConfigError: ``auto`` with an ``out`` that is not an existing folder.
    """
    if not resume:
        return None, None
    if resume == "auto":
        if not Path(out).is_dir():  # a mistyped --out would otherwise start a new run silently
            raise ConfigError(
                f"resume: --resume auto continues the run in --out, but {out} is not a folder; "
                "check the --out path, or leave out --resume to start a new run"
            )
        found = find_resume_checkpoint(out)
        return (None, None) if found is None else (found[1], found[0])
    return load_checkpoint(resume), Path(resume)


#: Optimiser settings that choose how the update is computed, not what it is.
IMPLEMENTATION_KEYS = ("fused", "foreach")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping the running optimiser's implementation.

    ``load_state_dict`` also restores the saved parameter groups' ``fused`` and ``foreach``
    flags, but an optimiser built fused keeps expecting the fused step (the engine hands it
    ``found_inf``), so a checkpoint saved by a non-fused optimiser (cover before fused Adam)
    would crash the first resumed step, and a fused one would be resumed fused where the
    kernel is missing. The kernel is the running code's choice; the moments and step counts
    are the checkpoint's.

    Args:
        optimizer: The run's optimiser.
        state: Its saved ``state_dict``.
    """
    kept = [{key: group[key] for key in IMPLEMENTATION_KEYS if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, kept, strict=True):
        group.update(flags)


def load_states(path: str | Path | None, pairs: list[tuple[Any, Any]]) -> None:
    """``target.load_state_dict(state)`` for each pair; a mismatch becomes a one-line error.

    Args:
        path: The checkpoint the states come from (for the message).
        pairs: ``(module/optimizer/scheduler/scaler, its saved state)``.

    Raises:
        CoverError: A state does not fit this run's model or optimizer.
    """
    try:
        for target, state in pairs:
            if isinstance(target, torch.optim.Optimizer):
                load_optimizer_state(target, state)
            else:
                target.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        details = [line for line in lines if not line.startswith("Error(s) in loading")]
        first = (details or lines or [type(error).__name__])[0][:200]
        raise CoverError(
            f"resume: {path} does not match this run's model or optimizer ({first}); "
            "resume with the run's own config or start a new --out"
        ) from None
