"""Creeping regressions: a series' latency net of the machine probe, its steps, and the history verdict.

The step detector is a penalized L1 segmentation (the approach asv publishes for its benchmark histories, after
Friedrich et al. 2008): the piecewise-constant fit that minimizes the sum of absolute deviations from each
segment's median plus a penalty per segment, solved exactly by dynamic programming. The penalty is a multiple of
the series' own noise (estimated from its session-to-session differences, which a step barely moves) times the log
of its length; docs/history.md says why this and not a library, and tests/unit/test_history.py calibrates it.
"""

from __future__ import annotations

import bisect
import math
import shlex
import statistics
from collections import Counter
from dataclasses import dataclass

import numpy as np

from fluxperf import messages, rules, stats
from fluxperf.history.record import Point
from fluxperf.probe import PROBES
from fluxperf.result import Timings

WINDOW = 60  # sessions the verdict looks back over, besides the oldest baseline they were judged against
MIN_SIZE = 3  # sessions a new level needs before a step to it is a FAIL rather than INCONCLUSIVE
NOISE_SESSIONS = 120  # sessions the noise is estimated from
MAX_RANGE = 400  # sessions analysed at most: the exact segmentation is cubic in this
# Penalty per segment, in units of the series' noise sd times log(sessions). Calibrated by simulation
# (python -m tests.unit.test_history sim): noise alone over 60 sessions fails under 1% of series.
BETA = 2.5
# A series steadier than this (0.2% between sessions) would make every tiny wobble a step; none of those matter.
NOISE_FLOOR = 0.002


# ----- the net latency of each session -----------------------------------------------------------------------------


def timings(point: Point) -> Timings:
    return point.result.timings


def usable(t: Timings) -> bool:
    """Timings the net latency can be computed from: timed samples and the probe beside them."""
    if len(t.samples_s) < 2:
        return False
    return all(isinstance(side, dict) and all(side.get(k) for k in PROBES) for side in (t.probe, t.eager_probe))


def machine_level(t: Timings) -> dict[str, float]:
    """The machine's absolute speed in one session, on the log scale, per resource: gpu is the mean of the matmul
    and copy probes' log medians, host the small-op loop's. The difference of two sessions' levels is
    stats.machine_change's value for them."""
    probe = t.all_probe
    log_median = {k: math.log(statistics.median(probe[k])) for k in PROBES}
    return {"gpu": (log_median["matmul_s"] + log_median["copy_s"]) / 2, "host": log_median["launch_s"]}


def _exact(value: float) -> stats.Interval:
    return stats.Interval(value, value, value, 1)


def series_bound(series: list[Timings]) -> tuple[str, float]:
    """What sets a series' pace and the share of a call its GPU waits on the host, fixed over the series so that a
    session's net latency doesn't jump when one session is classed differently: the bound most sessions had (the
    latest's on a tie), and stats.host_share of the busiest session (a disturbance only lowers busy)."""
    counts = Counter(t.bound or "unknown" for t in series)
    top = max(counts.values())
    bound = next(t.bound or "unknown" for t in reversed(series) if counts[t.bound or "unknown"] == top)
    busiest = max((t for t in series if t.gpu_busy is not None), key=lambda t: t.gpu_busy, default=Timings())
    return bound, stats.host_share(busiest, busiest)


def _session_values(t: Timings, cache: dict | None, key) -> tuple[float, dict[str, float]]:
    if cache is not None and key in cache:
        return cache[key]
    low, _, _ = stats.low_quartile(np.log(np.asarray(t.samples_s, dtype=float)))
    values = (low, machine_level(t))
    if cache is not None:
        cache[key] = values
    return values


