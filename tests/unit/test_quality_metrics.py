"""LPIPS, SSIM and PSNR on small images: identical, shifted and noised pairs, and LPIPS without its weights."""

from __future__ import annotations

import math
import socket
from types import SimpleNamespace

import pytest
import torch

from fluxperf import baselines, checks, quality, verdicts
from fluxperf.messages import Context
from fluxperf.metrics import METRICS, fmt
from fluxperf.result import Quality, Result, Score, json_number


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    # Smooth images (upsampled noise) so that a shift changes them without destroying all structure.
    low = torch.rand(2, 3, 16, 16, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def lpips_random():
    return quality.make_lpips(random_backbone=True)


def test_identical_images_score_lpips_0_ssim_1_and_infinite_psnr(images, lpips_random):
    m = quality.per_image(images, images.clone(), lpips_random)
    assert m["lpips"] == [0.0, 0.0] and m["ssim"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert all(math.isinf(v) and v > 0 for v in m["psnr_db"])


def test_infinite_psnr_summarizes_prints_and_serializes_without_crashing():
    s = quality.summarize("psnr_db", [math.inf, math.inf])
    assert math.isinf(s.mean) and math.isinf(s.worst)
    assert fmt("psnr_db", s.mean) == "identical" and json_number(s.mean) is None
    mixed = quality.summarize("psnr_db", [math.inf, 30.0, 40.0])
    # Pooled: mean MSE (0 + 1e-3 + 1e-4) / 3, so 10·log10(3 / 1.1e-3).
    assert mixed.mean == pytest.approx(10 * math.log10(3 / 1.1e-3)) and mixed.worst == 30.0
    assert mixed.worst_index == 1
    assert fmt("psnr_db", 30.0) == "30.00 dB" and json_number(30.0) == 30.0


def test_worst_is_the_highest_lpips_and_the_lowest_ssim():
    assert quality.summarize("lpips", [0.1, 0.3, 0.2]).worst_index == 1
    assert quality.summarize("ssim", [0.9, 0.7, 0.8]).worst_index == 1


@pytest.mark.parametrize("damage", ["shift", "noise"])
def test_a_shifted_or_noised_image_scores_worse_on_all_three(images, lpips_random, damage):
    if damage == "shift":
        other = torch.roll(images, shifts=4, dims=3)
    else:
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1)) * 25
        other = (images.float() + noise).clamp(0, 255).round().to(torch.uint8)
    m = quality.per_image(images, other, lpips_random)
    assert all(v > 0.001 for v in m["lpips"]), m
    assert all(v < 0.95 for v in m["ssim"]), m
    assert all(math.isfinite(v) and v < 35 for v in m["psnr_db"]), m


def test_images_of_different_shapes_are_refused(images):
    with pytest.raises(ValueError, match="image shapes differ"):
        quality.per_image(images, images[:1])


def test_lpips_without_the_alexnet_weights_says_how_to_preseed_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    # An offline machine: torchvision's download attempt must fail here even where CI has internet.
    def offline(*args, **kwargs):
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    with pytest.raises(quality.LpipsUnavailable) as info:
        quality.make_lpips(random_backbone=False)
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / quality.ALEXNET_FILE) in message
    assert "Pre-seed the cache" in message and "torchvision.models.alexnet(weights='DEFAULT')" in message
    assert "--fluxperf-lpips-random-backbone" in message


def _result(metric: str, values: list[float], backbone: str | None = None) -> Result:
    s = quality.summarize(metric, values)
    return Result(
        "v",
        quality=Quality(
            {metric: Score(values, s.mean, s.worst, [s.worst_index, 0], backbone)}, worst_pair_png="pair.png"
        ),
    )


def _judge(metric: str, values: list[float], recorded: dict, tolerance: float, backbone: str | None = None):
    """The suite's baseline comparison (verdicts.quality_baseline) against a baseline entry that records `recorded`
    (a version-2 file's quality fields, read as fluxperf reads them)."""
    entry = baselines.Entry(Result.from_json({"quality": recorded}, version=2), {metric: tolerance})
    return verdicts.quality_baseline(
        _result(metric, values, backbone), metric, entry, Context("b.json", "rebaseline"), ["a prompt"] * len(values)
    )


def test_lpips_mean_is_compared_with_the_baseline_only_on_the_same_backbone():
    recorded = {"lpips_mean": 0.01, "lpips_backbone": "random"}
    # 0.2 is under the floor (0.6) but far past the baseline's 0.01 + 0.02.
    v = _judge("lpips", [0.2], recorded, 0.02, "random")
    assert v.status == "FAIL" and "mean lpips 0.2000 vs baseline 0.0100" in v.message
    # Recorded on a random backbone, measured on AlexNet: different scales, skipped with the reason.
    skipped = _judge("lpips", [0.2], recorded, 0.02, "alexnet")
    assert skipped.status == verdicts.SKIP and "different scales" in skipped.message
    assert (
        "different scales" in _judge("lpips", [0.2], {**recorded, "lpips_backbone": "alexnet"}, 0.02, "random").message
    )
    assert _judge("lpips", [0.02], recorded, 0.02, "random").status == "PASS"


