"""Estimates with confidence intervals, and the speed, stack and ratio rules that turn them into verdicts.

Everything here is a pure function of numbers: the procedure that gathers them (more rounds while a verdict is
inconclusive) is fluxperf.verdicts, and the README's "How a session judges" tables state these rules.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from fluxperf.contention import Sharing

PASS, FAIL, INCONCLUSIVE, WARN = "PASS", "FAIL", "INCONCLUSIVE", "WARN"
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

    def text(self) -> str:
        if math.isnan(self.low):
            return f"{self.factor:.3f}× (no interval, n={self.n})"
        return f"{self.factor:.3f}× (95% CI {math.exp(self.low):.3f}–{math.exp(self.high):.3f}, n={self.n})"

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
    mean = float(xs[g:n - g].mean())
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
    df = (va + vb) ** 2 / ((va ** 2 / dfa if va else 0) + (vb ** 2 / dfb if vb else 0))
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
    return value, max(float(w @ xs ** 2) - value ** 2, 0.0), n - 1


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
    value: float      # geometric mean of eager/variant latency ratios
    ci_low: float
    ci_high: float
    n: int
    design: str       # "paired": interleaved rounds; "blocks": eager block then variant block


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


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str
    stale: bool = False           # much faster than the baseline: the baseline should be refreshed
    details: dict = field(default_factory=dict)


def judge_ratio(name: str, metric: str, value: float, base: float, tol: float, unit: str, where: str) -> Verdict:
    """Higher-is-worse metrics (peak memory): FAIL past base × (1 + tol)."""
    limit = base * (1 + tol)
    facts = (f"{name}: {metric} {value:.3f}{unit} vs baseline {base:.3f}{unit} "
             f"(tolerance {tol:.0%}, limit {limit:.3f}{unit}) [{where}]")
    return Verdict(FAIL if value > limit else PASS, facts)


# ----- the speed and stack rules ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One pipeline's timings, in this session or in its baseline: what the speed and stack rules read."""
    variant_s: list           # per round, seconds per image
    eager_s: list             # eager's images of the same rounds (paired) or of its block
    probe: dict               # sampled before each variant call: {"matmul_s": [...], "copy_s": [...], "launch_s": [...]}
    eager_probe: dict         # sampled before each eager call
    paired: bool = True
    bound: str = "unknown"    # "gpu" | "host" | "unknown": which resource sets this pipeline's latency
    busy: float | None = None  # share of a call the GPU was busy (the profiler's kernel time over the latency)
    sharing: Sharing = Sharing()  # what else used the machine during the variant's calls

    @classmethod
    def from_entry(cls, entry: dict) -> "Run":
        from fluxperf import contention

        return cls(entry["samples_s"], entry["eager_samples_s"], entry["probe"], entry["eager_probe"],
                   entry.get("design") != "blocks", entry.get("bound", "unknown"), entry.get("gpu_busy"),
                   contention.sharing(entry.get("contention"), entry.get("samples_s")))

    @property
    def all_probe(self) -> dict:
        return {k: list(self.probe[k]) + list(self.eager_probe[k]) for k in self.probe}


@dataclass(frozen=True)
class Context:
    """What a message needs besides the numbers: the file judged against, how to rebaseline, and what changed."""
    where: str
    rebaseline: str
    changes: tuple = ()       # software differences from the baseline, e.g. "torch 2.11.0 → 2.12.0"
    host_changes: tuple = ()  # machine differences that are not software, e.g. the host CPU model


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


def host_share(now: Run, base: Run) -> float:
    """How much of a GPU-bound pipeline's latency follows the host: the share of a call the GPU waits for it.

    Taken from the busier of the two sessions, as a disturbed stretch or an injected pause only ever lowers it.
    On an H200 at 512² this matched what was seen: pruna_cache_compile (84-91% busy) moved 2% when the host
    probe moved 12%; compile (94% busy in a clean session) moved under 1% when it moved 30% (docs/results.md)."""
    busy = [b for b in (now.busy, base.busy) if b is not None]
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


def _pct(x: float) -> str:
    return f"{math.exp(x) - 1:+.1%}"