def net_latencies(series: list[Timings], cache: dict | None = None, keys=None) -> np.ndarray:
    """Per session's timings: the log of its lower-quartile latency (stats.low_quartile) minus the change the
    machine probe predicts for it (stats.expected_change) against the first usable session; NaN where it can't be
    computed.

    The differences between two values are what the speed rule judges for the pair, with the series' bound and
    host share in place of the pair's. `cache` (a dict) and `keys` (one per session, e.g. session ids) let a caller
    that judges a series at every session reuse each session's lower quartile and probe medians."""
    out = np.full(len(series), math.nan)
    good = [i for i, t in enumerate(series) if usable(t)]
    if not good:
        return out
    bound, share = series_bound([series[i] for i in good])
    if keys is None:
        cache, keys = None, range(len(series))
    values = {i: _session_values(series[i], cache, keys[i]) for i in good}
    reference = values[good[0]][1]
    for i in good:
        low, level = values[i]
        machine = {k: _exact(level[k] - reference[k]) for k in level}
        out[i] = low - stats.expected_change(machine, bound, share).value
    return out


def lower_quartile_s(t: Timings) -> float:
    return math.exp(stats.low_quartile(np.log(np.asarray(t.samples_s, dtype=float)))[0])


# ----- steps ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Values [start, stop) of a series sit at one level: their median."""

    start: int
    stop: int
    level: float

    @property
    def size(self) -> int:
        return self.stop - self.start


def _costs(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cost[i, j]: the sum of absolute deviations of y[i:j] from its median; median[i, j]: that median."""
    n = len(y)
    cost = np.full((n + 1, n + 1), np.inf)
    median = np.full((n + 1, n + 1), np.nan)
    for i in range(n):
        tail = y[i:]
        m = len(tail)
        lower = np.tri(m, m, dtype=bool)  # row L-1 holds the first L values of the tail
        rows = np.sort(np.where(lower, tail[None, :], np.inf), axis=1)
        length = np.arange(1, m + 1)
        mid = (rows[length - 1, (length - 1) // 2] + rows[length - 1, length // 2]) / 2
        cost[i, i + 1 :] = np.where(lower, np.abs(rows - mid[:, None]), 0.0).sum(axis=1)
        median[i, i + 1 :] = mid
    return cost, median


def segments(y: np.ndarray, penalty: float, min_size: int = 1) -> list[Segment]:
    """The exact minimizer of (sum over segments of absolute deviations from their medians) + penalty × segments,
    every segment but the last at least `min_size` long: a level is never one disturbed session, while the latest
    sessions may start a new one."""
    n = len(y)
    if n == 0:
        return []
    cost, median = _costs(np.asarray(y, dtype=float))
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):
        last = j if j == n else j - min_size + 1  # a segment ending before n is at least min_size long
        if last <= 0:
            continue
        totals = best[:last] + cost[:last, j]
        start[j] = int(np.argmin(totals))
        best[j] = totals[start[j]] + penalty
    bounds, j = [], n
    while j > 0:
        bounds.append((start[j], j))
        j = start[j]
    return [Segment(i, j, float(median[i, j])) for i, j in reversed(bounds)]


def noise_sd(y: np.ndarray) -> float:
    """The series' session-to-session noise as a normal sd: the median absolute difference of neighbours (a step
    moves one difference, a disturbed session two) scaled to an sd."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return NOISE_FLOOR
    return max(float(np.median(np.abs(np.diff(y)))) * 1.4826 / math.sqrt(2), NOISE_FLOOR)


def detect(
    y: np.ndarray, beta: float | None = None, sd: float | None = None, min_size: int = MIN_SIZE
) -> list[Segment]:
    """The series' levels and the steps between them; `sd` is its noise if known from a longer stretch."""
    n = len(y)
    beta = BETA if beta is None else beta
    return segments(y, beta * (sd if sd is not None else noise_sd(y)) * math.log(max(n, 2)), min_size)


# ----- the verdict ---------------------------------------------------------------------------------------------------


def _describe(p: Point) -> dict:
    return {"session_id": p.session_id, "utc": p.recorded_utc, "commit": p.commit, "kind": p.kind}


ENV_FIELDS = (("gpu", "GPU"), ("driver", "driver"), ("cuda", "CUDA"), ("python", "Python"), ("host_cpu", "host CPU"))


