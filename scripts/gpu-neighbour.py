"""Another process on the GPU, for live checks of the shared-machine rule: bf16 matmul bursts at a set duty.

    python scripts/gpu-neighbour.py --duty 0.2 --burst-ms 3 --seconds 600 [--log neighbour.log]

Each burst queues 4096³ matmuls for about --burst-ms of GPU time and waits for them; then it sleeps so that its
kernels run about --duty of the time. Every 10 s, and at the end, it writes the duty it achieved (GPU time of its
own bursts over wall time, from CUDA events) to --log, so a session's report can be set beside it. `--check`
instead prints what fluxperf's contention sensor reads on this GPU with and without such a neighbour.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time


def neighbour(duty: float, burst_ms: float, seconds: float, log: str | None) -> None:
    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(8):
        a @ b
    stop.record()
    stop.synchronize()
    per_mm_ms = start.elapsed_time(stop) / 8
    reps = max(1, round(burst_ms / per_mm_ms))
    busy_ms, t0, last = 0.0, time.monotonic(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        start.record()
        for _ in range(reps):
            a @ b
        stop.record()
        stop.synchronize()
        ms = start.elapsed_time(stop)
        busy_ms += ms
        time.sleep(ms / 1e3 * (1 - duty) / duty)
        if log and time.monotonic() - last > 10:
            last = time.monotonic()
            with open(log, "a") as fh:
                fh.write(
                    f"t={last - t0:.0f}s achieved duty {busy_ms / 1e3 / (last - t0):.3f} "
                    f"({reps} matmuls of {per_mm_ms:.3f} ms per burst)\n"
                )


def check() -> None:
    """What the sensor reads: NVML's sample period, quiet windows alone and beside a 20% neighbour, processes."""
    from fluxperf.contention import Sensor

    sensor = Sensor("cuda")
    print(
        f"NVML: {sensor.why_not_gpu or 'ok'}; sample period "
        f"{sensor.nvml.period_s if sensor.nvml else None} s; quiet window {sensor.window_s} s"
    )
    if not sensor.window_s:
        return
    import torch

    torch.ones(1, device="cuda")  # this process's own context
    alone = [sensor.quiet() for _ in range(5)]
    proc = subprocess.Popen([sys.executable, __file__, "--duty", "0.2", "--burst-ms", "3", "--seconds", "60"])
    try:
        time.sleep(8)  # its start-up: torch import, CUDA context
        beside = [sensor.quiet() for _ in range(5)]
        token = sensor.start()
        time.sleep(0.5)
        reading = sensor.stop(token, None)
    finally:
        proc.kill()
    print(f"quiet windows alone: {alone}")
    print(f"quiet windows beside a 20% neighbour: {beside}")
    print(
        f"other compute processes: {reading.gpu_other_procs}; clock events: {reading.clock_events}; "
        f"runqueue wait over 0.5 s: {reading.runq_wait_s}; CPU pressure: {reading.cpu_pressure_s}"
    )


def _duty(text: str) -> float:
    """A share of the time in (0, 1]: the sleep after each burst is its (1 - duty) / duty."""
    try:
        duty = float(text)
    except ValueError:
        duty = math.nan
    if not 0 < duty <= 1:
        raise argparse.ArgumentTypeError(
            f"{text} is not a share of the time above 0 and at most 1 (for an idle GPU run no neighbour)"
        )
    return duty


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duty", type=_duty, default=0.2)
    parser.add_argument("--burst-ms", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--log")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        check()
    else:
        neighbour(args.duty, args.burst_ms, args.seconds, args.log)
