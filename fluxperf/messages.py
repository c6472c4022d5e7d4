"""Every verdict's words: a sentence from the rule's status and details (fluxperf.rules), never from anything else.

A message says what failed, by how much, against which file, and what to do (DESIGN.md, "Units in names, numbers in
messages"). Nothing here decides: a rule's details hold every number and the case the sentence describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fluxperf.metrics import METRICS, fmt
from fluxperf.rules import FAIL, PASS


@dataclass(frozen=True)
class Context:
    """What a message needs besides the numbers: the file judged against, how to rebaseline, and what changed."""

    where: str
    rebaseline: str
    changes: tuple = ()  # software differences from the baseline, e.g. "torch 2.11.0 → 2.12.0"
    host_changes: tuple = ()  # machine differences that are not software, e.g. the host CPU model


def _pct(x: float) -> str:
    return f"{math.exp(x) - 1:+.1%}"


def _machine(d: dict) -> str:
    m = d["machine"]
    return f"machine probe vs baseline: GPU {math.exp(m['gpu']):.3f}×, host {math.exp(m['host']):.3f}×"


def _changes(ctx: Context) -> str:
    if ctx.changes:
        return "changed since the baseline: " + ", ".join(ctx.changes)
    return "software unchanged since the baseline"


def method(bound: str, host_share: float) -> str:
    """How a latency change is taken net of the machine, by what sets the pipeline's latency (stats.own_change)."""
    return {
        "gpu": f"own latency net of the GPU probe ({host_share:.0%} weight on the host probe)",
        "host": "own latency net of the host probe (host-bound)",
    }.get(bound, "own latency net of the machine probe")


def sharing(d: dict) -> str:
    """What shared the machine, and the most of a slowdown it explains."""
    sh, parts = d["sharing"], []
    if (sh["gpu_busy"] or 0) >= 0.005:
        parts.append(
            f"another process kept the GPU busy {sh['gpu_busy']:.0%} of the time between this pipeline's calls"
        )
    if sh["procs"]:
        parts.append(f"{sh['procs']} other compute process{'es' if sh['procs'] > 1 else ''} on the GPU")
    if (sh["host_wait"] or 0) >= 0.005:
        parts.append(
            f"its threads waited for a CPU for {sh['host_wait']:.0%} of its calls' time (another process on the cores)"
        )
    if sh["clocks"]:
        parts.append(f"clocks held down ({', '.join(sh['clocks'])})")
    return (
        f"the machine was shared: {'; '.join(parts) or 'lightly'}; that explains a slowdown of up to "
        f"{_pct(d['explained'])}"
    )


def _speed_facts(name: str, d: dict) -> str:
    low, high = d["ci"]
    sp, sp_low, sp_high = d["speedup"]
    eager, limit = math.exp(d["eager_change"]), math.log1p(d["tolerance"])
    facts = (
        f"{name}: slowdown {_pct(d['slowdown'])} by {method(d['bound'], d['host_share'])} (95% CI {_pct(low)} "
        f"to {_pct(high)}, n={d['n']}, tolerance {d['tolerance']:.0%}); speedup {sp:.2f}× (95% CI "
        f"{sp_low:.2f}–{sp_high:.2f}, {d['design']}) vs baseline {d['base_speedup']:.2f}×; eager {eager:.2f}× "
        f"its baseline latency ({math.exp(d['eager_net']):.2f}× net of the host probe); {_machine(d)}"
    )
    if d["eager_bound"] == "host":
        facts += (
            "; eager is host-bound here: its time measures the host CPU as much as the GPU, so it moves "
            "between sessions"
        )
    if abs(d["eager_change"]) > limit:
        facts += f"; eager moved ({eager:.2f}× its baseline latency), so the speedup over eager moved with it"
    if d.get("shared"):
        facts += f"; {sharing(d)}"
    return facts


def speed(name: str, status: str, d: dict, ctx: Context) -> str:
    """test_speedup_holds: the variant's slowdown net of the machine, its speedup, eager and the machine."""
    facts, tail, again = _speed_facts(name, d), f"; {_changes(ctx)} [{ctx.where}]", f"; if intended: {ctx.rebaseline}"
    beyond = (
        " (at the round cap the interval still reaches below the tolerance, but the best estimate is beyond it)"
        if d.get("at_the_cap")
        else ""
    )
    return {
        "too few": lambda: f"{facts}: too few samples for an interval{tail}",
        "within": lambda: f"{facts}{tail}",
        "stale": lambda: (
            f"{facts}; {name} is faster than its baseline, which is stale: refresh it with {ctx.rebaseline}{tail}"
        ),
        "straddles": lambda: f"{facts}: the interval straddles the tolerance{tail}",
        "eager slower": lambda: (
            f"{facts}: eager is slower by at least as much: the whole pipeline is slower, not "
            f"{name} alone (see test_stack_speed_holds){tail}"
        ),
        "host slower": lambda: f"{facts}: {_host_slower(name, d['past_eager'])}{tail}",
        "regressed": lambda: f"{facts}: {name} regressed{beyond}{tail}{again}",
        "within even so": lambda: (
            f"{facts}; within the tolerance even so (latency {_pct(d['raw'][0])} before any "
            f"correction for the machine, 95% CI up to {_pct(d['raw'][2])}){tail}"
        ),
        "beyond the sharing": lambda: (
            f"{facts}: {name} regressed beyond what the sharing explains (its slowdown's "
            f"95% CI starts at {_pct(d['ci'][0])}, past the tolerance plus "
            f"{_pct(d['explained'])}){tail}{again}"
        ),
        "not judged": lambda: (
            f"{facts}: not judged, as the sharing could explain the slowdown; rerun on a quiet machine{tail}"
        ),
    }[d["case"]]()


