"""Device measurements leave the training's random draws alone."""

from __future__ import annotations

import torch

from facekeys.model.devices import matmul_gflops


def test_measuring_matmul_speed_leaves_the_global_generator_where_it_was():
    """A resumed run measures the machine right after restoring the saved RNG state: drawing
    from the global generator there would shift its dropout against an uninterrupted run."""
    torch.manual_seed(1)
    expected = torch.rand(4)
    torch.manual_seed(1)

    assert matmul_gflops(torch.device("cpu"), None, n=64) > 0

    assert torch.equal(torch.rand(4), expected)
