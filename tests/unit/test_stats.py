"""The speed and stack rules, simulated: seeded sessions run through fluxperf's own verdict procedure.

A simulated session lays its rounds out by the bench's own schedule (fluxperf.protocol.paired: eager and the variant
alternating) and records each call, with the probe sample before it, by result.Timings.add, as the bench does. It
hands its timings to fluxperf.verdicts, whose loop asks it for more rounds while the verdict is inconclusive.
Baselines are the Result's own JSON through baselines.updated. Nothing of the procedure is re-implemented here: only
the machine is simulated.

The noise model, fitted to the sessions in docs/results.md (H200, synthetic model, 512², 28 steps):
- between sessions the host's speed moves eager by a log-sd of 0.24 (eager medians 1.91, 2.16, 3.34, 3.41,
  2.31, 2.23, 1.88, 2.42, 1.98 and 2.06 s per image in ten sessions on H200s), while the GPU moves compile by
  0.8% (1.218 to 1.242 s); eager follows the host probe with an elasticity of 0.85 and a residual log-sd of
  0.03 (eager over the small-op loop's time: 24.6k, 25.9k and 24.6k in three sessions);
- within a session the host wobbles call to call (log-sd 0.10) and both eager and the probe sample taken just
  before it feel it (eager's per-call log-sd was 0.055 to 0.165 in those sessions, its correlation with the
  adjacent probe 0.7 to 0.9); compile's per-call log-sd is 1%; 3% of calls are 10-30% slower outliers;
- the GPU probe's matmul varies by a log-sd of 2.5% per sample and its copy by 1%, the small-op loop by 5%
  beyond the host's wobble;
- a GPU-bound variant follows the host a little (PIPELINES says how much, and why);
- a session is sometimes disturbed for a stretch of calls: in the shipped H200 baseline, 9 of 20 compile rounds
  ran 6-37% slow while the matmul probe rose 2-10% and the small-op loop 1.3-2.3×. Here 30% of sessions have one
  such stretch of 6-16 calls, starting anywhere in the first 40, in which every call is 5-35% slower (eager's
  10-50%), the GPU probe 2-10% and the host probe 1.3-2.3×.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from fluxperf import baselines, contention, messages, protocol, stats, verdicts
from fluxperf.protocol import BASELINE_ROUNDS
from fluxperf.result import Call, Result, Timings
from fluxperf.rules import FAIL, INCONCLUSIVE, PASS, WARN
from tests.neighbour import long_slowdown, overlap, slowdown

TRIALS = 1000
ROUNDS, MAX_ROUNDS = 5, 40  # the plugin's defaults (--fluxperf-rounds, --fluxperf-max-rounds)
EAGER_S = 2.2
PROBE_S = {"matmul_s": 180e-6, "copy_s": 131e-6, "launch_s": 80e-6}
SIGMA = {
    "host_session": 0.24,
    "gpu_session": 0.008,
    "eager_residual": 0.03,
    "host_call": 0.10,
    "eager_call": 0.03,
    "gpu_call": 0.01,
    "matmul": 0.025,
    "copy": 0.01,
    "launch": 0.05,
}
DISTURBED_SESSIONS, DISTURBED_CALLS, DISTURBED_START = 0.3, (6, 16), 40


@dataclass(frozen=True)
class Pipeline:
    """A variant's median latency and the share of it the GPU is busy. A GPU-bound variant's latency is its
    kernels' time, which follows the GPU, plus the time its GPU waits for the host, which follows the host:
    seconds × (busy × gpu + (1 - busy) × host). pruna_cache_compile (84-91% busy) moved 2% when the host probe
    moved 12%; compile (94%) stayed within 0.8% between sessions whose host moved eager by a log-sd of 0.24.
    A host-bound variant (a cache without compile) follows the host one for one, call-to-call wobble included."""

    seconds: float
    busy: float


PIPELINES = {"gpu": Pipeline(1.23, 0.94), "cache": Pipeline(0.70, 0.84), "host": Pipeline(1.0, 0.67)}


# Eager has a GPU-bound floor (1.53 s of kernels per 2.3 s image): it follows the host less than one for one.
# Two H200 sessions whose host probe ran 0.76× and 0.78× the baseline's gave eager 0.81× and 0.79×.
EAGER_HOST_ELASTICITY = 0.85
TORCH_UPDATE = ("torch 2.11.0 → 2.12.0",)
CTX = messages.Context("baselines/nvidia-h200/synthetic.json", "pytest -m gpu --fluxperf-update-baselines")


@dataclass(frozen=True)
class World:
    """What differs from the baseline session: factors on eager, on the variant, and on the machine itself.

    `host` and `gpu` slow the machine (the probe sees them and so does every pipeline bound by that resource);
    `eager` and `variant` slow one pipeline alone, where no probe can see it; `neighbour` is another process's
    share of the GPU, in bursts of a few ms (tests/neighbour.py)."""

    eager: float = 1.0
    variant: float = 1.0
    host: float = 1.0
    gpu: float = 1.0
    neighbour: float = 0.0


# The quiet window NVML's samples cover before each call (2.5 sample periods of 1/6 s, less the first, which
# straddles the window's start), the probe's GPU window, and eager's GPU-busy share at 512² (1.53 s of 2.3 s).
QUIET_S, PROBE_WINDOW_S, EAGER_BUSY = 0.25, 0.035, 0.66


class Session:
    """One simulated pytest session of one variant: a machine state drawn once, then calls on demand."""

    def __init__(self, rng, world: World, kind: str = "gpu"):
        self.rng, self.world, self.kind, self.pipeline = rng, world, kind, PIPELINES[kind]
        self.host = math.exp(rng.normal(0, SIGMA["host_session"])) * world.host
        self.gpu = math.exp(rng.normal(0, SIGMA["gpu_session"])) * world.gpu
        self.residual = math.exp(rng.normal(0, SIGMA["eager_residual"]))
        # How much of the neighbour's bursts this process's kernels lose: half under equal time slices, all of
        # it when the neighbour holds the GPU for a whole burst.
        # (Drawn only beside a neighbour, so that the other rows' sessions draw the same numbers as before.)
        self.kappa = rng.uniform(0.5, 1.0) if world.neighbour else 0.0
        # The profiler's kernel time: a disturbed stretch, like a pause, lowers the busy share it gives.
        self.kernel_s = self.pipeline.busy * self._median_variant()
        self.calls = 0
        self.disturbed = range(0)
        if rng.random() < DISTURBED_SESSIONS:
            start = int(rng.integers(0, DISTURBED_START))
            self.disturbed = range(start, start + int(rng.integers(*DISTURBED_CALLS, endpoint=True)))

    def _median_variant(self) -> float:
        p = self.pipeline
        if self.kind == "host":
            return p.seconds * self.host * self.residual * self.world.variant
        return p.seconds * (p.busy * self.gpu + (1 - p.busy) * self.host) * self.world.variant

    def _noise(self, sigma: float) -> float:
        x = math.exp(self.rng.normal(0, sigma))
        return x * (1 + self.rng.uniform(0.10, 0.30)) if self.rng.random() < 0.03 else x

    def _call(self, eager: bool) -> Call:
        wobble = math.exp(self.rng.normal(0, SIGMA["host_call"]))
        # A disturbed call: the pipelines slow more than the probes show.
        hit = self.calls in self.disturbed
        self.calls += 1
        slow_gpu = self.rng.uniform(1.02, 1.10) if hit else 1.0
        slow_host = self.rng.uniform(1.3, 2.3) if hit else 1.0
        slow_call = self.rng.uniform(*((1.10, 1.50) if eager else (1.05, 1.35))) if hit else 1.0
        duty, rng = self.world.neighbour, self.rng
        # The quiet window reads the neighbour's share in NVML's whole percent; the probe's window and the call
        # each lose what their own stretch of its timeline costs them.
        reading = contention.Reading(gpu_other_busy=round(overlap(rng, duty, QUIET_S), 2))
        slow_gpu *= slowdown(rng, duty, self.kappa, PROBE_WINDOW_S)
        probe = {
            "matmul_s": PROBE_S["matmul_s"] * self.gpu * slow_gpu * math.exp(self.rng.normal(0, SIGMA["matmul"])),
            "copy_s": PROBE_S["copy_s"] * self.gpu * slow_gpu * math.exp(self.rng.normal(0, SIGMA["copy"])),
            "launch_s": PROBE_S["launch_s"]
            * self.host
            * wobble
            * slow_host
            * math.exp(self.rng.normal(0, SIGMA["launch"])),
        }
        busy = EAGER_BUSY if eager else self.pipeline.busy
        seconds = EAGER_S if eager else self.pipeline.seconds
        # The neighbour slows the share of the call the GPU runs this process's kernels.
        slow_call *= busy * long_slowdown(rng, duty, self.kappa, busy * seconds) + 1 - busy
        if eager:
            wall = (
                EAGER_S
                * self.host**EAGER_HOST_ELASTICITY
                * self.residual
                * self.world.eager
                * wobble
                * slow_call
                * self._noise(SIGMA["eager_call"])
            )
        elif self.kind == "host":
            wall = self._median_variant() * wobble * slow_call * self._noise(SIGMA["eager_call"])
        else:
            wall = (
                self._median_variant() * wobble ** (1 - self.pipeline.busy) * slow_call * self._noise(SIGMA["gpu_call"])
            )
        return Call(eager, wall, probe, reading)

    def more_rounds(self, k: int, start: int) -> Timings:
        """k paired rounds from round `start`, laid out by the bench's own schedule (eager first on even rounds)."""
        timings = Timings("cuda", kernel_s=self.kernel_s)
        for _, calls in protocol.paired(start, k, n_items=1):
            for eager in calls:
                timings.add(self._call(eager))
        return timings


