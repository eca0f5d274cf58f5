"""SeVR: self-generated view pairs with exact ground-truth displacement vectors (docs/method.md §3).

From a batch of source images (larger than the training crop) the generator makes

* view a: the source with appearance changes only (noise, blur, contrast, brightness,
  in-painted noise blocks), cropped at a random window;
* view b: the clean source spatially transformed (affine about the centre, optional elastic),
  cropped at the same window;
* ``phi_gt``: the displacement field with ``view_b(p) = source(o + p + phi_gt(p))``, hence
  ``view_b(p) ≈ view_a(p + phi_gt(p))`` up to appearance;
* ``mask``: 1 where ``p + phi_gt(p)`` falls inside view a's window.

Everything is batched torch on the input's device; randomness comes from an explicit
``torch.Generator`` so a step's views are reproducible from its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812

from cover.geometry import (
    affine_field,
    identity_grid,
    random_affine_matrices,
    random_elastic_field,
    sample_at,
)
from cover.options import documented, option


@documented
@dataclass
class ViewConfig:
    """Parameters of the SeVR view generator (docs/method.md §3); all lengths relative to the source."""

    rotation_deg: float = option(30.0, "Rotation angles uniform in ±rotation_deg (per axis in 3D).")
    num_rotations: int = option(
        2,
        "Rotation factors around the scale/shear (2 in the 2D reference).",
        doc="The ``authors`` style ignores it: its rotation factors collapse into one.",
    )
    scale_range: tuple[float, float] = option((0.25, 1.75), "Per-axis scale uniform in this range.")
    translation: float = option(0.3, "Translation uniform in ±translation x size per axis.")
    shear_deg: float = option(8.4375, "Shear angles uniform in ±shear_deg.")
    elastic: bool = option(False, "Add a smooth random elastic field.")
    elastic_magnitude: float = option(0.02, "Std of elastic control displacements, as a fraction of the size.")
    elastic_spacing: float = option(0.25, "Control point spacing, as a fraction of the size.")
    noise_std_max: float = option(0.02, "Additive Gaussian noise std uniform in [0, noise_std_max].")
    blur_sigma_max: float = option(0.05, "Gaussian blur sigma uniform in [0, blur_sigma_max] voxels.")
    contrast_range: tuple[float, float] = option((0.5, 1.5), "Contrast factor about the mean, uniform in this range.")
    brightness_std: float = option(0.1, "Additive brightness shift N(0, brightness_std).")
    max_blocks: int = option(10, "Maximum number of in-painted uniform-noise blocks.")
    block_prob: float = option(0.95, "Probability that each next block is drawn.")
    block_size_range: tuple[float, float] = option(
        (0.1, 0.133),
        "Block side uniform in this range, fraction of the size.",
        doc="``authors``: of the crop, in whole voxels.",
    )
    source_scale: float = option(1.5, "Source images are this factor larger than the crop (1.5 in the paper).")
    gamma_range: tuple[float, float] = option(
        (1.0, 1.0),
        "Contrast change x.clamp(min=0) ** gamma of view a, gamma uniform in this range; (1, 1): off.",
        doc="The first of the appearance changes.",
    )
    bias_std: float = option(
        0.0,
        "Smooth multiplicative bias field exp(b) on view a, b with control values of this std; 0: off.",
        doc="``b`` a random smooth field (:func:`cover.geometry.random_elastic_field`), after the gamma change.",
    )
    bias_spacing: float = option(0.5, "Control point spacing of the bias field, as a fraction of the size.")
    max_displacement: float | None = option(
        None,
        "Shrink each sample's transform so no displacement inside the crop exceeds this many voxels; null: no limit.",
        doc="The displacement field is scaled towards zero. The vector pyramid can only find partners within its "
        "capture range ``r * (2**levels - 1)`` voxels (62 for the paper's U-Net with ``r = 2``: "
        ":func:`capture_range`).",
    )
    style: str = option(
        "cover",
        "cover (cover's generator) or authors (the release's way of drawing views, same ranges).",
        choices=("cover", "authors"),
        doc="``cover``: this module; ``authors``: :mod:`cover.views.authors` (docs/method.md §3).",
    )

    @classmethod
    def reference(cls, spatial_dims: int) -> ViewConfig:
        """The reference settings: the authors' 2D release, or the 3D defaults (docs/method.md §3)."""
        if spatial_dims == 2:
            return cls()
        return cls(
            rotation_deg=15.0,
            num_rotations=1,
            scale_range=(0.75, 1.25),
            translation=0.1,
            shear_deg=10.0,
            elastic=True,
        )


