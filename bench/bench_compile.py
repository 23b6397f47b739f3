"""Does torch.compile pay for training on this CPU? Training steps per second of a heatmap
network (by default the shipped first network: 64 px, width 16, stride-4 grid, stem block),
eager vs torch.compile, same precision and thread count as the train stage.

Usage: python bench/bench_compile.py [--size 64] [--width 16] [--heatmap-stride 4]
       [--no-stem-block] [--steps 30]
(the shipped refinement network: --size 96 --heatmap-stride 8 --no-stem-block)
Prints one line per mode: compile seconds (first steps), then images/s over the timed steps.
"""

from __future__ import annotations

import argparse
import time

import torch

from facekeys.model.devices import cpu_has_bf16
from facekeys.model.losses import masked_loss
from facekeys.model.networks import build_model


def run(
    mode: str, size: int, steps: int, batch: int, width: int, stride: int, stem_block: bool
) -> str:
    torch.manual_seed(0)
    model = build_model("heatmap", 68, 1, size, width, stride, stem_block)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = torch.bfloat16 if cpu_has_bf16() else None
    forward = torch.compile(model) if mode == "compile" else model
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    target = torch.rand(batch, 68, 2)
    mask = torch.ones(batch, 68, dtype=torch.bool)

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            pred = forward(x)
        loss = masked_loss(pred, target, mask, "wing", 0.04, 0.008, 0.01)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    rate = steps * batch / (time.perf_counter() - start)
    return (
        f"{mode}: size={size} width={width} heatmap_stride={stride} stem_block={stem_block} "
        f"batch={batch} first_3_steps_s={warm:.1f} images_per_s={rate:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--heatmap-stride", type=int, default=4, choices=(4, 8))
    parser.add_argument("--no-stem-block", action="store_true")
    args = parser.parse_args()
    for mode in ("eager", "compile"):
        line = run(
            mode, args.size, args.steps, args.batch, args.width, args.heatmap_stride,
            not args.no_stem_block,
        )  # fmt: skip
        print(line, flush=True)


if __name__ == "__main__":
    main()
