"""Report files from a Bench filled by hand: results.json, report.md, latency.png and the terminal table,
all rendered from the results dict (report.results_dict), as under pytest-xdist from the merged one."""

from __future__ import annotations

import json
import math

import pytest

import fluxperf.bench as bench_mod
from fluxperf import report
from fluxperf.bench import Bench, Settings, VariantResult
from fluxperf.scenario import Scenario

SMALL = Scenario(height=64, width=64, steps=2, dtype="float32", device="cpu", prompts=("a", "b"))
ENV = {"gpu": "NVIDIA H100 80GB HBM3", "gpu_slug": "nvidia-h100-80gb-hbm3", "driver": "550.54", "cuda": "12.4",
       "host_cpu": "Test CPU", "python": "3.11", "versions": {"torch": "2.4"}, "commit": "abc123"}


def _quality(ssim, psnr):
    return {"ssim": {"values": ssim, "mean": sum(ssim) / len(ssim), "worst": min(ssim), "worst_item": [1, 0]},
            "psnr_db": {"values": psnr, "mean": math.inf, "worst": min(psnr), "worst_item": [1, 0]}}


@pytest.fixture
def bench(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_mod.environment, "describe", lambda device, repo: ENV)
    b = Bench(Settings(scenario=SMALL, variants=("eager", "compile", "broken"), params={}, report_dir=tmp_path))
    eager = [1.00, 1.02, 0.99, 1.01, 1.00]
    b.results["eager"] = VariantResult("eager", status="measured", lossless=True, eager_s=list(eager),
                                       variant_s=list(eager), build_s=0.0)
    b.results["compile"] = VariantResult(
        "compile", status="measured", lossless=True, eager_s=list(eager), variant_s=[0.50, 0.51, 0.49, 0.50, 0.52],
        build_s=42.0, peak_mem_gb=None, quality=_quality([1.0, 0.99], [math.inf, math.inf]),
        verdicts={"speedup": {"status": "PASS", "message": "compile: speedup 2.00×"}})
    b.results["broken"] = VariantResult("broken", status="failed", error="RuntimeError: simulated build failure")
    return b


def _strict_json(text):
    def refuse(constant):
        raise AssertionError(f"{constant} in results.json")
    return json.loads(text, parse_constant=refuse)


def test_results_json_is_valid_json_without_nan_or_infinity(bench, tmp_path):
    report.write_all(bench)
    data = _strict_json((tmp_path / "results.json").read_text())
    assert data["model_note"] == report.model_banner("tiny") and data["environment"] == ENV
    compile_ = data["variants"]["compile"]
    assert compile_["speedup"]["value"] == pytest.approx(2.0, rel=0.03) and compile_["n"] == 5
    assert compile_["quality"]["psnr_db"]["mean"] is None and compile_["quality"]["psnr_db"]["per_image"] == [None, None]
    assert data["variants"]["broken"]["status"] == "failed"


def test_report_md_has_the_model_banner_and_a_row_per_variant(bench, tmp_path):
    report.write_all(bench)
    md = (tmp_path / "report.md").read_text()
    assert f"> **{report.model_banner('tiny')}**" in md and "TINY toy model" in md
    for name in ("eager", "compile", "broken"):
        assert f"| {name} | " in md, name
    assert "| compile | 0.500 ± 0.005 (n=5) | 1.99× (1.94–2.04) | paired | – / – host-bound | – | 42.0 | speedup PASS |" in md
    assert "## Environment" in md
    assert "![latency per variant](latency.png)" in md
    assert "PSNR" in md and "identical / identical" in md


def test_a_failed_variant_is_listed_as_not_measured_with_its_error(bench, tmp_path):
    report.write_all(bench)
    md = (tmp_path / "report.md").read_text()
    assert "## Not measured" in md and "- **broken**: RuntimeError: simulated build failure" in md


def test_latency_png_is_a_real_png(bench, tmp_path):
    from PIL import Image

    report.write_all(bench)
    with Image.open(tmp_path / "latency.png") as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100
        img.verify()


def test_the_terminal_table_has_a_header_and_a_row_per_variant(bench):
    results = report.results_dict(bench)
    lines = report.table_text(report.SPEED_HEADER, report.speed_rows(results)).splitlines()
    assert lines[0].startswith("variant") and set(lines[1].replace(" ", "")) == {"-"}
    assert [line.split()[0] for line in lines[2:]] == ["eager", "compile", "broken"]
    assert "1.99× (1.94–2.04)" in lines[3] and "speedup PASS" in lines[3] and lines[4].split()[1] == "failed"
    header = report.header_lines(results)
    assert header[0] == f"model: tiny — {report.model_banner('tiny')}" and "NVIDIA H100 80GB HBM3" in header[1]


def test_the_roofline_table_counts_work_and_warns_about_adaptive_caches_on_random_weights(bench, tmp_path):
    from fluxperf.roofline import Work

    bench.results["compile"].work = Work(transformer_flops=2e12, blocks_ran=8, blocks_total=8)
    bench.results["compile"].adaptive = True
    for r in bench.results.values():
        for probe in (r.probe, r.eager_probe):
            probe.update(matmul_s=[1e-3], copy_s=[1e-3], launch_s=[1e-4])
    report.write_all(bench)
    md = (tmp_path / "report.md").read_text()
    # 2 TFLOP in the median 0.5 s image: 4 TFLOP/s.
    assert "| compile | 2 | 4 | " in md, md
    assert "8 / 0 (adaptive: on random weights not representative)" in md
