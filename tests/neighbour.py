"""A simulated neighbour on the GPU: another process whose kernels run in bursts of a few milliseconds.

Its timeline alternates bursts of 2-5 ms with idle gaps, exponentially distributed so that a window starts at a
random phase, with a long-run duty (the share of time its kernels run) of `duty`. While its kernels run, this
process's kernels lose `kappa` of their progress: 0.5 when the two contexts share the GPU in equal time slices,
1.0 when the neighbour holds it for the whole burst. Used by tests/unit/test_probe.py (which probe design sees it)
and tests/unit/test_stats.py (what the speed rule makes of a session beside it).
"""

from __future__ import annotations

BURST_S = (0.002, 0.005)


def _timeline(rng, duty: float):
    """(running, seconds) spans of the neighbour from a random moment on, forever."""
    mean_burst = sum(BURST_S) / 2
    mean_gap = mean_burst * (1 - duty) / duty
    # A stationary start: inside a burst with probability `duty`, with a uniform share of it left.
    on = rng.random() < duty
    left = rng.uniform(*BURST_S) * rng.random() if on else rng.exponential(mean_gap)
    while True:
        yield on, left
        on = not on
        left = rng.uniform(*BURST_S) if on else rng.exponential(mean_gap)


def overlap(rng, duty: float, window_s: float) -> float:
    """The share of a window of `window_s` seconds, started at a random time, in which the neighbour ran."""
    if duty <= 0:
        return 0.0
    t = busy = 0.0
    for on, span in _timeline(rng, duty):
        span = min(span, window_s - t)
        busy += span if on else 0.0
        t += span
        if t >= window_s:
            return busy / window_s


def slowdown(rng, duty: float, kappa: float, work_s: float) -> float:
    """How much longer GPU work of `work_s` seconds takes beside the neighbour (a factor ≥ 1): while the neighbour
    runs, the work progresses at 1 - kappa of its own pace."""
    if duty <= 0:
        return 1.0
    done = t = 0.0
    for on, span in _timeline(rng, duty):
        rate = 1.0 - kappa if on else 1.0
        if rate > 0 and done + rate * span >= work_s:
            return (t + (work_s - done) / rate) / work_s
        done += rate * span
        t += span


def long_slowdown(rng, duty: float, kappa: float, work_s: float) -> float:
    """slowdown() for work that spans many of the neighbour's cycles (a pipeline call), in constant time: the
    share of the call the neighbour runs is then close to normal (renewal theory), around `duty`."""
    if duty <= 0:
        return 1.0
    on_mean, on_var = sum(BURST_S) / 2, (BURST_S[1] - BURST_S[0]) ** 2 / 12
    cycle = on_mean / duty
    off_var = (cycle - on_mean) ** 2
    span = work_s / (1 - kappa * duty)
    sd = ((on_var * (1 - duty) ** 2 + off_var * duty**2) / (span / cycle)) ** 0.5 / cycle
    share = min(max(rng.normal(duty, sd), 0.0), 0.99)
    return 1.0 / (1.0 - kappa * share)
