"""Variants spread over pytest-xdist workers: the same report as one process, one merged table and baseline.

On CPU there is one device, so both workers share it; what is checked here is everything but the GPU
pinning itself: the split, the merge, the one report and the one baseline update.
"""

import json
import re

import pytest

pytest_plugins = ["pytester"]

# twin: identical to eager; half_denoised: stops halfway, so its quality numbers are real numbers, not
# "identical", and their equality between the two runs means something.
VARIANTS = "--fluxperf-variants=twin,half_denoised"
XDIST = ["-n", "2", "--dist", "loadgroup"]
# Timings, and where the files went; everything else must match between the two runs.
TIMING = {
    "build_s",
    "build_phases_s",
    "peak_mem_gb",
    "eager_samples_s",
    "samples_s",
    "latency_s",
    "latency_iqr_s",
    "speedup",
    "speedup_ci",
    "eager_latency_s",
    "cpu_samples_s",
    "eager_cpu_samples_s",
    "cpu_share",
    "probe",
    "eager_probe",
    "warmup_s",
    "contention",
    "eager_contention",
    "sharing",
}


def _untimed(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k not in ("worker", "timings", "quality")}
    out["timings"] = {k: v for k, v in entry["timings"].items() if k not in TIMING}
    out["quality"] = {k: v for k, v in entry["quality"].items() if k != "worst_pair_png"}
    return out


def _comparable(results: dict) -> dict:
    return {
        "model_source": results["model_source"],
        "scenario": results["scenario"],
        "determinism": results["determinism"],
        "baseline_found": results["baseline_found"],
        "variants": {n: _untimed(v) for n, v in results["variants"].items()},
    }


def _workers_per_variant(stdout: str) -> dict[str, set[str]]:
    """From -v output: which workers ran each variant's tests ('[gw1] [ 40%] PASSED test_x.py::test_y[twin]@twin')."""
    ran: dict[str, set[str]] = {}
    for worker, variant in re.findall(r"\[(gw\d+)\] \[\s*\d+%\] \w+ \S+?\[(\w+)\]", stdout):
        ran.setdefault(variant, set()).add(worker)
    return ran


