"""Speed: did the optimization regress, did the whole stack get slower, and did every call do the whole job."""

import pytest

from fluxperf import report, stats, timing, verdicts
from fluxperf.checks import baseline_for, conclude

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


@pytest.mark.fluxperf_variants("all")
def test_every_timed_call_ran_every_step(variant_run, fluxperf_bench):
    verdict = verdicts.steps(variant_run.result, fluxperf_bench.scenario.steps)
    conclude(fluxperf_bench, variant_run.result.name, "steps", verdict)


@pytest.mark.fluxperf_variants("timed")
def test_speedup_holds(variant_run, fluxperf_bench):
    """Did the optimization regress? More rounds while the verdict is inconclusive, up to the cap."""
    bench, result = fluxperf_bench, variant_run.result
    entry = baseline_for(bench, result.name)
    if verdicts.steps(result, bench.scenario.steps).status == stats.FAIL:
        conclude(bench, result.name, "speedup", stats.Verdict(
            stats.FAIL, f"{result.name}: not judged on speed: its timed calls skipped denoising steps "
                        "(test_every_timed_call_ran_every_step)"))
    eager = bench.results.get("eager")
    eager_bound = eager.bound if eager is not None and eager.variant_s else \
        (bench.baseline_entry("eager") or {}).get("bound", "unknown")
    s = bench.settings
    verdict = verdicts.speed(variant_run, entry, bench.context(result.name), s.rounds, s.max_rounds, eager_bound)
    conclude(bench, result.name, "speedup", verdict)


@pytest.mark.fluxperf_variants("all")
def test_stack_speed_holds(variant_run, fluxperf_bench):
    """Did the whole stack get slower? FAIL when the software changed, WARN when only the machine did."""
    bench, result = fluxperf_bench, variant_run.result
    if not result.timed:
        pytest.skip(f"{result.name} is quality-only: slower than eager by design, never judged on speed")
    entry = baseline_for(bench, result.name)
    conclude(bench, result.name, "stack", verdicts.stack(result, entry, bench.context(result.name)))


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
    if verdict.status == stats.FAIL:
        verdict = stats.Verdict(stats.FAIL, f"{verdict.message}; if intended: {bench.settings.rebaseline}")
    conclude(bench, result.name, "peak_mem", verdict)
