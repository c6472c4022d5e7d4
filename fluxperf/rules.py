"""The rules: each verdict's decision from numbers, returned as (status, details). No words here.

fluxperf.messages renders a verdict's sentence from its details alone, and fluxperf.verdicts gathers the inputs (the
speed verdict's extra rounds included). The README's "How a session judges" tables state these rules; `now` and
`base` are fluxperf.result.Timings of this session and of the baseline.
"""

from __future__ import annotations

import math

from fluxperf import stats
from fluxperf.stats import Interval

PASS, FAIL, INCONCLUSIVE, WARN, SKIP = "PASS", "FAIL", "INCONCLUSIVE", "WARN", "SKIP"


def _interval(i: Interval) -> list:
    return [i.value, i.low, i.high]


def speed(now, base, tol: float, eager_bound: str = "unknown", final: bool = False) -> tuple[str, dict]:
    """Did the optimization regress? One variant's verdict against its baseline.

    The statistic is the variant's own latency change net of the machine's (stats.own_change). Eager is not the
    yardstick: at 512² it is host-bound and moves by tens of percent between sessions on one machine, more than
    the regressions being judged. PASS when the whole 95% interval of the slowdown is below the tolerance,
    INCONCLUSIVE while it straddles it (the procedure then takes more rounds; at the round cap, `final`, an
    estimate beyond the tolerance is a FAIL if the interval's half-width is within the tolerance), FAIL above
    it, unless eager, per unit of the host probe, is slower by at least as much with 95% confidence, or the
    variant and eager are both host-bound and the variant did not slow more than eager with 95% confidence: then
    the whole pipeline is slower (WARN here; test_stack_speed_holds judges the stack).
    """
    machine = stats.machine_change(now.all_probe, base.all_probe)
    # This session's speedup from its samples as they are now; the baseline's as it recorded it.
    sp = stats.speedup(now.eager_samples_s, now.samples_s, now.design == "paired")
    stat = stats.own_change(now, base, machine)
    eager = stats.latency_change(now.eager_samples_s, base.eager_samples_s)
    eager_net = eager.shifted(machine["host"])
    base_speedup = base.speedup().value
    details = {
        "slowdown": stat.value,
        "ci": [stat.low, stat.high],
        "n": stat.n,
        "tolerance": tol,
        "bound": base.bound,
        "host_share": stats.host_share(now, base),
        "eager_bound": eager_bound,
        "speedup": [sp.value, sp.ci_low, sp.ci_high],
        "design": sp.design,
        "base_speedup": base_speedup,
        "eager_change": eager.value,
        "speedup_change": math.log(sp.value / base_speedup),
        "eager_net": eager_net.value,
        "machine": {k: v.value for k, v in machine.items()},
    }
    if math.isnan(stat.low):
        return INCONCLUSIVE, {**details, "case": "too few"}
    if now.sharing.shared:
        return _speed_shared(now, base, stat, eager, eager_net, eager_bound, details)
    return _speed_quiet(now, base, stat, eager, eager_net, eager_bound, final, details)


def _speed_quiet(
    now, base, stat: Interval, eager: Interval, eager_net: Interval, eager_bound: str, final: bool, details: dict
) -> tuple[str, dict]:
    limit = math.log1p(details["tolerance"])
    if stat.high < limit:
        return PASS, {**details, "case": "stale" if stat.high < -limit else "within", "stale": stat.high < -limit}
    # At the round cap the best estimate decides, if the interval is narrow enough for it to mean something:
    # within the tolerance either side of it. A host-bound pipeline's rarely is; it stays INCONCLUSIVE.
    decides = final and stat.value > limit and stat.high - stat.value <= limit
    if stat.low <= limit and not decides:
        return INCONCLUSIVE, {**details, "case": "straddles"}
    details = {**details, "at_the_cap": stat.low <= limit}
    return _regressed(now, base, stat, eager, eager_net, eager_bound, details, "regressed")


def _regressed(
    now, base, stat: Interval, eager: Interval, eager_net: Interval, eager_bound: str, details: dict, case: str
) -> tuple[str, dict]:
    """A slowdown past the tolerance: FAIL as `case`, unless eager shows the whole pipeline slowed (WARN)."""
    # Only when eager, net of the host probe, slowed at least as much as the variant, with confidence: on an H200
    # that net change itself moved by +4-5% between sessions whose host was 20% faster (eager has a GPU-bound
    # floor the host can't push below; docs/results.md), so a looser test excused a real 10% slowdown.
    if eager_net.low >= stat.value:
        return WARN, {**details, "case": "eager slower"}
    # A host-bound variant follows the same host as a host-bound eager, so eager can take the blame: unless the
    # variant slowed more than eager did, with 95% confidence, the host slowed both where its probe didn't look.
    # Another process taking the CPU in turns runs between the probe's sub-millisecond samples but not through a
    # whole call: on 2 shared cores the tiny model's calls ran 2.2x slower while the probe's median didn't move.
    # A GPU-bound variant gets no such allowance: eager, net of the probe, moves several percent between sessions.
    past_eager = stats.latency_change(now.samples_s, base.samples_s).shifted(eager)
    if base.bound == "host" and eager_bound == "host" and past_eager.low <= 0:
        return WARN, {**details, "case": "host slower", "past_eager": _interval(past_eager)}
    return FAIL, {**details, "case": case}


def _sharing(now, base) -> tuple[dict, float]:
    sh = now.sharing
    explained = sh.explained(*stats.sharing_weights(base.bound, stats.host_share(now, base)))
    return sh.as_dict(), explained


