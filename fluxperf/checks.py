"""What the suite (fluxperf/suite) calls around a verdict: the variant's baseline entry (or a skip saying why), what a
message names, and the verdict turned into the test's outcome: FAIL fails, WARN and INCONCLUSIVE warn, SKIP skips,
anything else passes."""

from __future__ import annotations

import warnings

import pytest

from fluxperf import baselines, environment, report, verdicts
from fluxperf import history as hist
from fluxperf.messages import Context
from fluxperf.metrics import METRICS
from fluxperf.rules import FAIL, INCONCLUSIVE, SKIP, WARN


class FluxperfWarning(UserWarning):
    """A verdict that is reported but doesn't fail: inconclusive speed, a slower machine, a stale baseline."""


def warn(message: str) -> None:
    warnings.warn(FluxperfWarning(message), stacklevel=2)


def baseline_for(bench, name: str) -> baselines.Entry:
    """This variant's baseline entry, or skip/fail (under --fluxperf-require-baseline) with the reason."""
    s = bench.settings
    if s.update_baselines:
        pytest.skip("--fluxperf-update-baselines: this session writes the baseline instead of judging against it")
    entry = baselines.entry(bench.baseline, name)
    if entry is None:
        what = f"no baseline for {name} in {bench.baseline_path}"
        if s.require_baseline:
            pytest.fail(f"{what} (--fluxperf-require-baseline); record one with: {s.rebaseline}", pytrace=False)
        pytest.skip(f"{what}; record one with: {s.rebaseline}")
    params = bench.results[name].params
    if entry.result.params != params:
        pytest.skip(f"{name}: baseline recorded with {entry.result.params}, this run uses {params}; not comparable")
    return entry


def context(bench, name: str) -> Context:
    """What a verdict message names besides numbers: the file, the rebaseline command, what changed."""
    libraries = bench.results[name].libraries if name in bench.results else ()
    software, host = environment.changes((bench.baseline or {}).get("environment") or {}, bench.env, libraries)
    return Context(str(bench.baseline_path), bench.settings.rebaseline, tuple(software), tuple(host))


def floor(bench, result, metric: str) -> float:
    """The floor each of the variant's images must meet against eager's: the metric's for a lossless or a lossy
    variant (fluxperf.metrics), or what --fluxperf-floor sets."""
    default = METRICS[metric].floor(result.lossless)
    return bench.settings.floors.get(result.name, {}).get(metric, default)


def history(bench, store, name: str):
    """The history verdict of this variant: its stored series (the sessions run with this session's parameters for
    it) with this session's point last, judged against the baseline's speed tolerance (a new baseline's for its bound
    where there is none). A history that can't be read skips, saying why; a recording session is warned, not failed:
    it is the rebaseline that would otherwise stop."""
    kind = "recording" if bench.settings.update_baselines else "judged"
    document = report.document(
        bench.scenario, bench.env, bench.baseline_path, bench.baseline, bench.determinism, bench.results
    )
    record = hist.session_record(document, kind)
    params = bench.results[name].params
    try:
        stored = store.series(record.gpu_slug, record.scenario, name)
        accepted = store.accepted_utc(record.gpu_slug, record.scenario, name)
    except hist.HistoryError as exc:
        pytest.skip(f"{name}: the history can't be read: {exc}")
    points = [p for p in stored if p.result.params == params] + [hist.point_of(record, name)]
    entry = baselines.entry(bench.baseline, name)
    tolerance = (entry.tolerance if entry else baselines.default_tolerance(bench.results[name].timings.bound))["speed"]
    verdict = verdicts.history(name, points, tolerance, accepted, hist.display(store.where))
    if kind == "recording" and verdict.status == FAIL:
        note = " (a warning, not a failure: this session records a baseline; the next judged session fails on it)"
        return verdicts.Verdict(WARN, verdict.message + note, verdict.details)
    return verdict


def conclude(bench, name: str, check: str, verdict) -> None:
    """Record a verdict for the report and turn it into the test's outcome; a PASS against a stale baseline
    warns too."""
    if verdict.status == SKIP:
        pytest.skip(verdict.message)
    bench.results[name].record(check, verdict)
    if verdict.status == FAIL:
        pytest.fail(verdict.message, pytrace=False)
    if verdict.status == INCONCLUSIVE:
        warn(f"INCONCLUSIVE: {verdict.message}")
    elif verdict.status == WARN or verdict.stale:
        warn(verdict.message)
