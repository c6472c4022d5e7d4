"""Eager must render the same prompt and seed the same way twice, or quality verdicts mean little."""

import pytest

from fluxperf import metrics

pytestmark = [pytest.mark.gpu, pytest.mark.fluxperf_variants("eager")]


def test_eager_is_deterministic(variant_run, fluxperf_bench):
    d = fluxperf_bench.determinism
    worst = metrics.fmt("psnr_db", metrics.from_json("psnr_db", d["worst_psnr_db"]))
    assert d["ok"], (
        f"eager re-rendered {d['images_compared']} image(s) with worst PSNR {worst} against its "
        f"reference images, below the {d['bound_psnr_db']} dB bound: quality verdicts are unreliable"
    )