def env_changes(before: dict, now: dict) -> list[str]:
    """Everything that differs between two sessions' environments, as "name a → b": every library version the
    sessions recorded (not only the suspects the stack rule names), the driver, CUDA, Python, host and commit."""
    out = []
    va, vb = before.get("versions") or {}, now.get("versions") or {}
    for name in sorted(set(va) | set(vb)):
        if va.get(name) != vb.get(name):
            out.append(f"{name} {va.get(name) or 'absent'} → {vb.get(name) or 'absent'}")
    for key, label in ENV_FIELDS:
        if before.get(key) != now.get(key):
            out.append(f"{label} {before.get(key) or 'unknown'} → {now.get(key) or 'unknown'}")
    if before.get("commit") != now.get("commit"):
        short = [(env.get("commit") or "unknown")[:10] for env in (before, now)]
        out.append(f"fluxperf commit {short[0]} → {short[1]}")
    return out


def _software(changes: list[str]) -> list[str]:
    # The commit changes nearly every night: what points at a cause is a library, driver or host change.
    return [c for c in changes if not c.startswith("fluxperf commit")]


NEARBY = 3  # sessions either side of a step searched for a software change when only the commit changed there


def _step(points: list[Point], at: int, size: float) -> dict:
    """The first session after a step, what changed in the environment there, and, when nothing but the commit
    did, the software changes within NEARBY sessions, nearest first: a step's position is uncertain by a few
    sessions when it is small beside the noise."""
    step = {**_describe(points[at]), "size": size, "changes": [], "nearby": []}
    if at > 0:
        step["changes"] = env_changes(points[at - 1].environment, points[at].environment)
    if not _software(step["changes"]):
        for offset in sorted(range(-NEARBY, NEARBY + 1), key=lambda o: (abs(o), o)):
            k = at + offset
            if offset and 0 < k < len(points):
                found = _software(env_changes(points[k - 1].environment, points[k].environment))
                if found:
                    step["nearby"].append({**_describe(points[k]), "offset": offset, "changes": found})
    return step


def _range_start(points: list[Point], window: int) -> tuple[int, int | None]:
    """Where the verdict looks back to: the first of the last `window` sessions, and the session that recorded the
    oldest baseline any of them was judged against (the last session at or before that baseline's date), if the
    history holds it."""
    first = max(0, len(points) - window)
    dates = [p.recorded_utc for p in points]
    recorded = [p.baseline_recorded_utc for p in points[first:] if p.baseline_recorded_utc is not None]
    at = bisect.bisect_right(dates, min(recorded)) - 1 if recorded else -1
    return first, (at if at >= 0 else None)


