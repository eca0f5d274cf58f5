"""Whole-image inference: sliding windows for 3D and large 2D images, padding otherwise.

3D images, and 2D images larger than the training size on some axis, go through MONAI's
``sliding_window_inference`` with windows of the training size (a multiple of the backbone's
divisor; smaller images are padded by MONAI). Other 2D images are zero-padded at the end of
each axis to a multiple of the divisor, predicted whole and cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn
from torch.nn import functional as F  # noqa: N812


def pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-pad the spatial axes of ``(B, C, *spatial)`` at their ends to multiples of ``divisor``.

    Returns:
        ``(padded, original_spatial)``.
    """
    spatial = tuple(x.shape[2:])
    pads: list[int] = []
    for size in reversed(spatial):
        pads += [0, (-size) % divisor]
    return F.pad(x, pads), spatial


@torch.no_grad()
def segment_logits(
    network: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    divisor: int,
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Class logits of one whole image.

    Args:
        network: Segmentation network mapping ``(B, C, *S)`` to ``(B, K, *S)``.
        image: ``(C, *spatial)`` normalised image on the network's device.
        patch_size: Training size (sliding-window size), multiples of ``divisor``.
        divisor: The backbone's size divisor.
        overlap: Overlap of neighbouring windows.
        sw_batch_size: Windows per forward pass.

    Returns:
        ``(K, *spatial)`` float logits.
    """
    x = image[None].float()
    spatial = tuple(x.shape[2:])
    if len(spatial) == 3 or any(s > p for s, p in zip(spatial, patch_size, strict=True)):
        logits = sliding_window_inference(
            x, tuple(patch_size), sw_batch_size, network, overlap=overlap, mode="gaussian", padding_mode="constant"
        )
        return torch.as_tensor(logits)[0]
    padded, spatial = pad_to_multiple(x, divisor)
    logits = network(padded)
    return logits[(0, slice(None), *(slice(0, s) for s in spatial))]


def segment_case(
    network: nn.Module, image: torch.Tensor, metadata: dict, *, overlap: float, sw_batch_size: int = 4
) -> torch.Tensor:
    """Class map of one image with a fine-tuned checkpoint's network and metadata.

    Args:
        network: The fine-tuned segmentation network.
        image: ``(C, *spatial)`` normalised image on the network's device.
        metadata: The checkpoint's metadata (``patch_size``, ``divisor``).
        overlap: Sliding-window overlap.
        sw_batch_size: Windows per forward pass.

    Returns:
        ``(*spatial)`` int64 class indices on the CPU.
    """
    logits = segment_logits(
        network,
        image,
        metadata["patch_size"],
        int(metadata["divisor"]),
        overlap=overlap,
        sw_batch_size=sw_batch_size,
    )
    return logits.argmax(0).cpu()


@torch.no_grad()
def classify(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, K)`` of resized images ``(B, C, *size)``."""
    return torch.softmax(network(images.float()), dim=1)
