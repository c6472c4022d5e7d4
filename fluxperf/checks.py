"""What the suite (fluxperf/suite) calls around a verdict: the variant's baseline entry (or a skip saying why), and the verdict
turned into the test's outcome: FAIL fails, WARN and INCONCLUSIVE warn, anything else passes."""

from __future__ import annotations

import warnings

import pytest


class FluxperfWarning(UserWarning):
    """A verdict that is reported but doesn't fail: inconclusive speed, a slower machine, a stale baseline."""


def warn(message: str) -> None:
    warnings.warn(FluxperfWarning(message), stacklevel=2)


def baseline_for(bench, name: str) -> dict:
    """This variant's baseline entry, or skip/fail (under --fluxperf-require-baseline) with the reason."""
    s = bench.settings
    if s.update_baselines:
        pytest.skip("--fluxperf-update-baselines: this session writes the baseline instead of judging against it")
    entry = bench.baseline_entry(name)
    if entry is None:
        what = f"no baseline for {name} in {bench.baseline_path}"
        if s.require_baseline:
            pytest.fail(f"{what} (--fluxperf-require-baseline); record one with: {s.rebaseline}", pytrace=False)
        pytest.skip(f"{what}; record one with: {s.rebaseline}")
    run = bench.results[name]
    if entry.get("params", {}) != run.params:
        pytest.skip(f"{name}: baseline recorded with {entry.get('params')}, this run uses {run.params}; "
                    "not comparable")
    return entry


def conclude(bench, name: str, check: str, verdict) -> None:
    """Record a verdict for the report and turn it into the test's outcome; a PASS against a stale baseline
    warns too."""
    from fluxperf import stats

    bench.record(name, check, verdict)
    if verdict.status == stats.FAIL:
        pytest.fail(verdict.message, pytrace=False)
    if verdict.status == stats.INCONCLUSIVE:
        warn(f"INCONCLUSIVE: {verdict.message}")
    elif verdict.status == stats.WARN or verdict.stale:
        warn(verdict.message)