def capture_range(radius: int, levels: int) -> int:
    """Largest displacement (voxels, per axis) a vector pyramid can find: ``r * (2**levels - 1)``.

    Level ``l`` of ``levels`` (coarse to fine) reads offsets up to ``r`` of its own voxels,
    ``r * 2**(levels - 1 - l)`` full-resolution voxels; the levels' reaches add up.

    Args:
        radius: MoV window radius ``r``.
        levels: Pyramid levels (5 for the paper's U-Net).

    Returns:
        The reach in full-resolution voxels.
    """
    return radius * (2**levels - 1)


class ViewPair(NamedTuple):
    """A batch of view pairs.

    Attributes:
        view_a: ``(B, C, *size)`` appearance-changed view.
        view_b: ``(B, C, *size)`` spatially transformed view.
        phi_gt: ``(B, ndim, *size)`` with ``view_b(p) ≈ view_a(p + phi_gt(p))``.
        mask: ``(B, 1, *size)`` float, 1 where ``p + phi_gt(p)`` is inside view a.
    """

    view_a: torch.Tensor
    view_b: torch.Tensor
    phi_gt: torch.Tensor
    mask: torch.Tensor


#: View styles other than ``cover``, by name: ``(generator, source, random generator) -> ViewPair``.
#: Filled by the package :mod:`cover.views` (which importing this module always runs first) with
#: the authors' style, :func:`cover.views.authors.authors_view_pair`, which builds on this module.
STYLES: dict[str, Callable[..., ViewPair]] = {}


