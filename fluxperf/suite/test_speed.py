"""Speed: did the optimization regress, did the whole stack get slower, and did every call do the whole job."""

import pytest

from fluxperf import baselines, checks, report, timing, verdicts
from fluxperf.checks import baseline_for, conclude, context

pytestmark = pytest.mark.gpu


def test_benchmark(variant_run, fluxperf_bench, benchmark):
    """pytest-benchmark's own timing of the built variant (synchronized inside every sample)."""
    bench, result = fluxperf_bench, variant_run.result
    item = bench.scenario.items[0]
    speedup = result.timings.speedup()
    benchmark.extra_info.update(
        variant=result.name,
        scenario=bench.scenario.slug,
        model_source=bench.scenario.model,
        model_note=report.model_banner(bench.scenario.model),
        gpu=bench.env["gpu"],
        peak_mem_gb=result.timings.peak_mem_gb,
        build_s=result.timings.build_s,
        speedup_vs_eager=speedup.value if speedup else None,
    )
    # The fixture already warmed the variant up: nothing here compiles.
    benchmark.pedantic(
        lambda: timing.timed(lambda: bench.render(variant_run.pipe, item), bench.device),
        rounds=3,
        iterations=1,
        warmup_rounds=0,
    )


@pytest.mark.fluxperf_variants("all")
def test_every_timed_call_ran_every_step(variant_run, fluxperf_bench):
    verdict = verdicts.steps(variant_run.result, fluxperf_bench.scenario.steps)
    conclude(fluxperf_bench, variant_run.result.name, "steps", verdict)


@pytest.mark.fluxperf_variants("timed")
def test_speedup_holds(variant_run, fluxperf_bench):
    """Did the optimization regress? More rounds while the verdict is inconclusive, up to the cap."""
    bench, result = fluxperf_bench, variant_run.result
    entry = baseline_for(bench, result.name)
    if verdicts.steps(result, bench.scenario.steps).status == verdicts.FAIL:
        conclude(bench, result.name, "speedup", verdicts.not_judged_on_speed(result.name))
    eager_bound = verdicts.eager_bound(bench.results.get("eager"), baselines.entry(bench.baseline, "eager"))
    s = bench.settings
    verdict, result.timings = verdicts.speed(
        result.name,
        result.timings,
        entry,
        context(bench, result.name),
        s.rounds,
        s.max_rounds,
        eager_bound,
        variant_run.more_rounds,
    )
    conclude(bench, result.name, "speedup", verdict)


@pytest.mark.fluxperf_variants("all")
def test_stack_speed_holds(variant_run, fluxperf_bench):
    """Did the whole stack get slower? FAIL when the software changed, WARN when only the machine did."""
    bench, result = fluxperf_bench, variant_run.result
    if not result.timed:
        pytest.skip(f"{result.name} is quality-only: slower than eager by design, never judged on speed")
    entry = baseline_for(bench, result.name)
    conclude(
        bench, result.name, "stack", verdicts.stack(result.name, result.timings, entry, context(bench, result.name))
    )


@pytest.mark.fluxperf_variants("all")
def test_peak_memory_holds(variant_run, fluxperf_bench):
    bench, result = fluxperf_bench, variant_run.result
    if result.timings.peak_mem_gb is None:
        pytest.skip("peak memory is only tracked on CUDA")
    entry = baseline_for(bench, result.name)
    conclude(bench, result.name, "peak_mem", verdicts.peak_memory(result, entry, context(bench, result.name)))


@pytest.mark.fluxperf_variants("all")
def test_history_holds(variant_run, fluxperf_bench, fluxperf_history):
    """Have slowdowns that each passed their baseline added up past the tolerance? The pipeline's latency net of the
    machine over every session in the history (--fluxperf-history), with this one last."""
    bench, result = fluxperf_bench, variant_run.result
    if not result.timed:
        pytest.skip(f"{result.name} is quality-only: slower than eager by design, never judged on speed")
    conclude(bench, result.name, "history", checks.history(bench, fluxperf_history, result.name))
