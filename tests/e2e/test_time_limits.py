"""A build that runs too long ends its variant, never the session; a stopped session writes what finished."""

import json
import signal
import subprocess
import sys

import pytest

from tests.sessions import SMALL

pytest_plugins = ["pytester"]


def test_a_build_past_its_limit_fails_that_variant_and_the_session_goes_on(suite, pytester):
    result = suite("--fluxperf-variants=slow_build,twin", "--fluxperf-build-timeout=8", "-rE", inprocess=True)
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes["errors"] == 11, outcomes  # every test of slow_build
    assert outcomes["passed"] == 7, outcomes  # eager and twin measured, nothing to judge against
    assert (
        "slow_build: slow_build's build and warm-up call was stopped after 8 s, past its limit of 8 s "
        "(--fluxperf-build-timeout=8)" in out
    )
    results = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert results["variants"]["slow_build"]["status"] == "failed"
    assert "PhaseTimeout" in results["variants"]["slow_build"]["error"]
    assert results["variants"]["twin"]["status"] == "measured"


def test_sigterm_mid_session_writes_the_reports_summary_and_baseline_of_what_finished(suite, pytester):
    """As a CI time limit does: SIGTERM while a variant's build hangs. The variants before it are in results.json,
    report.md, the terminal summary and the baseline update."""
    cache, base, rep = (pytester.path / d for d in ("cache", "baselines", "reports"))
    args = [
        sys.executable,
        "-m",
        "pytest",
        *SMALL,
        f"--fluxperf-cache-dir={cache}",
        f"--fluxperf-baseline-dir={base}",
        f"--fluxperf-report-dir={rep}",
        "--fluxperf-variants=twin,wedged",
        "--fluxperf-update-baselines",
        "--fluxperf-build-timeout=0",
    ]
    proc = subprocess.Popen(args, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "wedged: building wedged ..." in line:
                break
        else:
            pytest.fail("the session ended before wedged was built:\n" + "".join(lines))
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "SIGTERM received" in out and "fluxperf summary" in out, out
    results = json.loads((rep / "results.json").read_text())
    assert {n: v["status"] for n, v in results["variants"].items()} == {
        "eager": "measured",
        "twin": "measured",
        "wedged": "failed",
    }, results["variants"]
    assert "SIGTERM received" in results["variants"]["wedged"]["error"]
    assert (rep / "report.md").exists()
    written = json.loads(next((base / "cpu").glob("*.json")).read_text())
    assert set(written["variants"]) == {"eager", "twin"}
    assert "baseline written:" in out


def test_sigterm_outside_a_fluxperf_session_keeps_its_default(pytester):
    """The plugin changes SIGTERM only for sessions that run fluxperf's suite."""
    pytester.makepyfile(
        test_plain="def test_nothing():\n    import signal\n"
        "    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
