"""Where and in which precision training runs: the device, the mixed-precision dtype (with the
CPU's native bf16 detection), and the FLOP and GFLOP/s measurements of the training summary."""

from __future__ import annotations

import copy
import os
import time

import torch

from facekeys.errors import FacekeysError
from facekeys.model.settings import TrainSettings


def resolve_device(settings: TrainSettings) -> torch.device:
    """The device ``train.device`` asks for (``auto``: CUDA where there is one, else the CPU)."""
    if settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise FacekeysError("train.device is cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def use_cpu_threads(settings: TrainSettings, device: torch.device) -> None:
    """On the CPU, computes with ``train.threads`` threads (0: one per core)."""
    if device.type == "cpu":
        torch.set_num_threads(settings.threads or os.cpu_count() or 1)


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(settings: TrainSettings, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype to use, or None for plain fp32."""
    if settings.precision == "fp32":
        return None
    if settings.precision == "fp16":
        if device.type != "cuda":
            raise FacekeysError("train.precision fp16 needs a CUDA device; use bf16 or auto")
        return torch.float16
    if settings.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device``; a no-op context where ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def precision_name(dtype: torch.dtype | None) -> str:
    """The summary's name of a training precision: ``bfloat16``, ``float16`` or ``float32``."""
    return str(dtype).replace("torch.", "") if dtype else "float32"


def model_flops(model: torch.nn.Module, channels: int, size: int) -> float:
    """Forward FLOPs per image (multiply-adds count 2), measured by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).cpu().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(torch.zeros(1, channels, size, size))
    return float(counter.get_total_flops())


def matmul_gflops(device: torch.device, dtype: torch.dtype | None, n: int = 1024) -> float:
    """Measured dense matmul throughput of this machine in the training precision.

    Its matrices come from a generator of its own: drawing them from the global one would shift
    every later draw (dropout) of a resumed run against one never interrupted.
    """
    dt = dtype or torch.float32
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dt, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dt, generator=generator)
    for _ in range(2):
        a @ b
    reps = 10
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9
