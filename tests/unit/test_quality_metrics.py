"""LPIPS, SSIM and PSNR on small images: identical, shifted and noised pairs, and LPIPS without its weights."""

from __future__ import annotations

import math
import socket

import pytest
import torch

from fluxperf import quality


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
    assert quality.fmt("psnr_db", s.mean) == "identical" and quality.json_value(s.mean) is None
    mixed = quality.summarize("psnr_db", [math.inf, 30.0, 40.0])
    assert mixed.mean == 35.0 and mixed.worst == 30.0 and mixed.worst_index == 1
    assert quality.fmt("psnr_db", 30.0) == "30.00 dB" and quality.json_value(30.0) == 30.0


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


def _judge_lpips_mean(recorded_backbone: str, backbone: str, mean: float):
    """tests/perf/test_quality.py's floor-and-baseline check for LPIPS, on a stand-in bench and result."""
    from types import SimpleNamespace
    from fluxperf.bench import LOSSY_FLOOR
    from fluxperf.scenario import Scenario
    from tests.perf.test_quality import _check_floor_and_baseline

    entry = {"params": {}, "tolerance": {"lpips": 0.02},
             "quality": {"lpips_mean": 0.01, "lpips_backbone": recorded_backbone}}
    result = SimpleNamespace(name="v", lossless=False, params={}, worst_pair_png="pair.png",
                             quality={"lpips": {"values": [mean], "mean": mean, "worst": mean,
                                                "worst_item": [0, 0], "backbone": backbone}})
    bench = SimpleNamespace(
        scenario=Scenario(model="tiny"), results={"v": result}, baseline_path="b.json",
        settings=SimpleNamespace(update_baselines=False, require_baseline=True),
        floors=lambda r: dict(LOSSY_FLOOR), baseline_entry=lambda name: entry)
    _check_floor_and_baseline(bench, result, "lpips")


def test_lpips_mean_is_compared_with_the_baseline_only_on_the_same_backbone():
    # 0.2 is under the lossy floor (0.4) but far past the baseline's 0.01 + 0.02.
    with pytest.raises(AssertionError, match=r"mean lpips 0.2000 vs baseline 0.0100"):
        _judge_lpips_mean("random", "random", 0.2)
    # Recorded on a random backbone, measured on AlexNet: different scales, only the floor applies.
    _judge_lpips_mean("random", "alexnet", 0.2)
    _judge_lpips_mean("alexnet", "random", 0.2)
    _judge_lpips_mean("random", "random", 0.02)