def _machine_text(m: dict[str, Interval]) -> str:
    return f"machine probe vs baseline: GPU {m['gpu'].factor:.3f}×, host {m['host'].factor:.3f}×"


def _changes_text(ctx: Context) -> str:
    if ctx.changes:
        return "changed since the baseline: " + ", ".join(ctx.changes)
    return "software unchanged since the baseline"


def sharing_weights(bound: str, share: float) -> tuple[float, float]:
    """How much of a call the GPU's and the host's sharing can stretch: a GPU-bound pipeline's kernels for the
    share of the call they run (1 - share), its host part for the rest; a host-bound one all host; unknown: both."""
    return {"gpu": (1.0 - share, share), "host": (0.0, 1.0)}.get(bound, (1.0, 1.0))


def _sharing_text(sh: Sharing, explained: float) -> str:
    parts = []
    if (sh.gpu_busy or 0) >= 0.005:
        parts.append(f"another process kept the GPU busy {sh.gpu_busy:.0%} of the time between this pipeline's "
                     f"calls")
    if sh.procs:
        parts.append(f"{sh.procs} other compute process{'es' if sh.procs > 1 else ''} on the GPU")
    if (sh.host_wait or 0) >= 0.005:
        parts.append(f"its threads waited for a CPU for {sh.host_wait:.0%} of its calls' time "
                     f"(another process on the cores)")
    if sh.clocks:
        parts.append(f"clocks held down ({', '.join(sh.clocks)})")
    return f"the machine was shared: {'; '.join(parts) or 'lightly'}; that explains a slowdown of up to " \
           f"{_pct(explained)}"


def own_change(now: Run, base: Run, machine: dict[str, Interval]) -> tuple[Interval, str]:
    """A pipeline's own latency change net of the machine's, by what sets its latency (the baseline's `bound`):
    net of the GPU probe's change for a GPU-bound one (and of the host probe's for the share of a call it waits
    on the host), of the host probe's for a host-bound one, and of whichever slowed more when it is unknown (no
    profiler). The probes' changes are of medians: one probe sample lasts milliseconds and catches the host's
    hiccups, a median over the session doesn't."""
    share = host_share(now, base)
    what = {"gpu": f"own latency net of the GPU probe ({share:.0%} weight on the host probe)",
            "host": "own latency net of the host probe (host-bound)"}.get(base.bound,
                                                                         "own latency net of the machine probe")
    expected = expected_change(machine, base.bound, share)
    return latency_change(now.variant_s, base.variant_s).shifted(expected), what