def judge(
    points: list[Point],
    tolerance: float,
    window: int = WINDOW,
    min_size: int = MIN_SIZE,
    accepted_utc: str | None = None,
    beta: float | None = None,
    cache: dict | None = None,
) -> tuple[str, dict]:
    """Does the latest session sit on a level that a step (or several) raised beyond the tolerance?

    `points` is one series (one GPU, scenario and variant), oldest first, ending with the session judged (the
    plugin passes the stored series plus this session's point). The latency net of the machine probe is segmented
    into levels; the latest session's level is compared with the level of the first of the last `window` sessions
    and with the level where the oldest baseline they were judged against was recorded. Sessions up to an
    acceptance (`accepted_utc`) are left out; `cache`: see net_latencies.

    Returns (status, details): rules.PASS when the rise is within the tolerance; rules.FAIL when its whole 95%
    interval is beyond it and the new level is at least `min_size` sessions long; rules.INCONCLUSIVE otherwise (the
    interval straddles the tolerance, the new level is younger, or the history is too short: details["reason"]).
    The details are JSON-safe; message() renders them. docs/history.md states the rule as a table."""
    details = {
        "tolerance": tolerance,
        "window": window,
        "min_size": min_size,
        "accepted_utc": accepted_utc,
        "sessions": 0,
        "rise": None,
        "steps": [],
        "reason": None,
    }
    if accepted_utc is not None:
        points = [p for p in points if p.recorded_utc > accepted_utc]
    if not points:
        return rules.INCONCLUSIVE, {**details, "reason": "empty"}
    details["latest"] = _describe(points[-1])
    details["series"] = {
        "gpu_slug": points[-1].environment.get("gpu_slug"),
        "scenario": (points[-1].session.get("scenario") or {}).get("slug"),
    }
    if not usable(timings(points[-1])):
        return rules.INCONCLUSIVE, {**details, "reason": "latest unusable"}
    first, oldest = _range_start(points, window)
    start = max(min(first, oldest if oldest is not None else first), len(points) - MAX_RANGE)
    index = [i for i in range(start, len(points)) if usable(timings(points[i]))]
    span = [points[i] for i in index]
    details["sessions"] = len(span)
    if len(span) < 2 * min_size:
        return rules.INCONCLUSIVE, {**details, "reason": "too short"}
    segs, sd = _levels(points, span, cache, beta, min_size)
    rise, reference, k, first_seg = _reference(segs, index, first, oldest)
    before, latest = segs[first_seg], segs[-1]
    # The interval of a difference of two medians of independent sessions (a median's error is sqrt(pi/2) times a
    # mean's), with the series' noise; zero width when the latest session sits on the reference level itself.
    half = 0.0
    if first_seg != len(segs) - 1:
        se = math.sqrt(math.pi / 2) * sd * math.sqrt(1 / before.size + 1 / latest.size)
        half = stats.t_quantile(max(before.size + latest.size - 2, 1)) * se
    details.update(
        rise=rise,
        ci=[rise - half, rise + half],
        reference=reference,
        reference_session=_describe(span[k]),
        reference_level_sessions=before.size,
        latest_level_sessions=latest.size,
        noise_sd=sd,
        range_start=_describe(span[0]),
        steps=[
            _step(span, segs[s].start, segs[s].level - segs[s - 1].level)
            for s in range(first_seg + 1, len(segs))
            if segs[s].level > segs[s - 1].level
        ],
    )
    return _decide(details, span, latest.size, half, math.log1p(tolerance))


def _levels(points: list[Point], span: list[Point], cache, beta, min_size: int) -> tuple[list[Segment], float]:
    """The levels the span's net latencies are cut into, and the series' noise they were cut with."""
    y = net_latencies([timings(p) for p in span], cache, [p.session_id for p in span])
    # The noise is estimated over up to NOISE_SESSIONS sessions, also before the range: a month of sessions gives a
    # rough estimate, and in simulation an estimate of half the true noise turned noise into FAILs.
    wide = [p for p in points[-NOISE_SESSIONS:] if usable(timings(p))]
    sd = (
        noise_sd(net_latencies([timings(p) for p in wide], cache, [p.session_id for p in wide]))
        if len(wide) > len(span)
        else noise_sd(y)
    )
    return detect(y, beta, sd, min_size), sd


def _reference(segs: list[Segment], index: list[int], first: int, oldest: int | None) -> tuple[float, str, int, int]:
    """The larger rise of the latest level over the two references' levels: (rise, which reference, the reference
    session's position in the span, its level's position). A reference session without timings of its own is
    represented by the next one that has them."""

    def segment_of(k: int) -> int:
        return next(s for s, seg in enumerate(segs) if seg.start <= k < seg.stop)

    candidates = []
    for name, ref in (("window", first), ("baseline", oldest)):
        k = next((k for k, i in enumerate(index) if i >= ref), None) if ref is not None else None
        if k is not None:
            candidates.append((segs[-1].level - segs[segment_of(k)].level, name == "baseline", name, k))
    rise, _, reference, k = max(candidates)
    return rise, reference, k, segment_of(k)


def _decide(details: dict, span: list[Point], latest_size: int, half: float, limit: float) -> tuple[str, dict]:
    """The verdict on the rise in `details`, its interval's half width `half` and the log tolerance `limit`."""
    rise = details["rise"]
    if rise <= limit:
        return rules.PASS, details
    if latest_size < details["min_size"]:
        return rules.INCONCLUSIVE, {**details, "reason": "young level"}
    if rise - half <= limit:
        return rules.INCONCLUSIVE, {**details, "reason": "straddles"}
    # As the speed rule does (README, "When the machine is shared"): a session whose calls shared the machine is not
    # failed for what the sharing can explain.
    sh = timings(span[-1]).sharing
    if sh.shared:
        bound, share = series_bound([timings(p) for p in span])
        explained = sh.explained(*stats.sharing_weights(bound, share))
        details.update(explained=explained, sharing=sh.as_dict())
        if rise - half - explained <= limit:
            return rules.INCONCLUSIVE, {**details, "reason": "shared"}
    return rules.FAIL, details


