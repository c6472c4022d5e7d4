"""Speedup estimate with a confidence interval, and the speed, latency and memory verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Speedup:
    value: float      # geometric mean of eager/variant latency ratios
    ci_low: float
    ci_high: float
    n: int
    design: str       # "paired": interleaved rounds; "blocks": eager block then variant block


def median_spread(samples) -> tuple[float, float]:
    """Median and interquartile range, the spread the report quotes beside n."""
    q1, med, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 50, 75])
    return float(med), float(q3 - q1)


def speedup(eager_s, variant_s, paired: bool, confidence: float = CONFIDENCE) -> Speedup:
    """Eager/variant speedup on the log scale, where a ratio's noise is symmetric.

    Paired rounds (eager and variant alternating, one image each) cancel drift within the session:
    the CI is a one-sample t interval on the per-round log ratios. Unpaired blocks use Welch's interval.
    """
    e = np.log(np.asarray(eager_s, dtype=float))
    v = np.log(np.asarray(variant_s, dtype=float))
    if paired:
        if len(e) != len(v):
            raise ValueError(f"paired samples differ in length: {len(e)} eager vs {len(v)} variant")
        d = e - v
        n, mean = len(d), float(d.mean()) if len(d) else math.nan
        if n >= 2 and np.ptp(d) > 0:
            lo, hi = sps.ttest_1samp(d, 0.0).confidence_interval(confidence)
        else:
            lo = hi = math.nan if n < 2 else mean
    else:
        n, mean = min(len(e), len(v)), float(e.mean() - v.mean())
        if len(e) >= 2 and len(v) >= 2 and (np.ptp(e) > 0 or np.ptp(v) > 0):
            lo, hi = sps.ttest_ind(e, v, equal_var=False).confidence_interval(confidence)
        else:
            lo = hi = math.nan
    return Speedup(math.exp(mean), math.exp(lo), math.exp(hi), n, "paired" if paired else "blocks")


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str
    stale: bool = False       # much faster than the baseline: the baseline should be refreshed


def judge_speedup(name: str, est: Speedup, baseline: dict, where: str, rebaseline: str,
                  eager_latency_s: float | None = None, variant_latency_s: float | None = None) -> Verdict:
    """The speed verdict, from two signals measured against the baseline.

    The speedup over eager (paired within this session) is the primary signal: PASS when its whole 95%
    interval clears baseline × (1 − tolerance), INCONCLUSIVE while the interval straddles that limit.

    Eager at 512² is launch-bound, so the host CPU and the GPU's clock state move it by tens of percent
    between sessions on the same machine (one H100 host gave 2.0 to 3.9 s per image, with eager sometimes
    slowing together with the variant), while a compiled variant's own latency held within 3%. So:
    - a speedup below the limit is the variant's regression only if its own median latency also rose past
      the speedup tolerance; otherwise eager moved, and the verdict is INCONCLUSIVE with that reason;
    - a variant whose own latency rose past the latency tolerance fails unless the speedup shows it kept
      pace with eager (interval at or above the baseline speedup: the whole machine got slower).
    """
    base, tol = baseline["speedup"], baseline["tolerance"]["speedup"]
    lat_tol = baseline["tolerance"]["latency"]
    limit = base * (1 - tol)
    ci = f"95% CI {est.ci_low:.2f}–{est.ci_high:.2f}, n={est.n} {est.design}"
    facts = f"speedup {est.value:.2f}× (baseline {base:.2f}×, tolerance {tol:.0%}, limit {limit:.2f}×, {ci}) [{where}]"
    if math.isnan(est.ci_low):
        return Verdict(INCONCLUSIVE, f"{name}: {facts}: too few samples for an interval")
    own = None if variant_latency_s is None else variant_latency_s / baseline["latency_s"]
    eager = None if eager_latency_s is None else eager_latency_s / baseline["eager_latency_s"]
    own_facts = "" if own is None else (
        f"; own latency {variant_latency_s:.3f} s = {own:.2f}× baseline {baseline['latency_s']:.3f} s"
        + ("" if eager is None else f", eager {eager:.2f}× its baseline"))
    if own is not None and own > 1 + lat_tol and est.ci_low < base:
        return Verdict(FAIL, f"{name}: {facts}{own_facts} > latency limit {1 + lat_tol:.2f}× and the speedup does "
                             f"not show the whole machine slowing; if intended: {rebaseline}")
    if est.ci_high < limit:
        if own is not None and own <= 1 + tol:
            return Verdict(INCONCLUSIVE, f"{name}: {facts}: below the limit, but {name}'s own latency held"
                                         f"{own_facts}: eager moved (another host, CPU or clock state), "
                                         f"not a regression of {name}")
        return Verdict(FAIL, f"{name}: {facts}{own_facts} < limit; if intended: {rebaseline}")
    if est.ci_low >= limit:
        stale = est.ci_low > base * (1 + tol)
        note = f"; faster than the baseline, which is stale: {rebaseline}" if stale else ""
        return Verdict(PASS, f"{name}: {facts}{own_facts}{note}", stale)
    return Verdict(INCONCLUSIVE, f"{name}: {facts}{own_facts}: the interval straddles the limit")


def judge_ratio(name: str, metric: str, value: float, base: float, tol: float, unit: str, where: str) -> Verdict:
    """Higher-is-worse metrics (latency, memory): FAIL (or drift, for the caller to warn) past base×(1+tol)."""
    limit = base * (1 + tol)
    facts = (f"{name}: {metric} {value:.3f}{unit} vs baseline {base:.3f}{unit} "
             f"(tolerance {tol:.0%}, limit {limit:.3f}{unit}) [{where}]")
    return Verdict(FAIL if value > limit else PASS, facts)
