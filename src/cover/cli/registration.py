"""The ``cover register`` command: registration with a pretrained COVER vector head."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)


def add_commands(app: typer.Typer) -> None:
    """Add the ``register`` command to the ``cover`` console script.

    Args:
        app: The root typer application.
    """

    @app.command("register")
    def register_command(
        checkpoint: Annotated[
            str | None, typer.Option(help="cover pretrain checkpoint (checkpoints/step_*.pt) or its run folder.")
        ] = None,
        fixed: Annotated[str | None, typer.Option(help="Fixed (target) image.")] = None,
        moving: Annotated[str | None, typer.Option(help="Moving image, warped onto the fixed one.")] = None,
        out: Annotated[str | None, typer.Option(help="Output folder (new or empty unless --overwrite).")] = None,
        moving_labels: Annotated[
            str | None, typer.Option(help="Labels on the moving grid, warped with nearest neighbour.")
        ] = None,
        fixed_labels: Annotated[
            str | None, typer.Option(help="Labels on the fixed grid: Dice per label before and after.")
        ] = None,
        affine: Annotated[bool | None, typer.Option("--affine", help="Affine pre-alignment first.")] = None,
        affine_steps: Annotated[int | None, typer.Option(help="Adam steps of the affine fit (default 100).")] = None,
        refine_steps: Annotated[
            int | None, typer.Option(help="Per-pair refinement steps on LNCC + smoothness (default 0).")
        ] = None,
        refine_lr: Annotated[float | None, typer.Option(help="Refinement learning rate in voxels.")] = None,
        refine_kernel: Annotated[int | None, typer.Option(help="LNCC window (odd, voxels).")] = None,
        refine_smoothness: Annotated[float | None, typer.Option(help="Weight of the diffusion regulariser.")] = None,
        device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
        overwrite: Annotated[bool | None, typer.Option("--overwrite", help="Write into a non-empty --out.")] = None,
        config: Annotated[Path | None, typer.Option("--config", help="YAML file with any of these options.")] = None,
    ) -> None:
        """Register a moving image onto a fixed one (2D or 3D) with a pretrained COVER model.

        Writes field.npy (and field.nii.gz for volumes) on the fixed file's own grid: channel k is the
        displacement along the file's array axis k, in voxels. Also the warped moving image and labels on
        that grid in the fixed image's format,
        overlay.png, metrics.json (Dice before/after, folding) and config.yaml.
        """
        from cover.config import load_yaml
        from cover.registration.pipeline import register as register_images

        values = load_yaml(config) if config else {}
        given = {
            "checkpoint": checkpoint,
            "fixed": fixed,
            "moving": moving,
            "out": out,
            "moving_labels": moving_labels,
            "fixed_labels": fixed_labels,
            "affine": affine,
            "affine_steps": affine_steps,
            "refine_steps": refine_steps,
            "refine_lr": refine_lr,
            "refine_kernel": refine_kernel,
            "refine_smoothness": refine_smoothness,
            "device": device,
            "overwrite": overwrite,
        }
        values.update({k: v for k, v in given.items() if v is not None})
        required = {key: values.pop(key, "") for key in ("checkpoint", "fixed", "moving", "out")}
        metrics = register_images(**required, **values)
        lines = [f"registered {metrics['moving']} onto {metrics['fixed']}"]
        if metrics.get("mean_dice_after") is not None:
            lines.append(
                f"mean Dice {metrics['mean_dice_before']:.3f} -> {metrics['mean_dice_after']:.3f} "
                f"over labels {', '.join(metrics['dice_after'])}"
            )
        lines.append(
            f"correlation {metrics['correlation_before']:.3f} -> {metrics['correlation_after']:.3f}; "
            f"non-positive Jacobian {metrics['nonpositive_jacobian_percent']:.2f} % of voxels"
        )
        lines.append(f"results in {required['out']}")
        log.info("\n".join(lines))