@pytest.mark.parametrize("metric", list(METRICS))
def test_lossy_floors_are_no_stricter_than_lossless_ones(metric):
    """A lossy stack that also compiles inherits compile's divergence on the real model (pytorch/pytorch#179520)
    plus its own. And a lossless variant whose step-by-step check is skipped (context_parallel) is judged by the
    image floors alone: it must not get looser ones than a lossy variant."""
    m = METRICS[metric]
    lossless, lossy = m.floor(True), m.floor(False)
    assert (lossy <= lossless) if m.higher_is_better else (lossy >= lossless), (lossless, lossy)
    bench = SimpleNamespace(settings=SimpleNamespace(floors={}))
    unchecked = Result("cp", lossless=True, quality=Quality(fidelity={"skipped": "runs across the ranks"}))
    assert checks.floor(bench, unchecked, metric) == checks.floor(bench, Result("cache"), metric), (
        "floors now differ: a lossless variant with its fidelity skipped must get the lossy floor in checks.floor"
    )


def test_a_floor_failure_names_the_option_that_sets_the_floor():
    v = verdicts.quality_floor(_result("ssim", [0.1, 0.9]), "ssim", 0.3, ["a prompt", "another"])
    assert v.status == "FAIL" and v.message.startswith("v: 1/2 images below the ssim floor 0.3 (lossy variant)")
    assert v.message.endswith("; a floor is set with --fluxperf-floor=v.ssim=VALUE")


def test_a_baseline_entry_without_quality_is_a_reason_to_skip_never_a_pass():
    skipped = _judge("ssim", [0.99], {}, 0.02)
    assert skipped.status == verdicts.SKIP and "records no image quality" in skipped.message


@pytest.mark.parametrize("seed", range(20))
def test_a_variant_closer_to_eager_never_fails_the_psnr_baseline(seed):
    """Identical images used to drop out of the mean, so getting closer to eager could lower it. Pooled, moving
    any image closer (to identical, too) only raises the aggregate, and the check never fails for it."""
    import random

    rng = random.Random(seed)
    before = [rng.choice([math.inf, rng.uniform(30, 50)]) for _ in range(rng.randint(1, 8))]
    if all(math.isinf(v) for v in before):
        before[0] = 40.0
    recorded = {"psnr_db_mean": quality.summarize("psnr_db", before).mean}
    closer = [math.inf if rng.random() < 0.3 else v + rng.uniform(0, 10) for v in before]
    verdict = _judge("psnr_db", closer, recorded, 0.0)
    assert verdict.status == "PASS", (before, closer, verdict.message)


def test_fifty_five_identical_images_and_one_at_36_db_do_not_score_36_db():
    pooled = quality.summarize("psnr_db", [math.inf] * 55 + [36.0]).mean
    assert pooled == pytest.approx(36.0 + 10 * math.log10(56))
    # The old mean over finite values scored this set 36.0 dB, below a set of 56 images at 37 dB.
    assert pooled > quality.summarize("psnr_db", [37.0] * 56).mean


def test_the_baseline_spread_over_prompts_sets_how_far_a_mean_may_move():
    """On the real model a compiled image differs from eager's by a new draw each time the software changes: the
    mean of 8 LPIPS values spread like the baseline's moves by a few standard errors, past a fixed 0.02."""
    spread = [0.20, 0.45, 0.30, 0.38, 0.25, 0.50, 0.33, 0.41]
    recorded = {"lpips_mean": sum(spread) / 8, "lpips_backbone": "alexnet", "lpips_values": spread}
    redraw = [0.40, 0.32, 0.47, 0.28, 0.44, 0.39, 0.35, 0.37]  # mean +0.025: a new draw, not a regression
    v = _judge("lpips", redraw, recorded, 0.02, "alexnet")
    assert v.status == "PASS" and "from the baseline's spread over prompts" in v.message, v.message
    broken = [x + 0.25 for x in spread]  # every image much further from eager
    assert _judge("lpips", broken, recorded, 0.02, "alexnet").status == "FAIL"
    # Without per-image values (an older baseline) the entry's tolerance alone applies, as before.
    old = {k: v for k, v in recorded.items() if k != "lpips_values"}
    assert _judge("lpips", redraw, old, 0.02, "alexnet").status == "FAIL"
    # A tight spread (random weights: near-identical images) never narrows the entry's tolerance.
    tight = {"ssim_mean": 0.999, "ssim_values": [0.999, 0.9991, 0.9989]}
    assert "(tolerance 0.02," in _judge("ssim", [0.985, 0.985, 0.985], tight, 0.02).message
