"""Estimates with confidence intervals: latency changes, speedups, the machine's change from the probe.

Everything here is a pure function of numbers. fluxperf.rules decides verdicts from these estimates,
fluxperf.messages words them, and fluxperf.verdicts gathers the numbers (more rounds while a verdict is inconclusive).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@functools.lru_cache(maxsize=4096)
def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    from scipy import stats as sps

    return float(sps.t.ppf((1 + confidence) / 2, df))


def _t(df: float) -> float:
    # Welch's df is fractional; a tenth is far finer than the t quantile changes over (and keeps the cache small).
    return t_quantile(round(max(df, 1.0), 1))


@dataclass(frozen=True)
class Interval:
    """A change on the log scale, e.g. log(latency now / latency at the baseline), with its 95% interval."""

    value: float
    low: float
    high: float
    n: int

    @property
    def factor(self) -> float:
        return math.exp(self.value)

    def shifted(self, by: "Interval") -> "Interval":
        """This change minus another (e.g. a latency change net of the machine's), their errors combined."""
        half = math.hypot(self.high - self.value, by.high - by.value)
        value = self.value - by.value
        return Interval(value, value - half, value + half, self.n)


def _logs(samples) -> np.ndarray:
    return np.log(np.asarray(samples, dtype=float))


# Latency samples have a heavy right tail: a host hiccup makes an image 10-30% slower now and then. A 20%-trimmed
# mean with its winsorized variance (Yuen's test) keeps one such image from widening the interval of a whole
# session, and equals the plain mean when there are no outliers.
TRIM = 0.2


def trimmed(x: np.ndarray) -> tuple[float, float, int]:
    """Trimmed mean, the variance of that estimate, and its degrees of freedom (Yuen)."""
    n = len(x)
    g = int(TRIM * n)
    h = n - 2 * g
    xs = np.sort(x)
    mean = float(xs[g : n - g].mean())
    if h < 2:
        return mean, math.nan, 0
    w = np.clip(xs, xs[g], xs[n - g - 1])
    return mean, float(w.var(ddof=1)) * (n - 1) / (h * (h - 1)), h - 1


def _welch(a: tuple, b: tuple, n: int) -> Interval:
    (ma, va, dfa), (mb, vb, dfb) = a, b
    value = ma - mb
    if math.isnan(va) or math.isnan(vb):
        return Interval(value, math.nan, math.nan, n)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(value, value, value, n)
    df = (va + vb) ** 2 / ((va**2 / dfa if va else 0) + (vb**2 / dfb if vb else 0))
    half = _t(df) * se
    return Interval(value, value - half, value + half, n)


def log_change(now, before) -> Interval:
    """log(now / before) of two independent sets of samples: the trimmed means of their logs, Yuen's interval."""
    return _welch(trimmed(_logs(now)), trimmed(_logs(before)), len(now))


# A latency's noise only ever adds time: a host hiccup, a neighbour on the machine, a stretch of contention. The
# rules compare a pipeline's lower quartile, its cost when nothing interferes, which such a stretch barely moves:
# in the shipped H200 baseline 9 of 20 compile rounds ran 6-37% slow while the matmul probe rose 2-10%; against
# the 11 quiet rounds alone, that moved compile's median by 1.8%, its 20%-trimmed mean by 4.1% and its lower
# quartile by 0.5%. A later session with compile 9% slower came out +3.3% by trimmed means and +7.0% by lower
# quartiles (docs/results.md). The quartile is Harrell and Davis's (a weighted sum of every order statistic),
# its error Maritz and Jarrett's.
LOW_QUANTILE = 0.25


@functools.lru_cache(maxsize=256)
def _hd_weights(n: int, p: float = LOW_QUANTILE) -> np.ndarray:
    from scipy import stats as sps

    edges = sps.beta.cdf(np.arange(n + 1) / n, p * (n + 1), (1 - p) * (n + 1))
    return np.diff(edges)


def low_quartile(x: np.ndarray) -> tuple[float, float, int]:
    """Harrell-Davis lower quartile, the variance of that estimate (Maritz-Jarrett), and degrees of freedom."""
    n = len(x)
    xs = np.sort(x)
    w = _hd_weights(n)
    value = float(w @ xs)
    if n < 3:
        return value, math.nan, 0
    return value, max(float(w @ xs**2) - value**2, 0.0), n - 1


def latency_change(now, before) -> Interval:
    """log(now / before) of two sessions' latencies: the change of their lower quartiles, with its interval."""
    return _welch(low_quartile(_logs(now)), low_quartile(_logs(before)), len(now))


def median_change(now, before) -> Interval:
    """log(median now / median before), with the interval of log_change. Probe samples have outliers (a host
    hiccup in one sample); the median moves less with them, the spread still comes from every sample."""
    ci = log_change(now, before)
    value = float(np.log(np.median(now)) - np.log(np.median(before)))
    return Interval(value, value - (ci.value - ci.low), value + (ci.high - ci.value), ci.n)


@dataclass(frozen=True)
class Speedup:
    value: float  # geometric mean of eager/variant latency ratios
    ci_low: float
    ci_high: float
    n: int
    design: str  # "paired": interleaved rounds; "blocks": eager block then variant block


def median_spread(samples) -> tuple[float, float]:
    """Median and interquartile range, the spread the report quotes beside n."""
    q1, med, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 50, 75])
    return float(med), float(q3 - q1)


