"""Machine probe: the GPU's matmul and copy speed and the host's op-dispatch speed, timed beside the variants.

Eager FLUX at 512² is launch-bound: its latency follows the host CPU and moves by tens of percent between
sessions on one machine, so it can't tell a slower machine from a slower variant. The probe is a reference
that holds still when the software and the machine do: three short fixed workloads, each bound by one
resource, timed once per round next to the pipeline calls and stored in the baseline.

- matmul_s: bf16 matrix products (fp32 on CPU), bound by the tensor cores' throughput and clocks;
- copy_s: device-to-device copies, bound by memory bandwidth;
- launch_s: a loop of small ops on tiny tensors, bound by the host: Python, the dispatcher and the
  kernel launch path, the same path eager spends its time in.
"""

from __future__ import annotations

import statistics
import time

import torch

# Sizes: long enough that launch and timer overheads are ~1% of each GPU probe, short enough that a probe before
# every call costs ~50 ms beside a pipeline call of a second or more.
# The small-op loop runs long enough (~40 ms on an H200's host) to average over the host's jitter.
GPU_SIZES = {"matmul_n": 4096, "matmul_reps": 8, "copy_mib": 256, "copy_reps": 8, "launch_iters": 400}
CPU_SIZES = {"matmul_n": 128, "matmul_reps": 2, "copy_mib": 4, "copy_reps": 2, "launch_iters": 20}
PROBES = ("matmul_s", "copy_s", "launch_s")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _clock(device: str, fn) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class Probe:
    """The three probe workloads for one device; each sample() times all three once."""

    def __init__(self, device: str):
        self.device = device
        self.sizes = GPU_SIZES if device.startswith("cuda") else CPU_SIZES
        self.dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self._gen = torch.Generator("cpu").manual_seed(0)

    def _matmul(self) -> float:
        n, reps = self.sizes["matmul_n"], self.sizes["matmul_reps"]
        # Random operands: zeros run measurably faster on tensor cores than real data does.
        a = torch.randn(n, n, generator=self._gen).to(self.device, self.dtype)
        b = torch.randn(n, n, generator=self._gen).to(self.device, self.dtype)
        out = torch.empty(n, n, device=self.device, dtype=self.dtype)
        torch.mm(a, b, out=out)  # first call picks the kernel; not timed
        seconds = _clock(self.device, lambda: [torch.mm(a, b, out=out) for _ in range(reps)])
        return seconds / reps

    def _copy(self) -> float:
        count, reps = self.sizes["copy_mib"] * 2 ** 20 // 4, self.sizes["copy_reps"]
        src = torch.ones(count, device=self.device, dtype=torch.float32)
        dst = torch.empty_like(src)
        dst.copy_(src)
        seconds = _clock(self.device, lambda: [dst.copy_(src) for _ in range(reps)])
        return seconds / reps

    def _launch(self) -> float:
        # A mix of the small ops a transformer block dispatches, on tensors so small that the GPU is idle
        # between them: the time is the host's.
        x = torch.ones(4, 64, device=self.device, dtype=self.dtype)
        w = torch.ones(64, 64, device=self.device, dtype=self.dtype)
        norm = torch.nn.functional.layer_norm
        iters = self.sizes["launch_iters"]

        def loop():
            y = x
            for _ in range(iters):
                y = torch.nn.functional.linear(y, w)
                y = norm(y, (64,))
                y = torch.nn.functional.gelu(y, approximate="tanh")
                y = y * 0.5 + x
                y = y.view(4, 2, 32).transpose(1, 2).reshape(4, 64)
                y = torch.softmax(y, dim=-1)
            return y

        loop()
        return _clock(self.device, loop) / iters

    def sample(self) -> dict[str, float]:
        """Seconds per unit of each workload: one matmul, one copy, one loop iteration of small ops."""
        with torch.no_grad():
            return {"matmul_s": self._matmul(), "copy_s": self._copy(), "launch_s": self._launch()}



def rates(sample: dict[str, float], device: str) -> dict[str, float]:
    """A sample as rates a person reads: TFLOP/s, GB/s (read + written), µs per loop iteration of small ops."""
    sizes = GPU_SIZES if device.startswith("cuda") else CPU_SIZES
    n = sizes["matmul_n"]
    moved = 2 * sizes["copy_mib"] * 2 ** 20
    return {"matmul_tflops": 2 * n ** 3 / sample["matmul_s"] / 1e12, "copy_gbps": moved / sample["copy_s"] / 1e9,
            "launch_us": sample["launch_s"] * 1e6}


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(samples[k]) for k in PROBES}