# ----- words ---------------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{math.expm1(x):+.1%}"


def _when(s: dict) -> str:
    commit = f", commit {s['commit'][:10]}" if s.get("commit") else ""
    return f"{s['utc']}{commit}"


def _step_text(step: dict) -> str:
    text = f"{_pct(step['size'])} from the session of {_when(step)}"
    changed = "; ".join(step["changes"]) if step["changes"] else "nothing in the environment changed there"
    for near in step.get("nearby") or []:
        n = abs(near["offset"])
        changed += (
            f"; {n} session{'s' if n > 1 else ''} {'earlier' if near['offset'] < 0 else 'later'}, "
            f"{_when(near)}: {'; '.join(near['changes'])}"
        )
    return f"{text} ({changed})"


def message(details: dict, variant: str = "", where: str = "") -> str:
    """The sentence for judge()'s details: what rose, by how much against what, and each step with the first
    session after it, its commit and what changed in the environment there."""
    name = f"{variant}: " if variant else ""
    tail = f" [history {where}]" if where else ""
    tol = details["tolerance"]
    reason = details.get("reason")
    if reason == "empty":
        since = f" since the acceptance of {details['accepted_utc']}" if details.get("accepted_utc") else ""
        return f"{name}no sessions in the history{since}{tail}"
    if reason == "latest unusable":
        return f"{name}this session has no timed samples with the machine probe to judge{tail}"
    if reason == "too short":
        return (
            f"{name}{details['sessions']} session(s) with timings in the history's window; the history verdict "
            f"needs {2 * details['min_size']}{tail}"
        )
    ref = details["reference_session"]
    against = (
        "the oldest baseline the last sessions were judged against, recorded in the session of"
        if details["reference"] == "baseline"
        else f"the first of the last {details['window']} sessions,"
    )
    facts = (
        f"{name}latency net of the machine probe {_pct(details['rise'])} against the level of {against} "
        f"{_when(ref)} (tolerance {tol:.0%}; {details['sessions']} sessions since "
        f"{details['range_start']['utc']}, session-to-session noise {details['noise_sd']:.1%})"
    )
    steps = details["steps"]
    step_text = "; steps: " + "; ".join(_step_text(s) for s in steps) if steps else ""
    if details["rise"] <= math.log1p(tol):
        return f"{facts}{step_text}{tail}"
    if reason == "straddles":
        low, high = details["ci"]
        return (
            f"{facts}: above the tolerance, but its 95% interval ({_pct(low)} to {_pct(high)}) reaches below it: "
            f"not yet a regression; more sessions will tell{step_text}{tail}"
        )
    if reason == "shared":
        return f"{facts}; not judged on this session: {messages.sharing(details)}{step_text}{tail}"
    if reason == "young level":
        return (
            f"{facts}: the latest {details['latest_level_sessions']} session(s) sit on a higher level, not yet "
            f"{details['min_size']} sessions long{step_text}{tail}"
        )
    series = details.get("series") or {}
    accept = (
        f"python -m fluxperf history accept --gpu={series.get('gpu_slug')} --scenario={series.get('scenario')} "
        f"--variant={variant or 'VARIANT'} --note='why'{f' --history={shlex.quote(where)}' if where else ''}"
    )
    shared = (
        f"; beyond what this session's sharing explains ({messages.sharing(details)})" if "sharing" in details else ""
    )
    return (
        f"{facts}: the latest {details['latest_level_sessions']} sessions sit on a level that crept up beyond "
        f"the tolerance, whether or not each rebaseline in between passed{shared}{step_text}{tail}; if deliberate: "
        f"{accept}"
    )