def record_baseline(rng, kind: str = "gpu") -> baselines.Entry:
    """A baseline entry as --fluxperf-update-baselines writes it: one session of BASELINE_ROUNDS rounds."""
    s = Session(rng, World(), kind)
    result = Result("fast", status="measured", timings=s.more_rounds(BASELINE_ROUNDS, 0))
    written = baselines.updated(None, {}, {}, "2026-12-01T00:00:00Z", {"fast": result.to_json()})
    return baselines.Entry.from_json(written["variants"]["fast"])


def judge(rng, world: World, kind: str = "gpu", changes=()) -> tuple[verdicts.Verdict, verdicts.Verdict]:
    """A baseline session and a check session: the speed verdict (with its extra rounds) and the stack verdict."""
    entry = record_baseline(rng, kind)
    session = Session(rng, world, kind)
    ctx = replace(CTX, changes=tuple(changes))
    speed, timings = verdicts.speed(
        "fast", session.more_rounds(ROUNDS, 0), entry, ctx, ROUNDS, MAX_ROUNDS, "host", session.more_rounds
    )
    return speed, verdicts.stack("fast", timings, entry, ctx)


def rates(seed: int, world: World, kind: str = "gpu", changes=(), trials: int = TRIALS) -> dict:
    rng = np.random.default_rng(seed)
    out = {"speed": {}, "stack": {}, "messages": []}
    for _ in range(trials):
        speed, stack = judge(rng, world, kind, changes)
        for question, v in (("speed", speed), ("stack", stack)):
            out[question][v.status] = out[question].get(v.status, 0) + 1 / trials
        out["messages"].append((speed, stack))
    return out


