"""``cover export``: a thin typer command over :func:`cover.export`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cover.errors import ConfigError
from cover.models.export import SIDECAR, export, given_checkpoint


def add_commands(app: typer.Typer) -> None:
    """Add ``cover export`` to the CLI."""

    @app.command("export")
    def export_command(
        checkpoint_arg: Annotated[
            str | None, typer.Argument(metavar="CHECKPOINT", help="Older form of --checkpoint.", show_default=False)
        ] = None,
        checkpoint: Annotated[
            str | None,
            typer.Option("--checkpoint", help="A cover pretrain run folder (newest checkpoint) or checkpoint file."),
        ] = None,
        out: Annotated[
            str | None,
            typer.Option(help="Export folder (must be empty unless --overwrite); a .pth file for nnunet."),
        ] = None,
        format: Annotated[str, typer.Option(help="safetensors, torch or nnunet.")] = "safetensors",  # noqa: A002
        encoder_only: Annotated[bool, typer.Option("--encoder-only", help="Export only the encoder.")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty --out.")] = False,
        plans: Annotated[
            str | None,
            typer.Option(help="nnunet: the target nnU-Net plans file to check against (default: the run's)."),
        ] = None,
        configuration: Annotated[
            str | None, typer.Option(help="nnunet: the target configuration (default: the run's).")
        ] = None,
    ) -> None:
        """Export pretrained backbone weights (no optimizer, no head) with a cover.json sidecar."""
        if out is None:
            raise ConfigError("out: required (--out FOLDER)")
        path = export(
            given_checkpoint(checkpoint, checkpoint_arg),
            out,
            format=format,
            encoder_only=encoder_only,
            overwrite=overwrite,
            plans=plans,
            configuration=configuration,
        )
        if format == "nnunet":
            import torch

            meta = json.loads(torch.load(path, weights_only=True)["cover"])
            print(
                f"exported {meta['tensors']} tensors ({meta['parameters']:,} parameters, {meta['in_channels']} input "
                f"channel(s)) of the nnunet backbone to {path}; use: nnUNetv2_train DATASET "
                f"{meta['nnunet']['configuration']} FOLD -pretrained_weights {path}"
            )
            return
        meta = json.loads((path / SIDECAR).read_text())
        print(
            f"exported {meta['tensors']} tensors ({meta['parameters']:,} parameters) of the {meta['backbone']} "
            f"backbone to {path / meta['weights']} with {path / SIDECAR}"
        )
