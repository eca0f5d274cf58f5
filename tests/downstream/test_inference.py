"""Whole-image inference on sizes that are not multiples of the window or the divisor.

A network whose output at a voxel depends on that voxel only gives the same logits however the
image is tiled, blended or padded, so the whole-image answer is known exactly: any misplaced
window, wrong crop or padding on the wrong side changes the logits somewhere.
"""

import torch

from cover.downstream.inference import segment_logits


class PointwiseNet(torch.nn.Module):
    """Per-voxel non-linear logits (1x1x1 convolutions); records the sizes it was called with."""

    def __init__(self, divisor: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.divisor = divisor
        self.net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 1), torch.nn.Tanh(), torch.nn.Conv3d(4, 3, 1))
        self.sizes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[2:]))
        assert all(s % self.divisor == 0 for s in x.shape[2:]), x.shape
        return self.net(x)


def test_sliding_window_3d_on_a_non_divisible_volume_gives_the_whole_volume_result():
    network = PointwiseNet(divisor=8)
    image = torch.rand(1, 21, 18, 13)  # no axis a multiple of the 8^3 window; the last is smaller
    with torch.no_grad():
        expected = network.net(image[None])[0]
    network.sizes.clear()
    logits = segment_logits(network, image, (8, 8, 8), 8, overlap=0.25)
    assert logits.shape == (3, 21, 18, 13)
    assert set(network.sizes) == {(8, 8, 8)} and len(network.sizes) >= 1
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # A position-dependent check that the comparison can fail: shifting the image by one voxel
    # along any axis changes the expected logits.
    assert (network.net(torch.roll(image, 1, dims=1)[None])[0] - expected).abs().max() > 1e-2