def test_two_workers_give_the_single_process_report_and_one_baseline_then_judge_against_it(suite, pytester):
    """Two workers record what one process records; then workers judge against the single process's baseline.
    One test, so that the judging sessions reuse the recording sessions' baseline instead of recording another."""
    root = pytester.path
    # In this process; the workers in theirs. One thread each (the suite fixture): their numbers are compared exactly.
    single = suite(VARIANTS, "--fluxperf-update-baselines", inprocess=True)
    # Its own cache folder: both workers render eager's reference images at once and must not clash.
    spread = suite(
        VARIANTS,
        "--fluxperf-update-baselines",
        *XDIST,
        "-v",
        f"--fluxperf-cache-dir={root / 'cache-x'}",
        f"--fluxperf-report-dir={root / 'reports-x'}",
        f"--fluxperf-baseline-dir={root / 'baselines-x'}",
    )
    # xdist's controller doesn't count the tests the workers deselected (fluxperf_variants marks).
    counts = lambda run: {
        k: v for k, v in run.parseoutcomes().items() if k in ("passed", "skipped", "failed", "errors")
    }
    # half_denoised stops halfway: its step count fails, the same way in both runs.
    assert counts(single) == {"passed": 9, "skipped": 18, "failed": 1}
    assert counts(spread) == counts(single)

    one = json.loads((root / "reports" / "results.json").read_text())
    two = json.loads((root / "reports-x" / "results.json").read_text())
    assert list(two["variants"]) == list(one["variants"]) == ["eager", "half_denoised", "twin"]
    assert _comparable(two) == _comparable(one)
    psnr = two["variants"]["half_denoised"]["quality"]["scores"]["psnr_db"]["values"]
    assert all(isinstance(x, float) for x in psnr), psnr  # real numbers, so the equality above was a real check

    # The work was split: each variant measured on one worker, which ran all of its tests, and both worked.
    measured_by = {n: v["worker"] for n, v in two["variants"].items()}
    assert set(measured_by.values()) == {"gw0", "gw1"}, measured_by
    assert _workers_per_variant(spread.stdout.str()) == {n: {w} for n, w in measured_by.items()}
    assert {v["worker"] for v in one["variants"].values()} == {None}

    # One summary table and one report.md, listing every variant; the workers' grids linked from it.
    out = spread.stdout.str()
    assert out.count("fluxperf summary") == 1 and out.count("baseline written: ") == 1
    summary = out[out.index("fluxperf summary") :]
    for name in ("eager", "twin", "half_denoised"):
        assert re.search(rf"^{name}\s+\d+\.\d+ ± ", summary, re.M), name
    md = (root / "reports-x" / "report.md").read_text()
    assert "pytest-xdist workers: gw0 on cpu: " in md and "gw1 on cpu: " in md
    for name in ("eager", "twin", "half_denoised"):
        assert f"| {name} | " in md, name
    for name in ("twin", "half_denoised"):
        assert f"![{name}](grid-{name}.png)" in md and (root / "reports-x" / f"grid-{name}.png").stat().st_size > 0

    # One baseline, written by the controller from every worker's variants, as the single process writes it.
    files = list((root / "baselines-x" / "cpu").glob("*.json"))
    assert len(files) == 1, files
    spread_base = json.loads(files[0].read_text())
    single_base = json.loads(next((root / "baselines" / "cpu").glob("*.json")).read_text())
    assert files[0].name == next((root / "baselines" / "cpu").glob("*.json")).name
    assert set(spread_base["variants"]) == {"eager", "twin", "half_denoised"}
    untimed = lambda base: {n: _untimed(e) for n, e in base["variants"].items()}
    assert untimed(spread_base) == untimed(single_base) and spread_base["key"] == single_base["key"]
    assert spread_base["variants"]["twin"]["timings"]["rounds"] == 20

    # ----- workers judge against the baseline, and the verdicts reach the report ---------------------------------
    # Against the single process's baseline, recorded above.
    single.assert_outcomes(passed=9, skipped=18, failed=1)
    path = next((pytester.path / "baselines" / "cpu").glob("*.json"))
    data = json.loads(path.read_text())
    data["variants"]["twin"]["tolerance"]["stack"] = 50.0
    path.write_text(json.dumps(data))
    # The controller checks the baseline: a worker's usage error would reach it as an opaque internal error.
    broken = suite(VARIANTS, *XDIST)
    assert broken.ret == pytest.ExitCode.USAGE_ERROR
    assert "field 'variants.twin.tolerance.stack': 50.0 is a fraction and must be < 1" in broken.stderr.str()

    for entry in data["variants"].values():
        # Speed on this shared CPU is noise: wide tolerances keep the verdicts stable; their presence is the point.
        entry["tolerance"].update(speed=0.9, stack=0.9)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))

    judged = suite(VARIANTS, "--fluxperf-require-baseline", *XDIST)
    # Two workers share this CPU's two cores with whatever else runs: a speed verdict may not PASS, but it must not
    # FAIL either (nothing changed), and when it doesn't pass it names the machine, not the variant.
    results = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert results["baseline_found"] and results["baseline_file"] == str(path)
    for name in ("twin", "half_denoised"):
        assert {"steps", "speedup", "stack"} <= results["variants"][name]["verdicts"].keys(), name
    # half_denoised's failures are its own (steps skipped); twin's speed passes or names the machine.
    failed = {n: [c for c, x in v["verdicts"].items() if x["status"] == "FAIL"] for n, v in results["variants"].items()}
    assert failed == {"eager": [], "twin": [], "half_denoised": ["steps", "speedup"]}, failed
    speed = results["variants"]["twin"]["verdicts"]["speedup"]
    assert speed["status"] == "PASS" or any(
        words in speed["message"]
        for words in ("the machine was shared", "the host is slower than its probe shows", "eager is slower")
    ), speed
    judged.assert_outcomes(passed=19, failed=2, skipped=7)
    row = re.search(r"^twin .*$", judged.stdout.str()[judged.stdout.str().index("fluxperf summary") :], re.M).group(0)
    assert re.search(r"\bspeedup (PASS|WARN|INCONCLUSIVE)\b", row) and re.search(r"\bstack (PASS|WARN)\b", row), row