def _host_slower(name: str, past: list) -> str:
    return (
        f"eager, host-bound like {name}, slowed about as much ({name}'s slowdown beyond eager's "
        f"{_pct(past[0])}, 95% CI {_pct(past[1])} to {_pct(past[2])}): the host is slower than its probe shows "
        f"(another process sharing the CPU?), not {name} alone (see test_stack_speed_holds)"
    )


def stack(name: str, status: str, d: dict, ctx: Context) -> str:
    """test_stack_speed_holds: the pipeline's latency against its baseline, before and net of the machine."""
    raw_low, raw_high = d["raw_ci"]
    net_low, net_high = d["net_ci"]
    facts = (
        f"{name}: latency {math.exp(d['change']):.3f}× its baseline (95% CI {math.exp(raw_low):.3f}–"
        f"{math.exp(raw_high):.3f}, n={d['n']}), {math.exp(d['net']):.3f}× net of the machine "
        f"(95% CI {math.exp(net_low):.3f}–{math.exp(net_high):.3f}; tolerance {d['tolerance']:.0%}); "
        f"{_machine(d)}"
    )
    if d.get("shared"):
        facts += f"; {sharing(d)}"
    hosts = f"; {', '.join(ctx.host_changes)}" if ctx.host_changes else ""
    where, changes = f"[{ctx.where}]", _changes(ctx)
    return {
        "not judged": f"{facts}: not judged, as the sharing could explain the slowdown; {changes}{hosts} {where}",
        "suspects": f"{facts}: the stack is slower; suspects: {', '.join(ctx.changes)}{hosts} {where}; "
        f"if intended: {ctx.rebaseline}",
        "beyond the probe": f"{facts}: slower with the same software, beyond what the probe explains (a host or "
        f"clock state it doesn't cover){hosts} {where}",
        "probably": f"{facts}: slower, net of the machine too, but the interval reaches below the tolerance; "
        f"{changes}{hosts} {where}",
        "whole machine": f"{facts}: the whole machine is slower; {changes}{hosts} {where}",
        "within": f"{facts}; {changes} {where}",
    }[d["case"]]


def peak_memory(name: str, status: str, d: dict, ctx: Context) -> str:
    """test_peak_memory_holds: peak GPU memory against the baseline's."""
    text = (
        f"{name}: peak_mem_gb {d['value']:.3f} GB vs baseline {d['base']:.3f} GB (tolerance {d['tolerance']:.0%}, "
        f"limit {d['limit']:.3f} GB) [{ctx.where}]"
    )
    return f"{text}; if intended: {ctx.rebaseline}" if status == FAIL else text


def steps(name: str, status: str, d: dict) -> str:
    """test_every_timed_call_ran_every_step."""
    if not d["calls"]:
        return f"{name}: no timed call was counted"
    if status == FAIL:
        return (
            f"{name}: {d['short']} of {d['calls']} timed calls ran {d['counts']} denoising steps instead of the "
            f"scenario's {d['steps']}: its timings and images are of less work than the scenario asks; check "
            f"the variant's scheduler, step callbacks and num_inference_steps"
        )
    return f"{name}: all {d['calls']} timed calls ran {d['steps']} steps"


def not_judged_on_speed(name: str) -> str:
    return (
        f"{name}: not judged on speed: its timed calls skipped denoising steps (test_every_timed_call_ran_every_step)"
    )


def worst_image(result, metric: str, prompts) -> str:
    """Where a quality failure can be looked at: the worst image's prompt and seed, and the saved pair."""
    score = result.quality.scores[metric]
    p, seed = score.worst_item
    return (
        f"worst image: prompt {p} ({prompts[p][:60]!r}), seed {seed}, {fmt(metric, score.worst)}; "
        f"pair saved at {result.quality.worst_pair_png}"
    )


