"""The verdict procedures the suite calls: gather the numbers, apply a rule (fluxperf.rules), word it
(fluxperf.messages). The speed verdict takes more rounds while it is inconclusive.

Pure library code: a procedure returns a Verdict and never touches pytest, so the seeded simulations in
tests/unit/test_stats.py run exactly what a GPU session runs. fluxperf.checks turns verdicts into test outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from fluxperf import history as hist
from fluxperf import messages, rules
from fluxperf.messages import Context
from fluxperf.metrics import METRICS
from fluxperf.rules import FAIL, INCONCLUSIVE, PASS, SKIP, WARN


@dataclass(frozen=True)
class Verdict:
    status: str  # PASS | FAIL | INCONCLUSIVE | WARN | SKIP
    message: str
    details: dict = field(default_factory=dict)

    @property
    def stale(self) -> bool:
        """Much faster than the baseline: the baseline should be refreshed."""
        return bool(self.details.get("stale"))


def steps(result, scenario_steps: int) -> Verdict:
    status, details = rules.steps(result.timings.steps, scenario_steps)
    return Verdict(status, messages.steps(result.name, status, details), details)


def not_judged_on_speed(name: str) -> Verdict:
    return Verdict(FAIL, messages.not_judged_on_speed(name))


def judge_speed(
    name: str, now, base, tol: float, ctx: Context, eager_bound: str = "unknown", final: bool = False
) -> Verdict:
    """One speed verdict on these timings (fluxperf.result.Timings) against the baseline's."""
    status, details = rules.speed(now, base, tol, eager_bound, final)
    return Verdict(status, messages.speed(name, status, details, ctx), details)


# The more(k, start) hook: k more paired rounds, numbered from `start`, as new Timings (fluxperf.bench.Live).
MoreRounds = Callable[[int, int], object]


def speed(
    name: str, timings, entry, ctx: Context, rounds: int, max_rounds: int, eager_bound: str, more: MoreRounds
) -> tuple[Verdict, object]:
    """Did the optimization regress? Judge; while INCONCLUSIVE, take `rounds` more rounds (both sides) from `more`,
    up to `max_rounds`. A FAIL on the first `rounds` alone is confirmed with `rounds` more: a stretch of disturbed
    calls (another process on the machine) can cover a whole first set, and rarely a second one as well. A verdict
    left INCONCLUSIVE because the machine was shared is final. Returns the verdict and the timings it was reached
    on, the rounds taken here included (as torch.utils.benchmark's adaptive loop returns its samples)."""
    base, tol = entry.result.timings, entry.tolerance["speed"]
    while True:
        done = len(timings.samples_s)
        # Blocks were timed at the cap already: nothing can be added to eager's side after an in-place build.
        final = done >= max_rounds or timings.design != "paired"
        verdict = judge_speed(name, timings, base, tol, ctx, eager_bound, final)
        unconfirmed = verdict.status == FAIL and done < 2 * rounds
        # Not judged because the machine was shared: more rounds on a shared machine can't settle it.
        settled = verdict.status != INCONCLUSIVE or verdict.details.get("shared")
        if (settled and not unconfirmed) or final:
            return verdict, timings
        timings = timings.extended(more(min(rounds, max_rounds - done), done))


def eager_bound(eager, entry) -> str:
    """What sets eager's pace, which decides whether eager can take the blame for a host-bound variant: this
    session's eager if it was measured (a Result), else the baseline's (an Entry), else unknown."""
    if eager is not None and eager.timings.samples_s:
        return eager.timings.bound
    return entry.result.timings.bound if entry is not None else "unknown"


def judge_stack(name: str, now, base, tol: float, ctx: Context) -> Verdict:
    status, details = rules.stack(now, base, tol, bool(ctx.changes))
    return Verdict(status, messages.stack(name, status, details, ctx), details)


def stack(name: str, timings, entry, ctx: Context) -> Verdict:
    """Did the whole stack get slower? This pipeline's latency against its baseline, net of the machine."""
    return judge_stack(name, timings, entry.result.timings, entry.tolerance["stack"], ctx)


def peak_memory(result, entry, ctx: Context) -> Verdict:
    """Peak GPU memory during the variant's calls against the baseline's, or SKIP when the baseline has none."""
    base = entry.result.timings.peak_mem_gb
    if base is None:
        return Verdict(SKIP, messages.no_peak_memory(result.name, ctx))
    status, details = rules.ratio(result.timings.peak_mem_gb, base, entry.tolerance["peak_mem"])
    return Verdict(status, messages.peak_memory(result.name, status, details, ctx), details)


def quality_floor(result, metric: str, floor: float, prompts) -> Verdict:
    """Every image meets the variant's floor against eager's image of the same prompt and seed."""
    status, details = rules.quality_floor(result.quality.scores[metric].values, floor, METRICS[metric].higher_is_better)
    return Verdict(status, messages.quality_floor(result, metric, status, details, prompts), details)


def _quality_skip(result, metric: str, entry) -> str | None:
    """Why the aggregate can't be compared with this baseline entry (a case of messages.quality_skipped)."""
    recorded = entry.result.quality.scores
    if not recorded:
        return "no quality"
    base = recorded.get(metric)
    if base is None or base.mean is None:
        return "no metric"
    if base.backbone != result.quality.scores[metric].backbone:
        return "other backbone"
    return None


def quality_baseline(result, metric: str, entry, ctx: Context, prompts) -> Verdict:
    """The aggregate against the baseline's (rules.quality_baseline), or SKIP saying why they can't be compared."""
    base = entry.result.quality.scores.get(metric)
    case = _quality_skip(result, metric, entry)
    if case:
        return Verdict(SKIP, messages.quality_skipped(result, metric, case, base))
    status, details = rules.quality_baseline(
        result.quality.scores[metric], base, entry.tolerance[metric], METRICS[metric].higher_is_better
    )
    return Verdict(status, messages.quality_baseline(result, metric, status, details, ctx, prompts), details)


def fidelity(result) -> Verdict:
    """A lossless variant's step-by-step fidelity, judged by the bench (fluxperf.fidelity.judge), or SKIP."""
    f = result.quality.fidelity or {"skipped": messages.no_fidelity(result.name)}
    if "skipped" in f:
        return Verdict(SKIP, f["skipped"])
    return Verdict(
        f["status"],
        messages.fidelity(result.name, f["status"], f["details"], f["floor"]["method"], f.get("hint")),
        f["details"],
    )


# The history verdict's reasons for not judging: too few sessions, or this one can't be placed in the series.
UNJUDGED = ("too short", "empty", "latest unusable")


def history(name: str, points: list, tolerance: float, accepted_utc: str | None, where: str) -> Verdict:
    """Have slowdowns that each passed the baseline they were judged against added up past the tolerance? The
    step detector over the variant's history (fluxperf.history); SKIP while the history is too short to tell."""
    status, details = hist.judge(points, tolerance, accepted_utc=accepted_utc)
    text = hist.message(details, name, where)
    return Verdict(SKIP if details.get("reason") in UNJUDGED else status, text, details)


__all__ = [
    "Verdict",
    "Context",
    "steps",
    "speed",
    "judge_speed",
    "stack",
    "judge_stack",
    "peak_memory",
    "quality_floor",
    "quality_baseline",
    "fidelity",
    "history",
    "eager_bound",
    "PASS",
    "FAIL",
    "INCONCLUSIVE",
    "WARN",
    "SKIP",
]
