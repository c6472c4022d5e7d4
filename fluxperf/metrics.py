"""The image quality metrics, each defined once: its name, direction, floors, tolerance and how it is written.

Every other place (the --fluxperf-floor option, the baseline's tolerances, the suite's tests, the report's table, the
verdicts' words) reads this table. Adding a metric is an entry here plus its computation in fluxperf.quality.SCORERS.
Nothing here imports torch: the options parser reads it before anything heavy loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # the key in results, baselines, tolerances and --fluxperf-floor
    label: str  # the column in tables and the word in messages
    higher_is_better: bool
    bounds: tuple[float, float]  # the range a per-image floor may take
    floors: tuple[float, float]  # each image against eager's, for a lossless variant and for a lossy one
    tolerance: float  # the baseline's default: how far the aggregate may move (absolute)
    aggregate: str = "mean"  # "mean", or "pooled": the metric of the mean squared error over all images
    unit: str = ""
    decimals: int = 4
    # Identical images score infinity (PSNR); JSON has no infinity, so results and baselines write null for it.
    infinite_when_identical: bool = False

    @property
    def test(self) -> str:
        """The suite's test is test_<test>_matches_eager: the name without its unit (psnr_db: test_psnr_...)."""
        return self.name.split("_")[0]

    def floor(self, lossless: bool) -> float:
        return self.floors[0 if lossless else 1]

    def fmt(self, value: float | None) -> str:
        """Human form; an infinite score prints as 'identical', never as a number."""
        if value is None:
            return "–"
        if self.infinite_when_identical and math.isinf(value):
            return "identical"
        return f"{value:.{self.decimals}f}{self.unit}"


# Floors: on the real model 28 steps turn bf16-level differences into different, equally good images (FLUX.1-dev
# compiled vs eager scored LPIPS 0.38 at 1024², pytorch/pytorch#179520), so the per-image floors only keep images clear
# of a broken pipeline (noise, a blank image). A lossless variant is also judged step by step (test_fidelity_holds); a
# subtle change, lossless or lossy, is caught against the variant's own baseline. Lossy floors equal lossless ones: a
# lossy stack that also compiles inherits that divergence plus its own, and stricter floors would fail a cached
# variant on the real model with nothing wrong. Both stay in the table so that a metric may set them apart.
# Ranges: SSIM lies in [-1, 1], LPIPS is a distance (>= 0; about 1 for unrelated images), PSNR of 8-bit images is a
# positive number of dB (inf when identical).
METRICS = {
    m.name: m
    for m in (
        Metric("lpips", "LPIPS", higher_is_better=False, bounds=(0.0, math.inf), floors=(0.6, 0.6), tolerance=0.02),
        Metric("ssim", "SSIM", higher_is_better=True, bounds=(-1.0, 1.0), floors=(0.3, 0.3), tolerance=0.02),
        Metric(
            "psnr_db",
            "PSNR",
            higher_is_better=True,
            bounds=(0.0, math.inf),
            floors=(12.0, 12.0),
            tolerance=1.0,
            aggregate="pooled",
            unit=" dB",
            decimals=2,
            infinite_when_identical=True,
        ),
    )
}

# The metric that picks the worst image of a variant: the pair saved beside the report, the report's worst item.
WORST_BY = "ssim"


def fmt(metric: str, value: float | None) -> str:
    return METRICS[metric].fmt(value)


def from_json(metric: str, value: float | None) -> float | None:
    """A score as JSON holds it: null is infinity for a metric that is infinite on identical images."""
    return math.inf if value is None and METRICS[metric].infinite_when_identical else value