def judge_speed(name: str, now: Run, base: Run, base_speedup: float, tol: float, ctx: Context,
                eager_bound: str = "unknown", final: bool = False) -> Verdict:
    """Did the optimization regress? One variant's verdict against its baseline.

    The statistic is the variant's own latency change net of the machine's (own_change). Eager is not the
    yardstick: at 512² it is host-bound and moves by tens of percent between sessions on one machine, more than
    the regressions being judged. PASS when the whole 95% interval of the slowdown is below the tolerance,
    INCONCLUSIVE while it straddles it (the procedure then takes more rounds; at the round cap, `final`, an
    estimate beyond the tolerance is a FAIL if the interval's half-width is within the tolerance), FAIL above
    it, unless eager, per unit of the host probe, is slower by at least as much with 95% confidence, or the
    variant and eager are both host-bound and the variant did not slow more than eager with 95% confidence: then
    the whole pipeline is slower (WARN here; test_stack_speed_holds judges the stack).
    """
    machine = machine_change(now.all_probe, base.all_probe)
    sp = speedup(now.eager_s, now.variant_s, now.paired)
    stat, what = own_change(now, base, machine)
    eager = latency_change(now.eager_s, base.eager_s)
    eager_net = eager.shifted(machine["host"])
    limit = math.log1p(tol)
    facts = (f"{name}: slowdown {_pct(stat.value)} by {what} (95% CI {_pct(stat.low)} to {_pct(stat.high)}, "
             f"n={stat.n}, tolerance {tol:.0%}); speedup {sp.value:.2f}× (95% CI {sp.ci_low:.2f}–{sp.ci_high:.2f}, "
             f"{sp.design}) vs baseline {base_speedup:.2f}×; eager {eager.factor:.2f}× its baseline latency "
             f"({eager_net.factor:.2f}× net of the host probe); {_machine_text(machine)}")
    if eager_bound == "host":
        facts += ("; eager is host-bound here: its time measures the host CPU as much as the GPU, so it moves "
                  "between sessions")
    tail = f"; {_changes_text(ctx)} [{ctx.where}]"
    details = {"slowdown": stat.value, "ci": [stat.low, stat.high], "eager_change": eager.value,
               "speedup_change": math.log(sp.value / base_speedup),
               "eager_net": eager_net.value, "machine": {k: v.value for k, v in machine.items()}}
    if abs(eager.value) > limit:
        facts += f"; eager moved ({eager.factor:.2f}× its baseline latency), so the speedup over eager moved with it"
    if math.isnan(stat.low):
        return Verdict(INCONCLUSIVE, f"{facts}: too few samples for an interval{tail}", details=details)
    if now.sharing.shared:
        return _judge_shared(name, now, base, stat, limit, facts, tail, details, ctx)
    if stat.high < limit:
        if stat.high < -limit:
            return Verdict(PASS, f"{facts}; {name} is faster than its baseline, which is stale: "
                                 f"refresh it with {ctx.rebaseline}{tail}", stale=True, details=details)
        return Verdict(PASS, f"{facts}{tail}", details=details)
    # At the round cap the best estimate decides, if the interval is narrow enough for it to mean something:
    # within the tolerance either side of it. A host-bound pipeline's rarely is; it stays INCONCLUSIVE.
    decides = final and stat.value > limit and stat.high - stat.value <= limit
    if stat.low <= limit and not decides:
        return Verdict(INCONCLUSIVE, f"{facts}: the interval straddles the tolerance{tail}", details=details)
    beyond = ("" if stat.low > limit else
              " (at the round cap the interval still reaches below the tolerance, but the best estimate is beyond it)")
    # Only when eager, net of the host probe, slowed at least as much as the variant, with confidence: on an H200
    # that net change itself moved by +4-5% between sessions whose host was 20% faster (eager has a GPU-bound
    # floor the host can't push below; docs/results.md), so a looser test excused a real 10% slowdown.
    if eager_net.low >= stat.value:
        return Verdict(WARN, f"{facts}: eager is slower by at least as much: the whole pipeline is slower, not "
                             f"{name} alone (see test_stack_speed_holds){tail}", details=details)
    # A host-bound variant follows the same host as a host-bound eager, so eager can take the blame: unless the
    # variant slowed more than eager did, with 95% confidence, the host slowed both where its probe didn't look.
    # Another process taking the CPU in turns runs between the probe's sub-millisecond samples but not through a
    # whole call: on 2 shared cores the tiny model's calls ran 2.2x slower while the probe's median didn't move.
    # A GPU-bound variant gets no such allowance: eager, net of the probe, moves several percent between sessions.
    past_eager = latency_change(now.variant_s, base.variant_s).shifted(eager)
    if base.bound == "host" and eager_bound == "host" and past_eager.low <= 0:
        return Verdict(WARN, f"{facts}: eager, host-bound like {name}, slowed about as much ({name}'s slowdown "
                             f"beyond eager's {_pct(past_eager.value)}, 95% CI {_pct(past_eager.low)} to "
                             f"{_pct(past_eager.high)}): the host is slower than its probe shows (another process "
                             f"sharing the CPU?), not {name} alone (see test_stack_speed_holds){tail}", details=details)
    return Verdict(FAIL, f"{facts}: {name} regressed{beyond}{tail}; if intended: {ctx.rebaseline}", details=details)


