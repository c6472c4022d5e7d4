"""The speed decision rule, simulated: seeded sessions with GPU-like noise run through the suite's whole procedure.

The noise model lives in one function, gpu_like_samples(), so that it can be swapped for resampling real
H100 latencies without touching the properties below.
"""

from __future__ import annotations

import functools
import math
import types

import numpy as np
import pytest
import torch
from scipy import stats as sps

import fluxperf.bench as bench_mod
from fluxperf import baselines, stats
from fluxperf.bench import Bench, LiveRun, Settings, VariantResult
from fluxperf.scenario import Scenario

TRIALS = 1000
ROUNDS, MAX_ROUNDS = 5, 40            # the plugin's defaults (--fluxperf-rounds, --fluxperf-max-rounds)
BASELINE_ROUNDS = bench_mod.BASELINE_ROUNDS  # rounds when --fluxperf-update-baselines records
CV = 0.025                            # per-image coefficient of variation of FLUX latency on an H100
EAGER_S, VARIANT_S = 1.20, 0.80       # seconds per image; a 1.5x variant
TOL = baselines.DEFAULT_TOLERANCE["speedup"]
WHERE = "baselines/nvidia-h100/flux-512x512.json"
AGAIN = "pytest -m gpu --fluxperf-update-baselines"
SMALL = Scenario(height=64, width=64, steps=2, dtype="float32", device="cpu", prompts=("a", "b"))


def gpu_like_samples(rng: np.random.Generator, median_s: float, n: int, cv: float = CV,
                     drift: float = 0.0) -> np.ndarray:
    """n per-image latencies in time order, shaped like real GPU samples.

    Log-normal noise with coefficient of variation `cv` around `median_s`; about 3% of images hit a heavy
    right-tail outlier 10-30% slower (a clock dip, a host hiccup); `drift` is a slow linear change from the
    first to the last sample (thermal, a co-tenant), as a fraction. Replace with resampling real samples.
    """
    sigma = math.sqrt(math.log1p(cv ** 2))
    x = median_s * rng.lognormal(0.0, sigma, n)
    outlier = rng.random(n) < 0.03
    x = np.where(outlier, x * (1 + rng.uniform(0.10, 0.30, n)), x)
    return x * (1 + drift * np.arange(n) / max(n - 1, 1))


