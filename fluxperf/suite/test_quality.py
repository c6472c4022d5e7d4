"""Quality: every optimized variant's images against eager's, same prompt and seed."""

import math

import pytest

from fluxperf import fidelity, quality, stats, verdicts
from fluxperf.checks import baseline_for, conclude

pytestmark = [pytest.mark.gpu, pytest.mark.fluxperf_variants("optimized")]


def _check(bench, result, metric):
    """Each image meets the variant's floor; then the aggregate must not regress past the baseline's."""
    conclude(bench, result.name, f"{metric}_floor",
             verdicts.quality_floor(result, metric, bench.floors(result)[metric], bench.scenario.prompts))
    entry = baseline_for(bench, result.name)
    reason = verdicts.quality_skip_reason(result, metric, entry)
    if reason:
        pytest.skip(f"{result.name}: {metric} not compared with the baseline: {reason}")
    verdict = verdicts.quality_baseline(result, metric, entry, bench.context(result.name), bench.scenario.prompts)
    conclude(bench, result.name, metric, verdict)


def test_ssim_matches_eager(variant_run, fluxperf_bench):
    _check(fluxperf_bench, variant_run.result, "ssim")


def test_psnr_matches_eager(variant_run, fluxperf_bench):
    _check(fluxperf_bench, variant_run.result, "psnr_db")


def test_lpips_matches_eager(variant_run, fluxperf_bench):
    result = variant_run.result
    if result.lpips_error:
        pytest.fail(result.lpips_error, pytrace=False)
    _check(fluxperf_bench, result, "lpips")


def test_fidelity_holds(variant_run, fluxperf_bench):
    """A lossless variant's transformer, step by step on eager's own inputs, stays within twice eager's own rounding
    error (fluxperf.fidelity): what its final images can't show on the real model, where they differ from eager's
    by chaos, not by a bug."""
    result = variant_run.result
    if not result.lossless:
        pytest.skip(f"{result.name} is not lossless (it skips, predicts or quantizes work): the image checks judge it")
    f = result.fidelity or {"skipped": f"{result.name}: no fidelity measured"}
    if "skipped" in f:
        pytest.skip(f["skipped"])
    text = fidelity.message(result.name, f["status"], f["details"], f["floor"]["method"])
    conclude(fluxperf_bench, result.name, "fidelity", stats.Verdict(f["status"], text))


def test_judged_images_are_the_timed_images(variant_run, fluxperf_bench):
    """The images judged above come from the very pipeline that was timed: re-rendered, they match."""
    bench, result = fluxperf_bench, variant_run.result
    items = bench.scenario.items
    assert result.timed_images, f"{result.name}: no timed images were kept"
    for item, timed in result.timed_images.items():
        judged = result.images[items.index(item)][None]
        psnr = quality.per_image(timed, judged)["psnr_db"][0]
        assert psnr >= 60 or math.isinf(psnr), (
            f"{result.name}: the timed call's image for prompt {item[0]}, seed {item[1]} differs from the judged "
            f"one (PSNR {psnr:.1f} dB): the variant is not deterministic across calls")
