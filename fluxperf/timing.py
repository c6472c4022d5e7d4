"""Device-synchronized wall-clock timing and per-call peak memory."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """Seconds for one call, prompt in and image out. Synchronizing before and after means queued
    GPU work from earlier calls is not billed to this one and this call's kernels are all counted."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def peak_gb(device: str) -> float | None:
    """Peak allocated GPU memory since the last reset_peak; None on CPU, where it isn't tracked."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 1e9
    return None


def release(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