def speedup(eager_s, variant_s, paired: bool) -> Speedup:
    """Eager/variant speedup on the log scale, where a ratio's noise is symmetric.

    Paired rounds (eager and variant alternating, one image each) cancel drift within the session: the CI is a
    one-sample t interval on the per-round log ratios. Blocks (eager's, then the variant's) use Welch's interval.
    """
    e, v = _logs(eager_s), _logs(variant_s)
    if paired:
        if len(e) != len(v):
            raise ValueError(f"paired samples differ in length: {len(e)} eager vs {len(v)} variant")
        d = e - v
        n = len(d)
        mean = float(d.mean()) if n else math.nan
        if n >= 2:
            half = _t(n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
            lo, hi = mean - half, mean + half
        else:
            lo = hi = math.nan
        return Speedup(math.exp(mean), math.exp(lo), math.exp(hi), n, "paired")
    ci = log_change(eager_s, variant_s)
    return Speedup(math.exp(ci.value), math.exp(ci.low), math.exp(ci.high), min(len(e), len(v)), "blocks")


# ----- the machine's change, and a pipeline's own ------------------------------------------------------------------
# `now` and `base` below are fluxperf.result.Timings: a session's and its baseline's.


def _half(i: Interval) -> float:
    return i.high - i.value


def machine_change(now: dict, before: dict) -> dict[str, Interval]:
    """How much slower the machine is than at the baseline, per resource, from the probe's samples.

    gpu: the mean of the matmul and the copy probe's log changes; host: the small-op loop's.
    """
    mm, cp = median_change(now["matmul_s"], before["matmul_s"]), median_change(now["copy_s"], before["copy_s"])
    value = (mm.value + cp.value) / 2
    half = math.hypot(_half(mm), _half(cp)) / 2
    gpu = Interval(value, value - half, value + half, mm.n)
    return {"gpu": gpu, "host": median_change(now["launch_s"], before["launch_s"])}


def host_share(now, base) -> float:
    """How much of a GPU-bound pipeline's latency follows the host: the share of a call the GPU waits for it.

    Taken from the busier of the two sessions, as a disturbed stretch or an injected pause only ever lowers it.
    On an H200 at 512² this matched what was seen: pruna_cache_compile (84-91% busy) moved 2% when the host
    probe moved 12%; compile (94% busy in a clean session) moved under 1% when it moved 30% (docs/results.md)."""
    busy = [b for b in (now.gpu_busy, base.gpu_busy) if b is not None]
    return 1.0 - min(1.0, max(busy)) if busy else 0.0


def expected_change(machine: dict[str, Interval], bound: str, host_share: float = 0.0) -> Interval:
    """The latency change the machine alone predicts: for a host-bound pipeline the host probe's; for a
    GPU-bound one the GPU probe's, plus `host_share` of the host's beyond it; for "unknown", the larger."""
    if bound == "gpu":
        gpu, host = machine["gpu"], machine["host"]
        value = gpu.value + host_share * (host.value - gpu.value)
        half = math.hypot((1 - host_share) * _half(gpu), host_share * _half(host))
        return Interval(value, value - half, value + half, gpu.n)
    if bound in machine:
        return machine[bound]
    return max(machine.values(), key=lambda i: i.value)


def sharing_weights(bound: str, share: float) -> tuple[float, float]:
    """How much of a call the GPU's and the host's sharing can stretch: a GPU-bound pipeline's kernels for the
    share of the call they run (1 - share), its host part for the rest; a host-bound one all host; unknown: both."""
    return {"gpu": (1.0 - share, share), "host": (0.0, 1.0)}.get(bound, (1.0, 1.0))


def own_change(now, base, machine: dict[str, Interval]) -> Interval:
    """A pipeline's own latency change net of the machine's, by what sets its latency (the baseline's `bound`):
    net of the GPU probe's change for a GPU-bound one (and of the host probe's for the share of a call it waits
    on the host), of the host probe's for a host-bound one, and of whichever slowed more when it is unknown (no
    profiler). The probes' changes are of medians: one probe sample lasts milliseconds and catches the host's
    hiccups, a median over the session doesn't."""
    expected = expected_change(machine, base.bound, host_share(now, base))
    return latency_change(now.samples_s, base.samples_s).shifted(expected)