def quality_floor(result, metric: str, status: str, d: dict, prompts) -> str:
    """Each image against eager's, against the variant's floor."""
    if status == PASS:
        return f"{result.name}: every image meets the {metric} floor {d['floor']}"
    kind = "lossless" if result.lossless else "lossy"
    side = "below" if METRICS[metric].higher_is_better else "above"
    return (
        f"{result.name}: {d['failing']}/{d['images']} images {side} the {metric} floor {d['floor']} ({kind} "
        f"variant); {worst_image(result, metric, prompts)}; a floor is set with "
        f"--fluxperf-floor={result.name}.{metric}=VALUE"
    )


def quality_baseline(result, metric: str, status: str, d: dict, ctx: Context, prompts) -> str:
    """The aggregate against the baseline's."""
    tol = (
        f"tolerance {d['tolerance']:.4g} from the baseline's spread over prompts"
        if d["from_spread"]
        else f"tolerance {d['tolerance']}"
    )
    facts = (
        f"{result.name}: {'pooled' if METRICS[metric].aggregate == 'pooled' else 'mean'} {metric} "
        f"{fmt(metric, d['mean'])} vs baseline {fmt(metric, d['base'])} ({tol}, limit {fmt(metric, d['limit'])}) "
        f"[{ctx.where}]"
    )
    if status == FAIL:
        return f"{facts}; {worst_image(result, metric, prompts)}; if intended: {ctx.rebaseline}"
    return facts


def quality_skipped(result, metric: str, case: str, base) -> str:
    """Why an aggregate is not compared with the baseline's (verdicts.quality_baseline's cases)."""
    name, label = result.name, METRICS[metric].label
    reason = {
        "no quality": lambda: f"the baseline entry for {name} records no image quality",
        "no metric": lambda: f"the baseline entry for {name} has no {label} (it was unavailable when recorded)",
        "other backbone": lambda: (
            f"the baseline's {label} used the {base.backbone} backbone, this session the "
            f"{result.quality.scores[metric].backbone} one: different scales, only the floor "
            f"applies"
        ),
    }[case]()
    return f"{name}: {metric} not compared with the baseline: {reason}"


def no_peak_memory(name: str, ctx: Context) -> str:
    return f"the baseline {ctx.where} records no peak memory for {name}"


def no_fidelity(name: str) -> str:
    return f"{name}: no fidelity measured"


def fidelity_across_ranks(name: str) -> str:
    return (
        f"{name}'s transformer runs across the torchrun ranks; only whole pipeline calls reach them, so it is "
        "judged by its images"
    )


def fidelity(name: str, status: str, details: dict, method: str | None = None, hint: str | None = None) -> str:
    """A lossless variant's step-by-step fidelity (fluxperf.fidelity.judge): the first step past the bound and its
    numbers, or how much room was left. `hint`: the variant's own advice for a failure (Variant.fidelity_hint)."""
    k, n = details["k"], details["n_steps"]
    how = f"; floor: {method}" if method else ""
    if status == PASS:
        w = details["worst"]
        return (
            f"{name}: all {n} steps within {k:g}× eager's own error (teacher-forced, step by step); largest ratio "
            f"{w['ratio']:.2f}× at step {w['step']} (error {w['error_vs_ref']:.3g} vs eager's {w['floor']:.3g}), "
            f"median {details['ratio_median']:.2f}×{how}"
        )
    f = details["first_failure"]
    where = f"{name}: step {f['step']} (counted from 0, of {n})"
    if not math.isfinite(f["floor"]):
        # No bound exists there: the failure says nothing about the variant.
        return (
            f"{where}: eager itself produced NaN or infinity: its own error against its upcast reference is "
            f"{f['floor']} (eager's output or that reference is not finite), so no variant can be judged at this "
            f"step; look at eager's scenario (dtype, guidance, resolution) and model{how}"
        )
    more = details["n_failing"] - 1
    advice = hint or (
        "One that changes the function on purpose is not lossless: register it without lossless=True and the "
        "image floors judge it"
    )
    return (
        f"{where} is the first past the fidelity bound: "
        f"{_fidelity_why(f, k)}; against eager {f['error_vs_eager']:.4g}, cosine {f['cosine_vs_eager']:.6f}; "
        f"{more} more step{'' if more == 1 else 's'} past it{how}. Every step ran on eager's own inputs, so this "
        f"is one transformer call's error, not drift over the steps: the variant computes something else than "
        f"eager. {advice}"
    )


def _fidelity_why(f: dict, k: float) -> str:
    if not math.isfinite(f["error_vs_ref"]):
        return f"the variant's output is not finite (error {f['error_vs_ref']})"
    return (
        f"its error against the reference {f['error_vs_ref']:.4g} > {k:g} × eager's own {f['floor']:.4g} "
        f"(ratio {f['ratio']:.1f}×)"
    )