def share(messages, which: int, status: str, text: str = "") -> float:
    return sum(m[which].status == status and text in m[which].message for m in messages) / len(messages)


# ----- the table the README states, row by row (a GPU-bound variant such as compile) -----------------------------


def test_nothing_changed_fails_at_most_one_percent_of_sessions():
    r = rates(1, World())
    assert r["speed"].get(FAIL, 0) <= 0.01, r["speed"]
    assert r["stack"].get(FAIL, 0) == 0, r["stack"]  # same software: the stack verdict can only warn


def test_the_variant_alone_ten_percent_slower_fails_at_least_95_percent():
    r = rates(2, World(variant=1.10))
    assert r["speed"].get(FAIL, 0) >= 0.95, r["speed"]


def test_the_variant_alone_five_percent_slower_fails_at_least_80_percent_at_the_round_cap():
    r = rates(3, World(variant=1.05))
    assert r["speed"].get(FAIL, 0) >= 0.80, r["speed"]


@pytest.mark.parametrize("factor", [1.3, 1 / 1.3])
def test_eager_alone_moving_30_percent_never_fails_and_says_eager_moved(factor):
    r = rates(4, World(eager=factor))
    assert r["speed"].get(FAIL, 0) == 0, r["speed"]
    moved = [v for v, _ in r["messages"] if abs(v.details["eager_change"]) > math.log1p(0.03)]
    assert len(moved) > TRIALS / 2, "eager moving 30% should be seen in most sessions"
    assert all("; eager moved (" in v.message for v in moved), next(
        v.message for v in moved if "; eager moved (" not in v.message
    )