def _judge_shared(name: str, now: Run, base: Run, stat: Interval, limit: float, facts: str, tail: str,
                  details: dict, ctx: Context) -> Verdict:
    """The speed rule on a shared machine (README, "When the machine is shared"). The probe's samples are short
    and another process's work is intermittent, so the probe accounts for part of the sharing at best: a PASS
    needs the latency within the tolerance before any correction for the machine, and a FAIL a slowdown beyond
    the tolerance plus the most the sharing can explain, both with 95% confidence. Anything between is not
    judged: INCONCLUSIVE, and the procedure takes no more rounds."""
    sh = now.sharing
    explained = sh.explained(*sharing_weights(base.bound, host_share(now, base)))
    raw = latency_change(now.variant_s, base.variant_s)
    facts += f"; {_sharing_text(sh, explained)}"
    details = {**details, "shared": True, "explained": explained, "raw": [raw.value, raw.low, raw.high],
               "sharing": {"gpu_busy": sh.gpu_busy, "host_wait": sh.host_wait, "procs": sh.procs,
                           "clocks": list(sh.clocks)}}
    if raw.high < limit:
        return Verdict(PASS, f"{facts}; within the tolerance even so (latency {_pct(raw.value)} before any "
                             f"correction for the machine, 95% CI up to {_pct(raw.high)}){tail}", details=details)
    if stat.low > limit + explained:
        return Verdict(FAIL, f"{facts}: {name} regressed beyond what the sharing explains (its slowdown's 95% CI "
                             f"starts at {_pct(stat.low)}, past the tolerance plus {_pct(explained)}){tail}; "
                             f"if intended: {ctx.rebaseline}", details=details)
    return Verdict(INCONCLUSIVE, f"{facts}: not judged, as the sharing could explain the slowdown; rerun on a "
                                 f"quiet machine{tail}", details=details)


def judge_stack(name: str, now: Run, base: Run, tol: float, ctx: Context) -> Verdict:
    """Did the whole stack get slower? A pipeline's absolute latency against its baseline, net of the machine.

    Slower beyond the tolerance after the machine probe's share is taken out: FAIL when the software differs
    from the baseline's (the message names the differences), WARN when it doesn't (a host or clock state the
    probe doesn't cover). Slower, and probably so net of the machine too (that interval straddling the
    tolerance): WARN. Slower only before that correction: WARN, the whole machine is slower.
    """
    machine = machine_change(now.all_probe, base.all_probe)
    raw = latency_change(now.variant_s, base.variant_s)
    net, _ = own_change(now, base, machine)
    limit = math.log1p(tol)
    facts = (f"{name}: latency {raw.factor:.3f}× its baseline (95% CI {math.exp(raw.low):.3f}–"
             f"{math.exp(raw.high):.3f}, n={raw.n}), {net.factor:.3f}× net of the machine "
             f"(95% CI {math.exp(net.low):.3f}–{math.exp(net.high):.3f}; tolerance {tol:.0%}); {_machine_text(machine)}")
    hosts = f"; {', '.join(ctx.host_changes)}" if ctx.host_changes else ""
    details = {"change": raw.value, "net": net.value, "machine": {k: v.value for k, v in machine.items()}}
    if now.sharing.shared and raw.value > limit:
        # As for the speed rule: only a slowdown beyond what the sharing can explain is the stack's.
        explained = now.sharing.explained(*sharing_weights(base.bound, host_share(now, base)))
        facts += f"; {_sharing_text(now.sharing, explained)}"
        details = {**details, "shared": True, "explained": explained}
        if not (not math.isnan(net.low) and net.low > limit + explained and ctx.changes):
            return Verdict(WARN, f"{facts}: not judged, as the sharing could explain the slowdown; "
                                 f"{_changes_text(ctx)}{hosts} [{ctx.where}]", details=details)
    if not math.isnan(net.low) and net.low > limit:
        if ctx.changes:
            return Verdict(FAIL, f"{facts}: the stack is slower; suspects: {', '.join(ctx.changes)}{hosts} "
                                 f"[{ctx.where}]; if intended: {ctx.rebaseline}", details=details)
        return Verdict(WARN, f"{facts}: slower with the same software, beyond what the probe explains (a host or "
                             f"clock state it doesn't cover){hosts} [{ctx.where}]", details=details)
    if raw.value > limit and net.value > limit:
        return Verdict(WARN, f"{facts}: slower, net of the machine too, but the interval reaches below the "
                             f"tolerance; {_changes_text(ctx)}{hosts} [{ctx.where}]", details=details)
    if raw.value > limit:
        return Verdict(WARN, f"{facts}: the whole machine is slower; {_changes_text(ctx)}{hosts} [{ctx.where}]",
                       details=details)
    return Verdict(PASS, f"{facts}; {_changes_text(ctx)} [{ctx.where}]", details=details)
