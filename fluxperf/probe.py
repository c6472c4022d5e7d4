"""Machine probe: the GPU's matmul and copy speed and the host's op-dispatch speed, timed beside the variants.

Eager FLUX at 512² is launch-bound: its latency follows the host CPU and moves by tens of percent between
sessions on one machine, so it can't tell a slower machine from a slower variant. The probe is a reference
that holds still when the software and the machine do: three short fixed workloads, each bound by one
resource, timed once per round next to the pipeline calls and stored in the baseline.

- matmul_s: bf16 matrix products (fp32 on CPU), bound by the tensor cores' throughput and clocks;
- copy_s: device-to-device copies, bound by memory bandwidth;
- launch_s: a loop of small ops on tiny tensors, bound by the host: Python, the dispatcher and the
  kernel launch path, the same path eager spends its time in.

The GPU probes are timed over a window, not in one short burst: matmuls and copies alternate in chunks for about
35 ms on an H100, each chunk timed by CUDA events, and a sample is the window's total per operation. Another
process's kernels that run a few milliseconds at a time (10-30% of the time) hit a 1.5 ms burst of matmuls in
only a minority of samples, so the session's median never saw them, while every pipeline call of a second paid
for them; a 35 ms window overlaps several of their bursts every time and slows by about as much as a call does
(tests/unit/test_probe.py simulates both designs).
"""

from __future__ import annotations

import statistics

# Sizes: long enough that launch and timer overheads are ~1% of each GPU probe, short enough that a probe before
# every call costs ~50 ms beside a pipeline call of a second or more.
# The small-op loop runs long enough (~40 ms on an H200's host) to average over the host's jitter.
# The GPU window: `chunks` × (`matmul_reps` matmuls, then `copy_reps` copies), about 35 ms on an H100.
GPU_SIZES = {"matmul_n": 4096, "matmul_reps": 4, "copy_mib": 256, "copy_reps": 4, "chunks": 24, "launch_iters": 400}
CPU_SIZES = {"matmul_n": 128, "matmul_reps": 1, "copy_mib": 4, "copy_reps": 1, "chunks": 2, "launch_iters": 20}
# The probe's fields, in every result and baseline. torch is imported where a probe runs, not here: results and
# baselines name these fields without loading it (python -m fluxperf merge-baselines).
PROBES = ("matmul_s", "copy_s", "launch_s")


class Probe:
    """The three probe workloads for one device; each sample() times all three once."""

    def __init__(self, device: str):
        import torch

        self.device = device
        self.sizes = GPU_SIZES if device.startswith("cuda") else CPU_SIZES
        self.dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self._gen = torch.Generator(device).manual_seed(0)

    def _operands(self):
        # Made for each sample and freed after it, so that no probe memory is allocated during a pipeline call
        # (its peak memory is measured). Random operands: zeros run faster on tensor cores than real data does.
        import torch

        n, count = self.sizes["matmul_n"], self.sizes["copy_mib"] * 2**20 // 4
        a = torch.randn(n, n, generator=self._gen, device=self.device, dtype=self.dtype)
        b = torch.randn(n, n, generator=self._gen, device=self.device, dtype=self.dtype)
        src = torch.ones(count, device=self.device, dtype=torch.float32)
        return a, b, torch.empty(n, n, device=self.device, dtype=self.dtype), src, torch.empty_like(src)

    def _window(self) -> tuple[float, float]:
        """Seconds per matmul and per copy over one window of alternating chunks."""
        import torch

        from fluxperf.timing import synchronize, timed

        a, b, out, src, dst = self._operands()
        mm, cp, chunks = self.sizes["matmul_reps"], self.sizes["copy_reps"], self.sizes["chunks"]
        torch.mm(a, b, out=out)  # first calls pick the kernels; not timed
        dst.copy_(src)

        def matmuls():
            for _ in range(mm):
                torch.mm(a, b, out=out)

        def copies():
            for _ in range(cp):
                dst.copy_(src)

        if not self.device.startswith("cuda"):
            mm_s = cp_s = 0.0
            for _ in range(chunks):
                mm_s += timed(matmuls, self.device)[0]
                cp_s += timed(copies, self.device)[0]
            return mm_s / (chunks * mm), cp_s / (chunks * cp)
        # Events between the chunks time each on the GPU itself: the whole window is queued at once and
        # synchronized once, so the host's pace can't leave gaps in it, and the time another context holds the
        # GPU in the middle of a chunk is in that chunk's time.
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(2 * chunks + 1)]
        synchronize(self.device)
        marks[0].record()
        for i in range(chunks):
            matmuls()
            marks[2 * i + 1].record()
            copies()
            marks[2 * i + 2].record()
        synchronize(self.device)
        mm_ms = sum(marks[2 * i].elapsed_time(marks[2 * i + 1]) for i in range(chunks))
        cp_ms = sum(marks[2 * i + 1].elapsed_time(marks[2 * i + 2]) for i in range(chunks))
        return mm_ms / 1e3 / (chunks * mm), cp_ms / 1e3 / (chunks * cp)

    def _launch(self) -> float:
        # A mix of the small ops a transformer block dispatches, on tensors so small that the GPU is idle
        # between them: the time is the host's.
        import torch

        from fluxperf.timing import timed

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
        return timed(loop, self.device)[0] / iters

    def sample(self) -> dict[str, float]:
        """Seconds per unit of each workload: one matmul, one copy, one loop iteration of small ops."""
        import torch

        with torch.no_grad():
            matmul_s, copy_s = self._window()
            return {"matmul_s": matmul_s, "copy_s": copy_s, "launch_s": self._launch()}


def rates(sample: dict[str, float], device: str) -> dict[str, float]:
    """A sample as rates a person reads: TFLOP/s, GB/s (read + written), µs per loop iteration of small ops."""
    sizes = GPU_SIZES if device.startswith("cuda") else CPU_SIZES
    n = sizes["matmul_n"]
    moved = 2 * sizes["copy_mib"] * 2**20
    return {
        "matmul_tflops": 2 * n**3 / sample["matmul_s"] / 1e12,
        "copy_gbps": moved / sample["copy_s"] / 1e9,
        "launch_us": sample["launch_s"] * 1e6,
    }


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(samples[k]) for k in PROBES}
