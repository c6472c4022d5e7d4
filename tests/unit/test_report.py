"""Report files from results filled by hand: results.json, report.md, latency.png and the terminal table, all
rendered from the results document (report.document), as under pytest-xdist from the merged one."""

from __future__ import annotations

import json
import math

import pytest

from fluxperf import contention, report, summary
from fluxperf.result import Quality, Result, Score, Timings
from fluxperf.roofline import Work
from fluxperf.scenario import Scenario

SMALL = Scenario(height=64, width=64, steps=2, dtype="float32", device="cpu", prompts=("a", "b"))
ENV = {
    "gpu": "NVIDIA H100 80GB HBM3",
    "gpu_slug": "nvidia-h100-80gb-hbm3",
    "driver": "550.54",
    "cuda": "12.4",
    "host_cpu": "Test CPU",
    "python": "3.11",
    "versions": {"torch": "2.4"},
    "commit": "abc123",
}


def _quality(ssim, psnr):
    return Quality(
        {
            "ssim": Score(ssim, sum(ssim) / len(ssim), min(ssim), [1, 0]),
            "psnr_db": Score(psnr, math.inf, min(psnr), [1, 0]),
        }
    )


@pytest.fixture
def results():
    eager = [1.00, 1.02, 0.99, 1.01, 1.00]
    return {
        "eager": Result(
            "eager",
            status="measured",
            lossless=True,
            timings=Timings("cpu", samples_s=list(eager), eager_samples_s=list(eager), build_s=0.0),
        ),
        "compile": Result(
            "compile",
            status="measured",
            lossless=True,
            timings=Timings("cpu", samples_s=[0.50, 0.51, 0.49, 0.50, 0.52], eager_samples_s=list(eager), build_s=42.0),
            quality=_quality([1.0, 0.99], [math.inf, math.inf]),
            verdicts={"speedup": {"status": "PASS", "message": "compile: speedup 2.00×"}},
        ),
        "broken": Result("broken", status="failed", error="RuntimeError: simulated build failure"),
    }


def _document(results):
    return report.document(SMALL, ENV, None, None, None, results)


def _strict_json(text):
    def refuse(constant):
        raise AssertionError(f"{constant} in results.json")

    return json.loads(text, parse_constant=refuse)


def test_results_json_is_valid_json_without_nan_or_infinity(results, tmp_path):
    report.write_summary(_document(results), tmp_path)
    data = _strict_json((tmp_path / "results.json").read_text())
    assert data["model_note"] == report.model_banner("tiny") and data["environment"] == ENV
    compile_ = data["variants"]["compile"]
    assert compile_["timings"]["speedup"] == pytest.approx(2.0, rel=0.03) and compile_["timings"]["rounds"] == 5
    psnr = compile_["quality"]["scores"]["psnr_db"]
    assert psnr["mean"] is None and psnr["values"] == [None, None]
    assert data["variants"]["broken"]["status"] == "failed"
    # The document reads back into the same results: one value, written and read by the type itself.
    assert report.variants(data)["compile"].quality.scores["psnr_db"].values == [math.inf, math.inf]
    assert report.variants(data)["compile"].timings.samples_s == results["compile"].timings.samples_s


def test_report_md_has_the_model_banner_and_a_row_per_variant(results, tmp_path):
    report.write_summary(_document(results), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert f"> **{report.model_banner('tiny')}**" in md and "TINY toy model" in md
    for name in ("eager", "compile", "broken"):
        assert f"| {name} | " in md, name
    assert (
        "| compile | 0.500 ± 0.005 (n=5) | 1.99× (1.94–2.04) | paired | – / – host-bound | – | 42.0 | speedup PASS |"
        in md
    )
    assert "## Environment" in md
    assert "![latency per variant](latency.png)" in md
    assert "PSNR" in md and "identical / identical" in md


def test_a_failed_variant_is_listed_as_not_measured_with_its_error(results, tmp_path):
    report.write_summary(_document(results), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Not measured" in md and "- **broken**: RuntimeError: simulated build failure" in md


def test_latency_png_is_a_real_png(results, tmp_path):
    from PIL import Image

    report.write_summary(_document(results), tmp_path)
    with Image.open(tmp_path / "latency.png") as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100
        img.verify()


def test_the_terminal_table_has_a_header_and_a_row_per_variant(results):
    doc = _document(results)
    lines = report.table_text(report.SPEED_HEADER, report.speed_rows(doc)).splitlines()
    assert lines[0].startswith("variant") and set(lines[1].replace(" ", "")) == {"-"}
    assert [line.split()[0] for line in lines[2:]] == ["eager", "compile", "broken"]
    assert "1.99× (1.94–2.04)" in lines[3] and "speedup PASS" in lines[3] and lines[4].split()[1] == "failed"
    header = report.header_lines(doc)
    assert header[0] == f"model: tiny — {report.model_banner('tiny')}" and "NVIDIA H100 80GB HBM3" in header[1]


def test_the_roofline_table_counts_work_and_warns_about_adaptive_caches_on_random_weights(results, tmp_path):
    results["compile"].timings.work = Work(transformer_flops=2e12, blocks_ran=8, blocks_total=8)
    results["compile"].adaptive = True
    for r in results.values():
        for probe in (r.timings.probe, r.timings.eager_probe):
            probe.update(matmul_s=[1e-3], copy_s=[1e-3], launch_s=[1e-4])
    report.write_summary(_document(results), tmp_path)
    md = (tmp_path / "report.md").read_text()
    # 2 TFLOP in the median 0.5 s image: 4 TFLOP/s.
    assert "| compile | 2 | 4 | " in md, md
    assert "8 / 0 (adaptive: on random weights not representative)" in md


class _Terminal:
    """The terminal reporter as far as the summary writes to it."""

    def __init__(self):
        self.lines = []

    def write_sep(self, sep, title):
        self.lines.append(title)

    def write_line(self, line, **markup):
        self.lines.append(line)


def test_a_variant_whose_calls_shared_the_machine_heads_the_summary_and_report_md(results, tmp_path):
    """compile's threads waited for a CPU a tenth of each call's time (another process on the cores); eager's
    didn't. The line opening the terminal summary and report.md names compile alone, with the share."""
    t = results["compile"].timings
    t.contention = {**contention.empty(), "runq_wait_s": [0.1 * s for s in t.samples_s]}
    results["eager"].timings.contention = {**contention.empty(), "runq_wait_s": [0.0] * 5}
    doc = _document(results)
    report.write_summary(doc, tmp_path)
    # As read back from results.json, as the xdist merge and the report command do.
    doc = json.loads((tmp_path / "results.json").read_text())
    line = "THE MACHINE WAS SHARED during timed calls: compile (waited for a CPU for 10% of its calls' time)."
    md = (tmp_path / "report.md").read_text()
    assert f"> **{line}" in md and md.index(line) < md.index(report.model_banner("tiny")), md
    terminal = _Terminal()
    summary.write(terminal, doc, tmp_path, None, {})
    assert terminal.lines[1].startswith(line) and "eager (" not in terminal.lines[1], terminal.lines[:3]
    quiet = _document({k: v for k, v in results.items() if k != "compile"})
    assert report.shared_line(quiet) is None and "THE MACHINE WAS SHARED" not in report.markdown(quiet, None)
