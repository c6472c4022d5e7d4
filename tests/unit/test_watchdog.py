"""A build or a call that runs too long ends its variant, never the session; a stopped session writes what finished."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from fluxperf import watchdog
from fluxperf.progress import Progress
# Fixtures: the tiny model, the real suite, cheap variants.
from tests.unit.test_e2e import SMALL, heavy_imports, in_this_process, inductor_cache, suite  # noqa: F401

pytest_plugins = ["pytester"]


def test_a_phase_past_its_limit_raises_naming_the_phase_and_the_option():
    start = time.monotonic()
    with pytest.raises(watchdog.PhaseTimeout) as info:
        with watchdog.limit(0.2, "compile's build and warm-up call", "--fluxperf-build-timeout"):
            time.sleep(5)
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert message.startswith("compile's build and warm-up call was stopped after 0 s, past its limit of 0.2 s")
    assert "--fluxperf-build-timeout=SECONDS" in message


def test_nested_limits_fire_the_earliest_and_a_finished_one_never_fires():
    with pytest.raises(watchdog.PhaseTimeout) as info:
        with watchdog.limit(5, "the build", "--fluxperf-build-timeout"):
            with watchdog.limit(0.1, "a call", "--fluxperf-call-timeout"):
                pass  # ends in time: its deadline must not fire later
            with watchdog.limit(0.2, "another call", "--fluxperf-call-timeout"):
                time.sleep(3)
    assert info.value.phase == "another call"
    with watchdog.limit(0.1, "quick", "--fluxperf-call-timeout"):
        pass
    time.sleep(0.3)  # nothing armed any more: no stray SIGALRM
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_no_limit_means_no_timer():
    with watchdog.limit(None, "x", "--fluxperf-call-timeout"), watchdog.limit(0, "y", "--fluxperf-call-timeout"):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_long_step_says_it_is_still_running_and_what_is_known():
    lines = []
    progress = Progress(lines.append, heartbeat_s=0.1, status=lambda: "inductor has generated 7 kernels so far")
    progress.begin("compile")
    with progress.step("building compile"):
        with progress.step("warm-up call"):
            time.sleep(0.35)
        time.sleep(0.25)
    beats = [line for line in lines if "still running" in line]
    # Only the innermost step speaks while it runs; the outer one speaks again once it is innermost.
    assert any("warm-up call: still running after 0 s (inductor has generated 7 kernels so far)" in b
               for b in beats), lines
    assert any("building compile: still running" in b for b in beats), lines
    warmup_done = lines.index(next(line for line in lines if "warm-up call done" in line))
    assert not any("building compile: still running" in b for b in lines[:warmup_done]), lines
    time.sleep(0.25)
    assert not [t for t in threading.enumerate() if t.name == "fluxperf-heartbeat"], "a heartbeat outlived its step"


def test_a_build_past_its_limit_fails_that_variant_and_the_session_goes_on(suite, pytester):
    result = suite("--fluxperf-variants=slow_build,twin", "--fluxperf-build-timeout=8", "-rE", inprocess=True)
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes["errors"] == 10, outcomes           # every test of slow_build
    assert outcomes["passed"] == 7, outcomes            # eager and twin measured, nothing to judge against
    assert "slow_build: slow_build's build and warm-up call was stopped after 8 s, past its limit of 8 s " \
           "(--fluxperf-build-timeout=8)" in out
    results = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert results["variants"]["slow_build"]["status"] == "failed"
    assert "PhaseTimeout" in results["variants"]["slow_build"]["error"]
    assert results["variants"]["twin"]["status"] == "measured"


def test_sigterm_mid_session_writes_the_reports_summary_and_baseline_of_what_finished(suite, pytester):
    """As a CI time limit does: SIGTERM while a variant's build hangs. The variants before it are in results.json,
    report.md, the terminal summary and the baseline update."""
    cache, base, rep = (pytester.path / d for d in ("cache", "baselines", "reports"))
    args = [sys.executable, "-m", "pytest", *SMALL, f"--fluxperf-cache-dir={cache}", f"--fluxperf-baseline-dir={base}",
            f"--fluxperf-report-dir={rep}", "--fluxperf-variants=twin,wedged", "--fluxperf-update-baselines",
            "--fluxperf-build-timeout=0"]
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
    assert {n: v["status"] for n, v in results["variants"].items()} == \
        {"eager": "measured", "twin": "measured", "wedged": "failed"}, results["variants"]
    assert "SIGTERM received" in results["variants"]["wedged"]["error"]
    assert (rep / "report.md").exists()
    written = json.loads(next((base / "cpu").glob("*.json")).read_text())
    assert set(written["variants"]) == {"eager", "twin"}
    assert "baseline written:" in out


def test_sigterm_outside_a_fluxperf_session_keeps_its_default(pytester):
    """The plugin changes SIGTERM only for sessions that run fluxperf's suite."""
    pytester.makepyfile(test_plain="def test_nothing():\n    import signal\n"
                                   "    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