def paired_session(rng, eager_s: float, variant_s: float, cv: float = CV, drift: float = 0.0,
                   rounds: int = MAX_ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    """A session of paired rounds laid out as bench.time_rounds does: round r is calls 2r and 2r+1,
    eager first on even rounds and variant first on odd ones; drift runs across the whole session."""
    e = gpu_like_samples(rng, eager_s, 2 * rounds, cv, drift)
    v = gpu_like_samples(rng, variant_s, 2 * rounds, cv, drift)
    r = np.arange(rounds)
    eager_first = r % 2 == 0
    return e[np.where(eager_first, 2 * r, 2 * r + 1)], v[np.where(eager_first, 2 * r + 1, 2 * r)]


def record_baseline(rng, eager_s: float = EAGER_S, variant_s: float = VARIANT_S, cv: float = CV) -> dict:
    """A baseline entry as --fluxperf-update-baselines writes it: one session of BASELINE_ROUNDS rounds (the
    speed test is skipped while updating, so no extra rounds), through VariantResult and baselines.updated."""
    e, v = paired_session(rng, eager_s, variant_s, cv, rounds=BASELINE_ROUNDS)
    entry = VariantResult("fast", eager_s=list(e), variant_s=list(v)).baseline_entry()
    return baselines.updated(None, {}, {}, "2025-01-01T00:00:00Z", {"fast": entry})["variants"]["fast"]


def judge(e, v, baseline) -> stats.Verdict:
    """One judgement exactly as tests/perf/test_speed.py::test_speedup_holds makes it."""
    return stats.judge_speedup("fast", stats.speedup(e, v, paired=True), baseline, WHERE, AGAIN,
                               eager_latency_s=stats.median_spread(e)[0], variant_latency_s=stats.median_spread(v)[0])


def check_session(e_all, v_all, baseline, rounds: int = ROUNDS, max_rounds: int = MAX_ROUNDS):
    """test_speedup_holds' procedure: judge after `rounds`, and while INCONCLUSIVE add `rounds` more up to the cap."""
    n = rounds
    verdict = judge(e_all[:n], v_all[:n], baseline)
    while verdict.status == stats.INCONCLUSIVE and n < max_rounds:
        n += min(rounds, max_rounds - n)
        verdict = judge(e_all[:n], v_all[:n], baseline)
    return verdict, n


def simulate(seed: int, variant_factor: float, trials: int = TRIALS, eager_factor: float = 1.0,
             drift: float = 0.0) -> dict[str, float]:
    """Verdict rates over `trials` pairs of sessions: a baseline recording, then a check session whose eager and
    variant run `eager_factor` and `variant_factor` times as long as when the baseline was recorded."""
    rng = np.random.default_rng(seed)
    counts = {stats.PASS: 0, stats.FAIL: 0, stats.INCONCLUSIVE: 0}
    for _ in range(trials):
        baseline = record_baseline(rng)
        e, v = paired_session(rng, EAGER_S * eager_factor, VARIANT_S * variant_factor, drift=drift)
        counts[check_session(e, v, baseline)[0].status] += 1
    return {k: c / trials for k, c in counts.items()}


class _OneSampleT:
    """The closed form of scipy's one-sample t interval, without its per-call argument handling."""

    def __init__(self, d):
        self.d = np.asarray(d, dtype=float)

    def confidence_interval(self, confidence):
        n, mean = len(self.d), self.d.mean()
        half = _t_quantile(n - 1, confidence) * self.d.std(ddof=1) / math.sqrt(n)
        return mean - half, mean + half


@functools.lru_cache(maxsize=None)
def _t_quantile(df: int, confidence: float) -> float:
    return float(sps.t.ppf((1 + confidence) / 2, df))


@pytest.fixture
def fast_t(monkeypatch):
    """Thousands of sessions in seconds: scipy's ttest_1samp costs milliseconds a call on this shared CPU, so the
    simulations use its closed form (checked equal to scipy's below); fluxperf's rule runs unchanged."""
    monkeypatch.setattr(stats, "sps", types.SimpleNamespace(ttest_1samp=lambda d, popmean: _OneSampleT(
        np.asarray(d, dtype=float) - popmean), ttest_ind=sps.ttest_ind))


def test_the_fast_t_interval_equals_scipys():
    rng = np.random.default_rng(0)
    for n in (2, 5, 13, 20):
        d = rng.normal(0.1, 0.05, n)
        want = sps.ttest_1samp(d, 0.0).confidence_interval(stats.CONFIDENCE)
        got = _OneSampleT(d).confidence_interval(stats.CONFIDENCE)
        assert got == pytest.approx(tuple(want), rel=1e-12)


# ----- the properties of the whole procedure ------------------------------------------------------------------

simulated = pytest.mark.usefixtures("fast_t")


@simulated
def test_identical_speed_falsely_fails_at_most_one_percent_of_sessions():
    rates = simulate(seed=1, variant_factor=1.0)
    assert rates[stats.FAIL] <= 0.01, f"false FAIL rate {rates[stats.FAIL]:.1%} over {TRIALS} trials: {rates}"


@simulated
def test_identical_speed_with_session_drift_falsely_fails_at_most_one_percent_of_sessions():
    rates = simulate(seed=2, variant_factor=1.0, drift=0.10)
    assert rates[stats.FAIL] <= 0.01, f"false FAIL rate {rates[stats.FAIL]:.1%} over {TRIALS} trials: {rates}"


@simulated
def test_a_slowdown_of_twice_the_tolerance_fails_at_least_95_percent_of_sessions():
    rates = simulate(seed=3, variant_factor=1 + 2 * TOL)
    assert rates[stats.FAIL] >= 0.95, (f"a {2 * TOL:.0%} variant slowdown was caught in {rates[stats.FAIL]:.1%} "
                                       f"of {TRIALS} trials: {rates}")


@simulated
def test_an_improvement_never_fails():
    rates = simulate(seed=4, variant_factor=0.80)
    assert rates[stats.FAIL] == 0, f"a 20% faster variant FAILed in {rates[stats.FAIL]:.1%} of trials: {rates}"


@simulated
def test_the_same_samples_always_give_the_same_verdict():
    rng = np.random.default_rng(5)
    for _ in range(200):
        baseline = record_baseline(rng)
        e, v = paired_session(rng, EAGER_S, VARIANT_S * rng.choice([0.9, 1.0, 1.05, 1.1]))
        first = check_session(e, v, baseline)
        again = check_session(e.copy(), v.copy(), dict(baseline))
        assert again == first


@simulated
def test_the_same_seed_gives_the_same_rates():
    assert simulate(seed=6, variant_factor=1.05, trials=100) == simulate(seed=6, variant_factor=1.05, trials=100)


# ----- paired rounds and drift, through Bench.time_rounds itself ---------------------------------------------

class DriftingClock:
    """Stands in for timing.timed: eager and the variant cost the same, and every call is 1% slower than the last."""

    def __init__(self, per_call: float = 0.01):
        self.calls, self.per_call = 0, per_call

    def timed(self, fn, device):
        which = fn()                     # the fake render returns the pipe it was given: "eager" or "variant"
        seconds = 1.0 * (1 + self.per_call * self.calls)
        self.calls += 1
        return seconds, which


@pytest.fixture
def clocked_bench(monkeypatch):
    bench = Bench(Settings(scenario=SMALL, variants=("eager", "twin"), params={}))
    clock = DriftingClock()
    monkeypatch.setattr(bench, "render", lambda pipe, item: pipe)
    monkeypatch.setattr(bench, "to_u8", lambda out: torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    monkeypatch.setattr(bench_mod.timing, "timed", clock.timed)
    return bench, clock


def test_paired_rounds_cancel_a_linear_drift_that_biases_an_unpaired_comparison(clocked_bench):
    bench, clock = clocked_bench
    paired = VariantResult("twin")
    bench.time_rounds(LiveRun(bench, paired, "variant", "eager"), 10)
    assert len(paired.eager_s) == len(paired.variant_s) == 10
    # The same drift, but eager's block first and then the variant's (the in-place variants' design).
    blocks = VariantResult("twin", paired=False)
    blocks.eager_s = [clock.timed(lambda: "eager", "cpu")[0] for _ in range(10)]
    bench.time_rounds(LiveRun(bench, blocks, "variant", None), 10)

    sp_paired, sp_blocks = paired.speedup(), blocks.speedup()
    assert abs(math.log(sp_paired.value)) < 0.002, sp_paired
    assert sp_paired.ci_low <= 1.0 <= sp_paired.ci_high, sp_paired
    # Unpaired, the same drift makes the variant look slower by more than the whole 5% speedup tolerance.
    assert sp_blocks.value < 1 - TOL, f"blocks under a 1%/call drift should look ~7% slower: {sp_blocks}"


def test_paired_rounds_alternate_which_pipe_runs_first(clocked_bench):
    bench, _ = clocked_bench
    order = []
    bench.render = lambda pipe, item: order.append(pipe) or pipe
    bench.time_rounds(LiveRun(bench, VariantResult("twin"), "variant", "eager"), 4)
    assert order == ["eager", "variant", "variant", "eager", "eager", "variant", "variant", "eager"]


# ----- judge_speedup on chosen estimates ----------------------------------------------------------------------

BASELINE = {"speedup": 2.0, "latency_s": 0.5, "eager_latency_s": 1.0,
            "tolerance": dict(baselines.DEFAULT_TOLERANCE)}       # limit 1.90x; latency tolerance 10%


def est(value: float, half: float = 0.02, n: int = 10) -> stats.Speedup:
    return stats.Speedup(value, value - half, value + half, n, "paired")


def test_a_speedup_whose_whole_interval_is_below_the_limit_fails():
    assert stats.judge_speedup("fast", est(1.80), BASELINE, WHERE, AGAIN).status == stats.FAIL


def test_a_speedup_whose_whole_interval_clears_the_limit_passes():
    assert stats.judge_speedup("fast", est(1.95), BASELINE, WHERE, AGAIN).status == stats.PASS


def test_an_interval_straddling_the_limit_is_inconclusive():
    v = stats.judge_speedup("fast", est(1.90, half=0.05), BASELINE, WHERE, AGAIN)
    assert v.status == stats.INCONCLUSIVE and "straddles" in v.message


def test_an_interval_of_nan_is_inconclusive_for_too_few_samples():
    v = stats.judge_speedup("fast", stats.speedup([1.0], [0.5], paired=True), BASELINE, WHERE, AGAIN)
    assert v.status == stats.INCONCLUSIVE and "too few samples" in v.message


def test_a_failure_message_names_variant_value_interval_baseline_limit_file_and_rebaseline_command():
    v = stats.judge_speedup("fast", stats.Speedup(1.80, 1.77, 1.83, 20, "paired"), BASELINE, WHERE, AGAIN)
    assert v.status == stats.FAIL
    for part in ("fast:", "speedup 1.80×", "95% CI 1.77–1.83", "n=20 paired", "baseline 2.00×", "tolerance 5%",
                 "limit 1.90×", WHERE, AGAIN):
        assert part in v.message, f"{part!r} missing from: {v.message}"


def test_eager_getting_faster_while_the_variant_held_is_inconclusive_not_a_failure():
    # Eager 30% faster than at recording time, the variant's latency unchanged: the speedup drops to 1.4x.
    v = stats.judge_speedup("fast", est(1.40), BASELINE, WHERE, AGAIN, eager_latency_s=0.70, variant_latency_s=0.50)
    assert v.status == stats.INCONCLUSIVE, v.message
    assert "0.70×" in v.message and "not a regression of fast" in v.message, v.message


def test_eager_getting_faster_does_not_excuse_a_variant_that_slowed_down():
    # Same faster eager, but the variant itself is 15% slower than its baseline latency: a real regression.
    v = stats.judge_speedup("fast", est(1.22), BASELINE, WHERE, AGAIN, eager_latency_s=0.70, variant_latency_s=0.575)
    assert v.status == stats.FAIL, v.message


def test_a_slower_speedup_with_eager_unchanged_fails_even_when_latencies_are_given():
    v = stats.judge_speedup("fast", est(1.70), BASELINE, WHERE, AGAIN, eager_latency_s=1.0, variant_latency_s=0.59)
    assert v.status == stats.FAIL, v.message


def test_a_speedup_much_faster_than_the_baseline_passes_and_flags_the_baseline_stale():
    v = stats.judge_speedup("fast", est(2.30), BASELINE, WHERE, AGAIN)
    assert v.status == stats.PASS and v.stale
    assert "stale" in v.message and AGAIN in v.message


def test_a_speedup_within_the_tolerance_above_the_baseline_is_not_stale():
    v = stats.judge_speedup("fast", est(2.05), BASELINE, WHERE, AGAIN)
    assert v.status == stats.PASS and not v.stale


# ----- judge_ratio (peak memory, latency) ----------------------------------------------------------------------

@pytest.mark.parametrize("value, status", [(10.9, stats.PASS), (11.0, stats.PASS), (11.2, stats.FAIL)])
def test_peak_memory_fails_only_past_the_baseline_times_one_plus_tolerance(value, status):
    v = stats.judge_ratio("fast", "peak_mem_gb", value, 10.0, 0.10, " GB", WHERE)
    assert v.status == status, v.message


def test_peak_memory_message_names_variant_metric_values_limit_and_file():
    v = stats.judge_ratio("fast", "peak_mem_gb", 12.0, 10.0, 0.10, " GB", WHERE)
    for part in ("fast:", "peak_mem_gb 12.000 GB", "baseline 10.000 GB", "tolerance 10%", "limit 11.000 GB", WHERE):
        assert part in v.message, f"{part!r} missing from: {v.message}"


# ----- the estimator itself -------------------------------------------------------------------------------------

def test_speedup_is_the_geometric_mean_of_eager_over_variant():
    sp = stats.speedup([2.0, 8.0], [1.0, 2.0], paired=True)   # ratios 2 and 4: geometric mean sqrt(8)
    assert sp.value == pytest.approx(math.sqrt(8)) and sp.ci_low < sp.value < sp.ci_high


def test_paired_samples_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="3 eager vs 2 variant"):
        stats.speedup([1, 1, 1], [1, 1], paired=True)