def _speed_shared(
    now, base, stat: Interval, eager: Interval, eager_net: Interval, eager_bound: str, details: dict
) -> tuple[str, dict]:
    """The speed rule on a shared machine (README, "When the machine is shared"). The probe's samples are short
    and another process's work is intermittent, so the probe accounts for part of the sharing at best: a PASS
    needs the latency within the tolerance both before any correction for the machine and net of it, and a FAIL
    a slowdown beyond the tolerance plus the most the sharing can explain, both with 95% confidence, and only
    where the quiet rule would fail too (eager not slowed as much). Anything between is not judged:
    INCONCLUSIVE, and the procedure takes no more rounds. Its PASS and its FAIL each need all the quiet rule's
    do, and more: sharing never fails what a quiet machine wouldn't, nor passes what it wouldn't."""
    limit = math.log1p(details["tolerance"])
    sharing, explained = _sharing(now, base)
    raw = stats.latency_change(now.samples_s, base.samples_s)
    details = {**details, "shared": True, "explained": explained, "raw": _interval(raw), "sharing": sharing}
    # Raw alone would pass a regression on a faster machine: 15% slower net of a host probe 25% faster.
    if max(raw.high, stat.high) < limit:
        return PASS, {**details, "case": "within even so"}
    if stat.low > limit + explained:
        return _regressed(now, base, stat, eager, eager_net, eager_bound, details, "beyond the sharing")
    return INCONCLUSIVE, {**details, "case": "not judged"}


def stack(now, base, tol: float, software_changed: bool) -> tuple[str, dict]:
    """Did the whole stack get slower? A pipeline's absolute latency against its baseline, net of the machine.

    Slower beyond the tolerance after the machine probe's share is taken out: FAIL when the software differs
    from the baseline's (the message names the differences), WARN when it doesn't (a host or clock state the
    probe doesn't cover). Slower, and probably so net of the machine too (that interval straddling the
    tolerance): WARN. Slower only before that correction: WARN, the whole machine is slower.
    """
    machine = stats.machine_change(now.all_probe, base.all_probe)
    raw = stats.latency_change(now.samples_s, base.samples_s)
    net = stats.own_change(now, base, machine)
    limit = math.log1p(tol)
    details = {
        "change": raw.value,
        "net": net.value,
        "machine": {k: v.value for k, v in machine.items()},
        "raw_ci": [raw.low, raw.high],
        "net_ci": [net.low, net.high],
        "n": raw.n,
        "tolerance": tol,
    }
    if now.sharing.shared and raw.value > limit:
        # As for the speed rule: only a slowdown beyond what the sharing can explain is the stack's.
        sharing, explained = _sharing(now, base)
        details = {**details, "shared": True, "explained": explained, "sharing": sharing}
        if not (not math.isnan(net.low) and net.low > limit + explained and software_changed):
            return WARN, {**details, "case": "not judged"}
    if not math.isnan(net.low) and net.low > limit:
        return (
            (FAIL, {**details, "case": "suspects"})
            if software_changed
            else (WARN, {**details, "case": "beyond the probe"})
        )
    if raw.value > limit and net.value > limit:
        return WARN, {**details, "case": "probably"}
    if raw.value > limit:
        return WARN, {**details, "case": "whole machine"}
    return PASS, {**details, "case": "within"}


def ratio(value: float, base: float, tol: float) -> tuple[str, dict]:
    """Higher-is-worse numbers (peak memory): FAIL past base × (1 + tol)."""
    limit = base * (1 + tol)
    return (FAIL if value > limit else PASS), {"value": value, "base": base, "tolerance": tol, "limit": limit}


def steps(counts: list, scenario_steps: int) -> tuple[str, dict]:
    """Every timed call, eager's and the variant's, ran the scenario's number of denoising steps."""
    short = [n for n in counts if n != scenario_steps]
    details = {"calls": len(counts), "short": len(short), "counts": sorted(set(short)), "steps": scenario_steps}
    return (FAIL if short or not counts else PASS), details


def quality_floor(values: list, floor: float, higher_is_better: bool) -> tuple[str, dict]:
    """Every image meets the floor against eager's image of the same prompt and seed."""
    below = [v for v in values if (v < floor if higher_is_better else v > floor)]
    return (FAIL if below else PASS), {"failing": len(below), "images": len(values), "floor": floor}


# How many standard errors of the difference between two sessions' means the spread-based tolerance allows.
QUALITY_SPREAD_Z = 3.0


def spread_tolerance(values, n_now: int) -> float | None:
    """The tolerance the baseline's spread over prompts gives a mean: QUALITY_SPREAD_Z standard errors of the
    difference of two means, sd × sqrt(1/n_baseline + 1/n_now). On the real model a new torch or driver makes a
    compiled pipeline's images differ from eager's in new, equally good ways: each image's score is then a new
    draw from a distribution as wide as the baseline's spread over prompts, and the mean moves by about this."""
    values = [v for v in values or () if v is not None and math.isfinite(v)]
    if len(values) < 2 or n_now < 1:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return QUALITY_SPREAD_Z * sd * math.sqrt(1 / len(values) + 1 / n_now)


def quality_baseline(now, base, tol: float, higher_is_better: bool) -> tuple[str, dict]:
    """An aggregate (result.Score) against the baseline's, with the larger of the entry's tolerance and the one the
    baseline's spread over prompts gives (spread_tolerance)."""
    spread = spread_tolerance(base.values, len(now.values))
    wide = spread is not None and spread > tol
    tol = spread if wide else tol
    limit = base.mean - tol if higher_is_better else base.mean + tol
    regressed = now.mean < limit if higher_is_better else now.mean > limit
    details = {"mean": now.mean, "base": base.mean, "tolerance": tol, "from_spread": wide, "limit": limit}
    return (FAIL if regressed else PASS), details