class ViewGenerator:
    """Batched SeVR view generator.

    Args:
        config: The transform ranges.
        size: Crop size of the views, length ``ndim``.
    """

    def __init__(self, config: ViewConfig, size: tuple[int, ...]) -> None:
        self.config = config
        self.size = tuple(int(s) for s in size)

    def __call__(self, source: torch.Tensor, generator: torch.Generator | None = None) -> ViewPair:
        """Make one view pair per source image.

        Args:
            source: ``(B, C, *source_size)`` images, every axis at least the crop size.
            generator: Random generator on ``source.device``.

        Returns:
            The :class:`ViewPair` at the crop size.
        """
        cfg = self.config
        batch, ndim = source.shape[0], source.dim() - 2
        src_size = tuple(source.shape[2:])
        if len(self.size) != ndim or any(c > s for c, s in zip(self.size, src_size, strict=True)):
            raise ValueError(f"crop size {self.size} does not fit source size {src_size}")
        dev = source.device
        if cfg.style != "cover":
            return STYLES[cfg.style](self, source, generator)

        def uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(shape, generator=generator, device=dev)

        # The spatial transform, as a field on the source grid's coordinates.
        matrix = random_affine_matrices(
            batch,
            ndim,
            rotation_deg=cfg.rotation_deg,
            num_rotations=cfg.num_rotations,
            scale_range=cfg.scale_range,
            shear_deg=cfg.shear_deg,
            generator=generator,
            device=dev,
        )
        sizes = torch.tensor(src_size, device=dev, dtype=torch.float32)
        translation = uniform((batch, ndim), -cfg.translation, cfg.translation) * sizes
        # Random crop window offsets o (integers), the same window for a, b and phi.
        room = torch.tensor([s - c for s, c in zip(src_size, self.size, strict=True)], device=dev)
        offset = torch.floor(torch.rand((batch, ndim), generator=generator, device=dev) * (room + 1))
        offset = offset.view(batch, ndim, *([1] * ndim))
        crop_coords = identity_grid(self.size, device=dev) + offset  # (B, ndim, *size) on source
        phi_full = self.add_elastic(affine_field(matrix, translation, src_size), generator)
        # phi_gt(p) = phi_full(o + p): read the source-grid field at the crop's coordinates.
        phi_gt = sample_at(phi_full, crop_coords, padding="border")
        view_a = sample_at(self.appearance(source, generator), crop_coords)
        return self.pair(source, crop_coords, phi_gt, view_a)

    def add_elastic(self, phi: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``phi`` plus a smooth random elastic field when ``elastic`` is on (else ``phi``, no draws).

        Args:
            phi: ``(B, ndim, *source_size)`` field on the source grid.
            generator: Random generator on ``phi.device``.

        Returns:
            ``(B, ndim, *source_size)``.
        """
        cfg = self.config
        if not cfg.elastic:
            return phi
        src_size = tuple(phi.shape[2:])
        spacing = max(2, int(round(cfg.elastic_spacing * min(src_size))))
        magnitude = cfg.elastic_magnitude * min(src_size)
        return phi + random_elastic_field(
            phi.shape[0], src_size, magnitude=magnitude, control_spacing=spacing, generator=generator, device=phi.device
        )

    def pair(
        self, source: torch.Tensor, crop_coords: torch.Tensor, phi_gt: torch.Tensor, view_a: torch.Tensor
    ) -> ViewPair:
        """The view pair from a crop window and its field: ``max_displacement``, view b, mask.

        Args:
            source: ``(B, C, *source_size)`` images.
            crop_coords: ``(B or 1, ndim, *size)`` source coordinates ``o + p`` of the window.
            phi_gt: ``(B, ndim, *size)`` the transform's field read at the window.
            view_a: ``(B, C, *size)`` the finished view a.

        Returns:
            The :class:`ViewPair`.
        """
        batch, ndim, dev = source.shape[0], source.dim() - 2, source.device
        if self.config.max_displacement is not None:
            # Scaling the field scales the transform towards the identity; view b follows from it.
            largest = phi_gt.abs().flatten(1).amax(dim=1).clamp(min=1e-6)
            shrink = (self.config.max_displacement / largest).clamp(max=1.0)
            phi_gt = phi_gt * shrink.view(batch, *([1] * (ndim + 1)))
        view_b = sample_at(source, crop_coords + phi_gt)
        target = identity_grid(self.size, device=dev) + phi_gt
        upper = torch.tensor(self.size, device=dev, dtype=phi_gt.dtype).view(1, ndim, *([1] * ndim)) - 1
        inside = ((target >= 0) & (target <= upper)).all(dim=1, keepdim=True)
        return ViewPair(view_a, view_b, phi_gt, inside.to(source.dtype))

    def appearance(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Appearance-only changes: gamma, bias field, blur, contrast, brightness, noise, noise blocks.

        Gamma and the bias field (off by default) draw random numbers only when on, so views
        without them are the same as before they existed.

        Args:
            x: ``(B, C, *spatial)`` images.
            generator: Random generator on ``x.device``.

        Returns:
            ``(B, C, *spatial)`` changed images (no spatial change).
        """
        cfg = self.config
        batch, ndim = x.shape[0], x.dim() - 2
        dev = x.device
        per_sample = (batch,) + (1,) * (ndim + 1)

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=dev)

        x = tone_changes(cfg, x, generator)
        if cfg.blur_sigma_max > 0:
            x = gaussian_blur(x, rand(batch) * cfg.blur_sigma_max, max_sigma=cfg.blur_sigma_max)
        mean = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        low, high = cfg.contrast_range
        contrast = (low + (high - low) * rand(batch)).view(per_sample)
        x = (x - mean) * contrast + mean
        x = x + torch.randn(per_sample, generator=generator, device=dev) * cfg.brightness_std
        noise_std = (rand(batch) * cfg.noise_std_max).view(per_sample)
        x = x + torch.randn(x.shape, generator=generator, device=dev) * noise_std
        if cfg.max_blocks > 0:
            x = self._inpaint_blocks(x, generator)
        return x

    def _inpaint_blocks(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Fill up to ``max_blocks`` boxes per image with uniform noise in ``[0, 1)``."""
        cfg = self.config
        batch, ndim = x.shape[0], x.dim() - 2
        dev = x.device
        spatial = x.shape[2:]
        sizes = torch.tensor(spatial, device=dev, dtype=torch.float32)
        # Block k is drawn if blocks 1..k all were: cumulative product of Bernoulli draws.
        draws = torch.rand((batch, cfg.max_blocks), generator=generator, device=dev) < cfg.block_prob
        active = torch.cumprod(draws.to(torch.int32), dim=1).bool()
        low, high = cfg.block_size_range
        side = low + (high - low) * torch.rand((batch, cfg.max_blocks, ndim), generator=generator, device=dev)
        side = side * sizes
        start = torch.rand((batch, cfg.max_blocks, ndim), generator=generator, device=dev) * (sizes - side)
        coords = identity_grid(spatial, device=dev).squeeze(0)  # (ndim, *spatial)
        covered = torch.zeros((batch, 1, *spatial), dtype=torch.bool, device=dev)
        view = (batch, ndim) + (1,) * ndim
        for k in range(cfg.max_blocks):  # a loop over block slots, batched over samples
            lo = start[:, k].view(view)
            hi = lo + side[:, k].view(view)
            box = ((coords >= lo) & (coords < hi)).all(dim=1, keepdim=True)
            covered |= box & active[:, k].view((batch,) + (1,) * (ndim + 1))
        noise = torch.rand(x.shape, generator=generator, device=dev)
        return torch.where(covered, noise, x)


def tone_changes(config: ViewConfig, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gamma change then smooth multiplicative bias field, per sample; each draws only when on.

    Args:
        config: ``gamma_range``, ``bias_std``, ``bias_spacing``.
        x: ``(B, C, *spatial)`` images.
        generator: Random generator on ``x.device``.

    Returns:
        ``(B, C, *spatial)`` (``x`` itself when both are off).
    """
    batch, ndim, dev = x.shape[0], x.dim() - 2, x.device
    if tuple(config.gamma_range) != (1.0, 1.0):
        low, high = config.gamma_range
        gamma = low + (high - low) * torch.rand(batch, generator=generator, device=dev)
        x = x.clamp(min=0) ** gamma.view((batch,) + (1,) * (ndim + 1))
    if config.bias_std > 0:
        spatial = x.shape[2:]
        spacing = max(2, int(round(config.bias_spacing * min(spatial))))
        bias = random_elastic_field(
            batch, spatial, magnitude=config.bias_std, control_spacing=spacing, generator=generator, device=dev
        )
        x = x * torch.exp(bias[:, :1])
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur with a different sigma per sample.

    Args:
        x: ``(B, C, *spatial)`` images.
        sigma: ``(B,)`` standard deviations in voxels (0 leaves the image unchanged).
        max_sigma: An upper bound of ``sigma`` that sets the kernel radius ``ceil(3 max_sigma)``
            (so a sample's blur does not depend on its batch-mates, and no device-to-host copy
            stalls the step); ``None``: the largest ``sigma`` (read from the device).

    Returns:
        ``(B, C, *spatial)`` blurred images (edges replicate-padded).
    """
    batch, channels = x.shape[:2]
    ndim = x.dim() - 2
    radius = max(1, math.ceil(3.0 * (float(sigma.max()) if max_sigma is None else max_sigma)))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    safe = sigma.clamp(min=1e-3).view(batch, 1)
    kernel = torch.exp(-0.5 * (taps / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K); sigma->0 gives a delta
    weights = kernel.repeat_interleave(channels, dim=0)  # (B*C, K)
    out = x.reshape(1, batch * channels, *x.shape[2:])
    conv = (F.conv1d, F.conv2d, F.conv3d)[ndim - 1]
    for axis in range(ndim):
        shape = [batch * channels, 1] + [1] * ndim
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0] * ndim
        pad[2 * (ndim - 1 - axis)] = pad[2 * (ndim - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), weights.view(shape), groups=batch * channels)
    return out.reshape(x.shape)
