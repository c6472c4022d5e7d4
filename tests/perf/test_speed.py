"""Speed: pytest-benchmark timings per variant, and verdicts on speedup, peak memory and latency drift."""

import pytest

from fluxperf import report, stats, timing
from fluxperf.plugin import baseline_for, rebaseline_command, warn

pytestmark = pytest.mark.gpu


def test_benchmark(variant_run, fluxperf_bench, benchmark):
    """pytest-benchmark's own timing of the built variant (synchronized inside every sample)."""
    bench, result = fluxperf_bench, variant_run.result
    item = bench.scenario.items[0]
    benchmark.extra_info.update(
        variant=result.name, scenario=bench.scenario.slug, model_source=bench.scenario.model,
        model_note=report.model_banner(bench.scenario.model), gpu=bench.env["gpu"],
        peak_mem_gb=result.peak_mem_gb, build_s=result.build_s,
        speedup_vs_eager=result.speedup().value if result.eager_s else None)
    # The fixture already warmed the variant up: nothing here compiles.
    benchmark.pedantic(lambda: timing.timed(lambda: bench.render(variant_run.pipe, item), bench.device),
                       rounds=3, iterations=1, warmup_rounds=0)


@pytest.mark.fluxperf_variants("timed")
def test_speedup_holds(variant_run, fluxperf_bench):
    bench, result = fluxperf_bench, variant_run.result
    entry = baseline_for(bench, result.name)
    where, again = str(bench.baseline_path), rebaseline_command(bench)

    def judge():
        return stats.judge_speedup(result.name, result.speedup(), entry, where, again,
                                   eager_latency_s=stats.median_spread(result.eager_s)[0],
                                   variant_latency_s=result.latency()[0])

    verdict = judge()
    # An interval that straddles the limit buys more rounds, up to the cap, before anyone is told.
    while verdict.status == stats.INCONCLUSIVE and len(result.variant_s) < bench.settings.max_rounds:
        variant_run.more_rounds(min(bench.settings.rounds, bench.settings.max_rounds - len(result.variant_s)))
        verdict = judge()
    bench.record(result.name, "speedup", verdict)
    if verdict.status == stats.INCONCLUSIVE:
        warn(f"INCONCLUSIVE after {len(result.variant_s)} rounds: {verdict.message}")
    elif verdict.stale:
        warn(verdict.message)
    assert verdict.status != stats.FAIL, verdict.message


@pytest.mark.fluxperf_variants("all")
def test_peak_memory_holds(variant_run, fluxperf_bench):
    bench, result = fluxperf_bench, variant_run.result
    if result.peak_mem_gb is None:
        pytest.skip("peak memory is only tracked on CUDA")
    entry = baseline_for(bench, result.name)
    if entry.get("peak_mem_gb") is None:
        pytest.skip(f"the baseline {bench.baseline_path} records no peak memory for {result.name}")
    verdict = stats.judge_ratio(result.name, "peak_mem_gb", result.peak_mem_gb, entry["peak_mem_gb"],
                                entry["tolerance"]["peak_mem"], " GB", str(bench.baseline_path))
    bench.record(result.name, "peak_mem", verdict)
    assert verdict.status == stats.PASS, f"{verdict.message}; if intended: {rebaseline_command(bench)}"


@pytest.mark.fluxperf_variants("timed")
def test_latency_within_tolerance(variant_run, fluxperf_bench):
    """Absolute latency moves between machines, so drift warns rather than fails."""
    bench, result = fluxperf_bench, variant_run.result
    entry = baseline_for(bench, result.name)
    verdict = stats.judge_ratio(result.name, "latency_s", result.latency()[0], entry["latency_s"],
                                entry["tolerance"]["latency"], " s", str(bench.baseline_path))
    if verdict.status != stats.PASS:
        verdict = stats.Verdict("WARN", verdict.message)
        warn(f"absolute latency drift: {verdict.message}")
    bench.record(result.name, "latency", verdict)
