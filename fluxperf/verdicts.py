"""The verdict procedures the suite calls: rounds until the speed verdict is conclusive, then the rules.

Pure library code: a procedure returns a stats.Verdict and never touches pytest, so the seeded simulations in
tests/unit/test_stats.py run exactly what a GPU session runs. fluxperf.checks turns verdicts into test outcomes.
"""

from __future__ import annotations

import math

from fluxperf import quality, stats
from fluxperf.stats import FAIL, INCONCLUSIVE, PASS, Verdict


def steps(result, scenario_steps: int) -> Verdict:
    """Every timed call, eager's and the variant's, ran the scenario's number of denoising steps."""
    short = [n for n in result.steps if n != scenario_steps]
    if not result.steps:
        return Verdict(FAIL, f"{result.name}: no timed call was counted")
    if short:
        return Verdict(FAIL, f"{result.name}: {len(short)} of {len(result.steps)} timed calls ran "
                             f"{sorted(set(short))} denoising steps instead of the scenario's {scenario_steps}: its "
                             f"timings and images are of less work than the scenario asks; check the variant's "
                             f"scheduler, step callbacks and num_inference_steps")
    return Verdict(PASS, f"{result.name}: all {len(result.steps)} timed calls ran {scenario_steps} steps")


def speed(live, entry: dict, ctx: stats.Context, rounds: int, max_rounds: int,
          eager_bound: str = "unknown") -> Verdict:
    """Did the optimization regress? Judge; while INCONCLUSIVE, take `rounds` more rounds (both sides), up to
    `max_rounds`. A FAIL on the first `rounds` alone is confirmed with `rounds` more: a stretch of disturbed calls
    (another process on the machine) can cover a whole first set, and rarely a second one as well. A verdict left
    INCONCLUSIVE because the machine was shared is final.
    `live` is a bench.LiveRun, or anything with `.result` and `.more_rounds(k)`."""
    result = live.result
    base = stats.Run.from_entry(entry)
    tol = entry["tolerance"]["speed"]
    while True:
        # Blocks were timed at the cap already: nothing can be added to eager's side after an in-place build.
        final = len(result.variant_s) >= max_rounds or not result.paired
        verdict = stats.judge_speed(result.name, result.run(), base, entry["speedup"], tol, ctx, eager_bound, final)
        unconfirmed = verdict.status == FAIL and len(result.variant_s) < 2 * rounds
        # Not judged because the machine was shared: more rounds on a shared machine can't settle it.
        settled = verdict.status != INCONCLUSIVE or verdict.details.get("shared")
        if (settled and not unconfirmed) or final:
            return verdict
        live.more_rounds(min(rounds, max_rounds - len(result.variant_s)))


def stack(result, entry: dict, ctx: stats.Context) -> Verdict:
    """Did the whole stack get slower? This pipeline's latency against its baseline, net of the machine."""
    return stats.judge_stack(result.name, result.run(), stats.Run.from_entry(entry), entry["tolerance"]["stack"], ctx)


def _note(result, metric: str, prompts) -> str:
    q = result.quality[metric]
    p, seed = q["worst_item"]
    return (f"worst image: prompt {p} ({prompts[p][:60]!r}), seed {seed}, {quality.fmt(metric, q['worst'])}; "
            f"pair saved at {result.worst_pair_png}")


def quality_floor(result, metric: str, floor: float, prompts) -> Verdict:
    """Every image meets the variant's floor against eager's image of the same prompt and seed."""
    q = result.quality[metric]
    better = quality.HIGHER_IS_BETTER[metric]
    below = [v for v in q["values"] if (v < floor if better else v > floor)]
    kind = "lossless" if result.lossless else "lossy"
    if below:
        return Verdict(FAIL, f"{result.name}: {len(below)}/{len(q['values'])} images {'below' if better else 'above'} "
                             f"the {metric} floor {floor} ({kind} variant); {_note(result, metric, prompts)}")
    return Verdict(PASS, f"{result.name}: every image meets the {metric} floor {floor}")


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


def quality_baseline(result, metric: str, entry: dict, ctx: stats.Context, prompts) -> Verdict | None:
    """The aggregate against the baseline's, with the larger of the entry's tolerance and the one the baseline's
    spread over prompts gives (spread_tolerance)."""
    recorded = entry.get("quality") or {}
    q = result.quality[metric]
    better = quality.HIGHER_IS_BETTER[metric]
    base = recorded.get(f"{metric}_mean")
    if base is None and metric == "psnr_db":
        base = math.inf  # the baseline's images were identical to eager's
    tol = entry["tolerance"][metric]
    spread = spread_tolerance(recorded.get(f"{metric}_values"), len(q["values"]))
    wide = spread is not None and spread > tol
    tol_text = f"tolerance {spread:.4g} from the baseline's spread over prompts" if wide else f"tolerance {tol}"
    tol = spread if wide else tol
    mean = q["mean"]
    limit = base - tol if better else base + tol
    regressed = mean < limit if better else mean > limit
    facts = (f"{result.name}: {'pooled' if metric == 'psnr_db' else 'mean'} {metric} {quality.fmt(metric, mean)} vs "
             f"baseline {quality.fmt(metric, base)} ({tol_text}, limit {quality.fmt(metric, limit)}) [{ctx.where}]")
    if regressed:
        return Verdict(FAIL, f"{facts}; {_note(result, metric, prompts)}; if intended: {ctx.rebaseline}")
    return Verdict(PASS, facts)


def quality_skip_reason(result, metric: str, entry: dict) -> str | None:
    """Why the aggregate can't be compared with this baseline entry, or None when it can."""
    recorded = entry.get("quality") or {}
    if not recorded:
        return f"the baseline entry for {result.name} records no image quality"
    if metric == "lpips" and recorded.get("lpips_mean") is None:
        return f"the baseline entry for {result.name} has no LPIPS (it was unavailable when recorded)"
    if metric == "lpips" and recorded.get("lpips_backbone") != result.quality["lpips"].get("backbone"):
        return (f"the baseline's LPIPS used the {recorded.get('lpips_backbone')} backbone, this session the "
                f"{result.quality['lpips'].get('backbone')} one: different scales, only the floor applies")
    return None


__all__ = ["steps", "speed", "stack", "quality_floor", "quality_baseline", "quality_skip_reason", "PASS", "FAIL"]