def test_everything_ten_percent_slower_on_the_same_software_warns_whole_machine_slower():
    r = rates(5, World(host=1.10, gpu=1.10))
    assert r["speed"].get(FAIL, 0) <= 0.01, r["speed"]
    assert share(r["messages"], 1, WARN, "the whole machine is slower") >= 0.95, r["stack"]


@pytest.mark.parametrize("world", [World(gpu=1.10), World(host=1.10)], ids=["gpu-clocks", "host-cpu"])
def test_a_slower_gpu_or_host_alone_is_not_a_speed_failure(world):
    r = rates(6, world)
    assert r["speed"].get(FAIL, 0) <= 0.01, r["speed"]
    assert r["stack"].get(FAIL, 0) == 0, r["stack"]


def test_everything_ten_percent_slower_after_a_library_update_fails_naming_it():
    r = rates(7, World(eager=1.10, variant=1.10), changes=TORCH_UPDATE)
    named = (
        sum(any(v.status == FAIL and "torch 2.11.0 → 2.12.0" in v.message for v in pair) for pair in r["messages"])
        / TRIALS
    )
    assert named >= 0.95, (r["speed"], r["stack"])
    # The stack verdict is the one that names it as the suspect of a whole-stack slowdown.
    assert share(r["messages"], 1, FAIL, "suspects: torch 2.11.0 → 2.12.0") >= 0.90, r["stack"]


def test_a_variant_improved_by_20_percent_passes_and_says_the_baseline_is_stale():
    r = rates(8, World(variant=0.80))
    assert share(r["messages"], 0, PASS, "which is stale") >= 0.99, r["speed"]


def test_a_new_commit_that_changed_nothing_fails_no_stack_verdict():
    r = rates(9, World(), changes=("fluxperf commit 1111111111 → 2222222222",))
    assert r["stack"].get(FAIL, 0) <= 0.01, r["stack"]


# ----- another process on the GPU: its kernels in bursts of a few ms, 10-30% of the time -------------------------


@pytest.mark.parametrize("duty", [0.1, 0.2, 0.3])
def test_a_neighbour_on_the_gpu_fails_at_most_one_percent_and_is_named(duty):
    r = rates(21, World(neighbour=duty))
    assert r["speed"].get(FAIL, 0) <= 0.01, r["speed"]
    assert r["stack"].get(FAIL, 0) == 0, r["stack"]
    # Whatever is not a PASS names the sharing with its numbers.
    unsure = [v for v, _ in r["messages"] if v.status != PASS]
    assert all("the machine was shared: another process kept the GPU busy" in v.message for v in unsure), next(
        v.message for v in unsure if "the machine was shared" not in v.message
    )


@pytest.mark.parametrize("duty", [0.1, 0.2, 0.3])
def test_a_real_regression_beside_a_neighbour_never_passes(duty):
    r = rates(22, World(neighbour=duty, variant=1.15))
    assert r["speed"].get(PASS, 0) == 0, r["speed"]
    inconclusive = [v for v, _ in r["messages"] if v.status == INCONCLUSIVE]
    assert all(v.details.get("shared") and "not judged" in v.message for v in inconclusive), r["speed"]
    assert set(r["speed"]) <= {FAIL, INCONCLUSIVE}, r["speed"]


def test_a_host_bound_variant_beside_a_neighbour_fails_no_more_than_on_a_quiet_machine():
    """The neighbour slows the GPU part of a host-bound variant's calls and of eager's alike, and the rule counts
    none of a host-bound pipeline's slowdown as the GPU sharing's: eager, host-bound too, must take the blame as on
    a quiet machine. Before the shared rule let it, 12.8% of these sessions failed."""
    r = rates(24, World(neighbour=0.3), "host")
    assert r["speed"].get(FAIL, 0) <= 0.01, r["speed"]


def test_a_regression_far_beyond_what_the_neighbour_explains_still_fails():
    r = rates(23, World(neighbour=0.1, variant=1.5))
    assert r["speed"].get(FAIL, 0) >= 0.95, r["speed"]
    assert share(r["messages"], 0, FAIL, "regressed beyond what the sharing explains") >= 0.95


# ----- a host-bound variant (a cache without compile, 67% busy) beside a host-bound eager --------------------------


