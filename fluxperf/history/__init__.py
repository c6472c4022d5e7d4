"""History: every session's results kept in one store, creeping regressions found in it, and a dashboard of it.

What the plugin calls (only the controller under xdist, only rank 0 under torchrun, writes):

    from fluxperf import history
    store = history.open_store(where)   # a file path or a postgresql:// URL; HistoryError -> pytest.UsageError
    # test_history_holds[variant], before this session is appended:
    record = history.session_record(doc, kind)  # doc: report.document(...) or report.merge(...), as results.json
    points = store.series(record.gpu_slug, record.scenario, variant) + [history.point_of(record, variant)]
    status, details = history.judge(points, tolerance, accepted_utc=store.accepted_utc(...))
    text = history.message(details, variant, store.where)
    # at session end, after results.json is written:
    store.append(history.session_record(doc, kind))  # kind: "judged" | "recording"

Every stored variant entry is a fluxperf.result.Result's JSON; a Point's `result` reads it (once).
    store.close()

`python -m fluxperf history import|html|accept` is the command line (fluxperf/__main__.py).
"""

from __future__ import annotations

from pathlib import Path

from fluxperf.history.record import (
    KINDS,
    HistoryError,
    NotARecord,
    Point,
    SessionRecord,
    baseline_record,
    load_file,
    recording_kind,
    session_record,
)
from fluxperf.history.steps import MIN_SIZE, WINDOW, detect, judge, message, net_latencies
from fluxperf.history.store import SCHEMA_VERSION, Store, display, is_url, open_store

__all__ = [
    "KINDS",
    "HistoryError",
    "NotARecord",
    "Point",
    "SessionRecord",
    "baseline_record",
    "load_file",
    "recording_kind",
    "session_record",
    "MIN_SIZE",
    "WINDOW",
    "detect",
    "judge",
    "message",
    "net_latencies",
    "SCHEMA_VERSION",
    "Store",
    "display",
    "is_url",
    "open_store",
    "point_of",
    "default_location",
    "write_site",
]


def point_of(record: SessionRecord, variant: str) -> Point:
    """A variant of a session not stored yet as the point a series ends with (the session being judged)."""
    return Point(
        record.id,
        record.recorded_utc,
        record.kind,
        record.commit,
        record.variants[variant],
        record.session,
        record.label,
    )


def default_location() -> str | None:
    """Where the command line finds the history when --history isn't given: as a session would without
    --fluxperf-history (FLUXPERF_HISTORY, else history.sqlite in the cache dir); None where FLUXPERF_HISTORY is off."""
    from fluxperf import options

    return options.history_location(None, Path(options.cache_dir()).expanduser())


def write_site(store: Store, out_dir) -> Path:
    """A static dashboard of the whole store in out_dir/index.html, working offline; returns its path."""
    from fluxperf.history import site

    return site.write_site(store, Path(out_dir))
