"""Quality: every optimized variant's images against eager's, same prompt and seed; a test per metric
(fluxperf.metrics), and step-by-step fidelity for lossless variants."""

import math

import pytest

from fluxperf import quality, verdicts
from fluxperf.checks import baseline_for, conclude, context, floor
from fluxperf.metrics import METRICS

pytestmark = [pytest.mark.gpu, pytest.mark.fluxperf_variants("optimized")]


def _matches_eager(metric):
    def test(variant_run, fluxperf_bench):
        """Each image meets the variant's floor; then the aggregate must not regress past the baseline's."""
        bench, result = fluxperf_bench, variant_run.result
        if metric.name in result.quality.errors:
            pytest.fail(result.quality.errors[metric.name], pytrace=False)
        conclude(
            bench,
            result.name,
            f"{metric.name}_floor",
            verdicts.quality_floor(result, metric.name, floor(bench, result, metric.name), bench.scenario.prompts),
        )
        entry = baseline_for(bench, result.name)
        conclude(
            bench,
            result.name,
            metric.name,
            verdicts.quality_baseline(result, metric.name, entry, context(bench, result.name), bench.scenario.prompts),
        )

    test.__name__ = test.__qualname__ = f"test_{metric.test}_matches_eager"
    return test


# One test per metric, named after it: test_lpips_matches_eager, test_ssim_matches_eager, test_psnr_matches_eager.
for _metric in METRICS.values():
    globals()[f"test_{_metric.test}_matches_eager"] = _matches_eager(_metric)


def test_fidelity_holds(variant_run, fluxperf_bench):
    """A lossless variant's transformer, step by step on eager's own inputs, stays within twice eager's own rounding
    error (fluxperf.fidelity): what its final images can't show on the real model, where they differ from eager's
    by chaos, not by a bug."""
    result = variant_run.result
    if not result.lossless:
        pytest.skip(f"{result.name} is not lossless (it skips, predicts or quantizes work): the image checks judge it")
    conclude(fluxperf_bench, result.name, "fidelity", verdicts.fidelity(result))


def test_judged_images_are_the_timed_images(variant_run, fluxperf_bench):
    """The images judged above come from the very pipeline that was timed: re-rendered, they match."""
    bench, result = fluxperf_bench, variant_run.result
    items = bench.scenario.quality_items  # the timed images kept are those of judged items
    assert result.timed_images, f"{result.name}: no timed images were kept"
    for item, timed in result.timed_images.items():
        judged = result.images[items.index(item)][None]
        psnr = quality.per_image(timed, judged)["psnr_db"][0]
        assert psnr >= 60 or math.isinf(psnr), (
            f"{result.name}: the timed call's image for prompt {item[0]}, seed {item[1]} differs from the judged "
            f"one (PSNR {psnr:.1f} dB): the variant is not deterministic across calls"
        )
