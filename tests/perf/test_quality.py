"""Quality: every optimized variant's images against eager's, same prompt and seed."""

import math

import pytest

from fluxperf import quality
from fluxperf.plugin import baseline_for, rebaseline_command

pytestmark = [pytest.mark.gpu, pytest.mark.fluxperf_variants("optimized")]


def _worst_note(bench, result, metric):
    q = result.quality[metric]
    p, seed = q["worst_item"]
    return (f"worst image: prompt {p} ({bench.scenario.prompts[p][:60]!r}), seed {seed}, "
            f"{quality.fmt(metric, q['worst'])}; pair saved at {result.worst_pair_png}")


def _check_floor_and_baseline(bench, result, metric):
    """Each image must meet the variant's floor; the mean must not regress past the baseline's."""
    floor = bench.floors(result)[metric]
    q = result.quality[metric]
    better = quality.HIGHER_IS_BETTER[metric]
    below = [v for v in q["values"] if (v < floor if better else v > floor)]
    assert not below, (f"{result.name}: {len(below)}/{len(q['values'])} images {'below' if better else 'above'} "
                       f"the {metric} floor {floor} ({'lossless' if result.lossless else 'lossy'} variant); "
                       f"{_worst_note(bench, result, metric)}")
    if bench.settings.update_baselines or bench.baseline_entry(result.name) is None:
        return
    entry = baseline_for(bench, result.name)
    recorded = entry.get("quality") or {}
    base = recorded.get(f"{metric}_mean")
    if base is None:
        return  # the baseline's images were identical to eager's (PSNR) or LPIPS wasn't measured
    if metric == "lpips" and recorded.get("lpips_backbone") != q.get("backbone"):
        return  # a random-backbone LPIPS and AlexNet's are different scales: only the floor applies
    tol = entry["tolerance"][metric]
    mean = q["mean"]
    if math.isinf(mean):
        return  # identical to eager now: can't have regressed
    limit = base - tol if better else base + tol
    regressed = mean < limit if better else mean > limit
    assert not regressed, (f"{result.name}: mean {metric} {quality.fmt(metric, mean)} vs baseline "
                           f"{quality.fmt(metric, base)} (tolerance {tol}, limit {quality.fmt(metric, limit)}) "
                           f"[{bench.baseline_path}]; {_worst_note(bench, result, metric)}; "
                           f"if intended: {rebaseline_command(bench)}")


def test_ssim_matches_eager(variant_run, fluxperf_bench):
    _check_floor_and_baseline(fluxperf_bench, variant_run.result, "ssim")


def test_psnr_matches_eager(variant_run, fluxperf_bench):
    _check_floor_and_baseline(fluxperf_bench, variant_run.result, "psnr_db")


def test_lpips_matches_eager(variant_run, fluxperf_bench):
    result = variant_run.result
    if result.lpips_error:
        pytest.fail(result.lpips_error, pytrace=False)
    _check_floor_and_baseline(fluxperf_bench, result, "lpips")


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