def test_host_bound_every_pipeline_slower_where_no_probe_looks_is_not_blamed_on_the_variant():
    """Another process taking the CPU in turns makes every call 50% slower and no probe sample: eager takes the
    blame, as the variant slowed no more than eager did."""
    r = rates(31, World(eager=1.5, variant=1.5), "host")
    assert r["speed"].get(FAIL, 0) <= 0.025, r["speed"]  # a 95% interval's one-sided 2.5%
    assert share(r["messages"], 0, WARN, "not fast alone") >= 0.95, r["speed"]


def test_host_bound_variant_alone_50_percent_slower_still_fails():
    r = rates(32, World(variant=1.5), "host")
    assert r["speed"].get(FAIL, 0) >= 0.90, r["speed"]


def test_the_recorded_shared_cpu_session_is_blamed_on_the_host():
    """The rule on real timings: the tiny model rerun while two other processes kept both cores busy. Its calls
    ran 2.2x slower (lower quartiles), eager's too, and the host probe's median moved -4%, so it read +130% net of
    the machine, past the 50% tolerance."""
    data = json.loads((Path(__file__).parents[1] / "data" / "cpu_shared_session.json").read_text())
    base, now = (Result.from_json(data[k], version=2).timings for k in ("baseline", "session"))
    v = verdicts.judge_speed("twin", now, base, data["tolerance"], CTX, data["eager_bound"], final=True)
    assert v.details["slowdown"] > math.log1p(data["tolerance"]), v.message
    assert v.status == WARN and "the host is slower than its probe shows" in v.message, v.message
    # The same timings with the variant 3x slower in every call: now it did slow more than eager.
    slowed = replace(now, samples_s=[3 * x for x in now.samples_s])
    v = verdicts.judge_speed("twin", slowed, base, data["tolerance"], CTX, data["eager_bound"], final=True)
    assert v.status == FAIL, v.message


# ----- the parts of the rule, one at a time ------------------------------------------------------------------------


def _run(samples, busy=0.94, bound="gpu", probe_scale=1.0):
    probe = {k: [v * probe_scale] * len(samples) for k, v in PROBE_S.items()}
    return Timings(
        samples_s=list(samples),
        eager_samples_s=[EAGER_S] * len(samples),
        probe=probe,
        eager_probe=probe,
        recorded={"bound": bound, "gpu_busy": busy},
    )


def test_a_disturbed_stretch_moves_the_lower_quartile_far_less_than_the_median_or_a_trimmed_mean():
    rng = np.random.default_rng(11)
    quiet = 1.23 * np.exp(rng.normal(0, 0.01, 20))
    disturbed = quiet.copy()
    disturbed[5:14] *= rng.uniform(1.05, 1.37, 9)  # 9 of 20 rounds, as in the shipped H200 baseline
    low = stats.latency_change(disturbed, quiet)
    trimmed = stats.log_change(disturbed, quiet)
    median = math.log(np.median(disturbed) / np.median(quiet))
    assert abs(low.value) < 0.01 < trimmed.value and abs(low.value) < median / 2, (low.value, trimmed.value, median)


def test_at_the_round_cap_an_estimate_beyond_the_tolerance_fails_only_if_its_interval_is_narrow():
    base = _run(1.23 * np.exp(np.random.default_rng(12).normal(0, 0.01, 20)))
    narrow = _run(1.23 * 1.04 * np.exp(np.random.default_rng(18).normal(0, 0.04, 40)))
    wide = _run(1.23 * 1.10 * np.exp(np.random.default_rng(13).normal(0, 0.15, 40)))
    for run, final, status in ((narrow, False, INCONCLUSIVE), (narrow, True, FAIL), (wide, True, INCONCLUSIVE)):
        v = verdicts.judge_speed("fast", run, base, 0.03, CTX, final=final)
        assert v.details["ci"][0] < math.log1p(0.03) < v.details["slowdown"], v.message
        assert v.status == status, v.message
    assert (
        "still reaches below the tolerance" in verdicts.judge_speed("fast", narrow, base, 0.03, CTX, final=True).message
    )


