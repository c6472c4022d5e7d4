"""Device-synchronized timing with the process's CPU time beside it, GPU kernel time, and peak memory."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def timed(fn: Callable[[], Any], device: str) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of one call, prompt in and image out.

    Synchronizing before and after means queued GPU work from earlier calls is not billed to this one and this
    call's kernels are all counted. CPU time beside wall time says how much of the call the host was busy.
    CUDA's waits spin by default, so a GPU-bound call shows CPU time close to its wall time too; the GPU's
    own idle share (kernel_seconds) is what tells the two apart.
    """
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def kernel_seconds(fn: Callable[[], Any], device: str) -> float | None:
    """GPU kernel time of one call, from the profiler's CUDA activity; None off CUDA or where CUPTI is missing.

    The profiler slows the host side of the call, never the kernels, so their sum over an unprofiled call's
    wall time is the share of the call the GPU was busy.
    """
    if not device.startswith("cuda"):
        return None
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            synchronize(device)
    except RuntimeError:  # CUPTI unavailable (some containers): the report says "unknown"
        return None
    intervals = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type.name == "CUDA")
    # Kernels on several streams overlap: count the time the GPU was busy, not the sum of kernel durations.
    busy_us, end = 0.0, -float("inf")
    for start, stop in intervals:
        if stop > end:
            busy_us += stop - max(start, end)
            end = stop
    return busy_us / 1e6 if intervals else None


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