def test_a_failure_on_the_first_rounds_is_confirmed_with_as_many_rounds_again():
    class Disturbed(Session):
        """The whole first set of rounds disturbed, nothing after it."""

        variant_calls = 0

        def _call(self, eager):
            call = super()._call(eager)
            if eager:
                return call
            self.variant_calls += 1
            return replace(call, wall_s=call.wall_s * 1.25) if self.variant_calls <= ROUNDS else call

    rng = np.random.default_rng(15)
    entry = record_baseline(rng)
    session = Disturbed(rng, World())
    timings = session.more_rounds(ROUNDS, 0)
    first = verdicts.judge_speed("fast", timings, entry.result.timings, entry.tolerance["speed"], CTX)
    assert first.status == FAIL, first.message
    verdict, timings = verdicts.speed("fast", timings, entry, CTX, ROUNDS, MAX_ROUNDS, "unknown", session.more_rounds)
    assert len(timings.samples_s) >= 2 * ROUNDS
    assert verdict.status != FAIL, verdict.message


def test_a_gpu_bound_pipeline_follows_the_host_for_the_share_of_a_call_its_gpu_waits():
    quiet = 1.23 * np.exp(np.random.default_rng(16).normal(0, 0.005, 20))
    base = _run(quiet, busy=0.80)
    now = _run(quiet * (0.8 + 0.2 * 1.3), busy=0.84, probe_scale=1.0)  # host 30% slower, GPU the same
    now = replace(
        now,
        probe={**now.probe, "launch_s": [PROBE_S["launch_s"] * 1.3] * 20},
        eager_probe={**now.eager_probe, "launch_s": [PROBE_S["launch_s"] * 1.3] * 20},
    )
    assert stats.host_share(now, base) == pytest.approx(0.16)  # the busier session's
    stat = stats.own_change(now, base, stats.machine_change(now.all_probe, base.all_probe))
    assert "16% weight on the host probe" in messages.method(base.bound, stats.host_share(now, base))
    # Predicted +0.16 × log 1.3 ≈ +4.3%; the pipeline moved +6% (a 20% share): net about +1.6%, not +6%.
    assert 0.01 < stat.value < 0.025, stat.value


def test_the_recorded_h200_sessions_judge_as_they_should():
    """The rule on real timings: a 10% pause on compile and pruna_cache_compile fails; unmodified doesn't."""
    data = json.loads((Path(__file__).parents[1] / "data" / "h200_sessions.json").read_text())
    base = baselines.load(Path(__file__).parents[2] / data["baseline"])
    for session, variants in data["sessions"].items():
        for name in ("compile", "pruna_cache_compile"):
            entry = baselines.entry(base, name)
            now = Result.from_json(variants[name], version=2).timings
            v = verdicts.judge_speed(
                name,
                now,
                entry.result.timings,
                entry.tolerance["speed"],
                CTX,
                "host",
                final=len(now.samples_s) >= MAX_ROUNDS,
            )
            if session == "slow":
                assert v.status == FAIL, v.message
            else:
                assert v.status != FAIL, v.message


ROWS = (
    ("nothing changed", World(), ()),
    ("the variant alone 10% slower", World(variant=1.10), ()),
    ("the variant alone 50% slower", World(variant=1.50), ()),
    ("eager alone 30% slower", World(eager=1.30), ()),
    ("host and GPU 10% slower (the probe sees it)", World(host=1.10, gpu=1.10), ()),
    ("every pipeline 10% slower, no probe sees it", World(eager=1.10, variant=1.10), ()),
    ("every pipeline 50% slower, no probe sees it", World(eager=1.50, variant=1.50), ()),
    ("every pipeline 10% slower after a torch update", World(eager=1.10, variant=1.10), TORCH_UPDATE),
    *((f"another process on the GPU {d:.0%} of the time", World(neighbour=d), ()) for d in (0.1, 0.2, 0.3)),
    *(
        (
            f"the variant 15% slower, another process on the GPU {d:.0%} of the time",
            World(neighbour=d, variant=1.15),
            (),
        )
        for d in (0.1, 0.2, 0.3)
    ),
    ("the variant 50% slower, another process on the GPU 10% of the time", World(neighbour=0.1, variant=1.5), ()),
)


if __name__ == "__main__":
    # python -m tests.unit.test_stats [gpu|cache|host] [seed]: the rows docs/results.md quotes, 1,000 sessions each.
    import sys

    kind = sys.argv[1] if len(sys.argv) > 1 else "gpu"
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 41
    for label, world, changes in ROWS:
        r = rates(seed, world, kind, changes)
        cells = [", ".join(f"{k} {v:.1%}" for k, v in sorted(r[q].items())) for q in ("speed", "stack")]
        print(f"| {label} | {cells[0]} | {cells[1]} |", flush=True)
