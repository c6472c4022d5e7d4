"""What the history keeps of a session: the one mapping from a results document (or a baseline file) to a record."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fluxperf import result as results_schema
from fluxperf.metrics import METRICS
from fluxperf.result import Result

# judged: a session judged against a baseline; recording: one that wrote a baseline (or a baseline file imported).
KINDS = ("judged", "recording")
# The result schema of a results.json written before the document had a `schema_version`: each variant's numbers
# in a layout of their own, beside the schema-2 baseline entry the session would write (`baseline_entry`).
UNVERSIONED = 0


class HistoryError(Exception):
    """A history that can't be used as asked (damaged, newer, unreachable, or an input it can't read): a setup
    problem. The message names the file or the database URL (password hidden); the plugin turns it into a usage
    error."""


class NotARecord(HistoryError):
    """A file that holds no session to import: not JSON, neither a results.json nor a baseline, or one that fails
    its checks (a damaged baseline). Skipped, with the reason, when found in a folder; an error when named."""


@dataclass(frozen=True)
class SessionRecord:
    """One session as the store keeps it: a few indexed fields, the session's header and each variant's entry."""

    id: str  # sha256 of the session's canonical JSON: appending the same session twice adds nothing
    recorded_utc: str  # UTC ISO-8601, when the session ran
    kind: str  # one of KINDS
    gpu_slug: str
    scenario: str  # the scenario's slug, the baseline file's name
    commit: str | None
    session: dict  # everything but the variants: environment, scenario, baseline file and its date, ...
    variants: dict  # {variant: entry}, each entry a fluxperf.result.Result's JSON
    label: str | None = None  # free text, e.g. "nightly" or "pr-123", to tell several runners' sessions apart
    source: str | None = None  # where an imported record came from
    result_schema: int = results_schema.SCHEMA_VERSION  # the Result schema the entries are in


@dataclass(frozen=True)
class Point:
    """One variant in one stored session: what a series is made of."""

    session_id: str
    recorded_utc: str
    kind: str
    commit: str | None
    entry: dict  # the variant's Result JSON, in the current schema (the store reads older ones into it)
    session: dict = field(repr=False)
    label: str | None = None

    @functools.cached_property
    def result(self) -> Result:
        """The entry read once: a series is judged at every session, each time over the same points."""
        return Result.from_json(self.entry)

    @property
    def environment(self) -> dict:
        return self.session.get("environment") or {}

    @property
    def baseline_recorded_utc(self) -> str | None:
        """When the baseline this session was judged against was recorded (None for a recording session)."""
        return self.session.get("baseline_recorded_utc") if self.kind == "judged" else None


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def samples_digest(entry: dict) -> str | None:
    """The fingerprint of a variant's timed samples: one measurement imported twice, once from a results.json and
    once from the baseline that session wrote, is stored once."""
    samples = (entry.get("timings") or {}).get("samples_s")
    return _digest(samples) if samples else None


def _require(data: dict, path: tuple, where: str):
    value = data
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if value in (None, ""):
        raise HistoryError(
            f"{where}: field '{'.'.join(path)}' is missing; can't tell which GPU, scenario or date "
            "the session belongs to"
        )
    return value


def unversioned_entry(entry: dict, name: str) -> dict:
    """A variant of a results.json written before results had a schema version, as a Result's JSON: the schema-2
    baseline entry it carried (result.from_v2) with the entry's status, error and verdicts; a variant that wasn't
    measured has no baseline entry and keeps its status and error only. The one place that layout is read: in files
    imported, and in histories of store schema 1, which stored such entries."""
    kept = {"name": name, "status": entry.get("status"), "error": entry.get("error")}
    if not entry.get("baseline_entry"):
        return kept
    return {**results_schema.from_v2(entry["baseline_entry"], name), **kept, "verdicts": entry.get("verdicts") or {}}


def current_entry(entry: dict, schema: int, name: str) -> dict:
    """A stored entry of Result schema `schema` as the current schema's JSON; ValueError for a newer schema."""
    if schema == results_schema.SCHEMA_VERSION:
        return entry
    if schema == UNVERSIONED:
        return unversioned_entry(entry, name)
    raise ValueError(
        f"results of schema version {schema}; this fluxperf reads {results_schema.SCHEMA_VERSION} "
        "and results.json files written before they had a version"
    )


def session_record(results: dict, kind: str, label: str | None = None, source: str | None = None) -> SessionRecord:
    """The record of a session from its results document (report.document, or report.merge of xdist workers').

    Each variant's entry is kept as the document has it, a fluxperf.result.Result's JSON (its timings with the
    probe beside every call, quality, verdicts). A results.json written before the document had a `schema_version`
    is read by unversioned_entry."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    where = source or "results"
    if not isinstance(results, dict) or not isinstance(results.get("variants"), dict):
        raise HistoryError(f"{where}: not a fluxperf results document (no 'variants' object)")
    bad = next((n for n, e in results["variants"].items() if not isinstance(e, dict)), None)
    if bad is not None:
        raise HistoryError(f"{where}: field 'variants.{bad}': expected an object")
    version = results.get("schema_version", UNVERSIONED)
    if version not in (UNVERSIONED, results_schema.SCHEMA_VERSION):
        raise HistoryError(
            f"{where}: field 'schema_version': {version!r} is not one this fluxperf reads "
            f"({results_schema.SCHEMA_VERSION}, or none: a results.json from before results had a version)"
        )
    variants = {n: current_entry(e, version, n) for n, e in results["variants"].items()}
    env = results.get("environment") or {}
    return SessionRecord(
        id=_digest(results),
        recorded_utc=_require(results, ("generated_utc",), where),
        kind=kind,
        gpu_slug=_require(results, ("environment", "gpu_slug"), where),
        scenario=_require(results, ("scenario", "slug"), where),
        commit=env.get("commit"),
        session={k: v for k, v in results.items() if k != "variants"},
        variants=variants,
        label=label,
        source=source,
    )


def baseline_record(data: dict, path: Path, label: str | None = None) -> SessionRecord:
    """The record of the session that recorded a baseline file (schema 2 or 3, read as 3 by baselines.validate).
    Each variant's entry is the baseline's: a Result's JSON with the baseline's `tolerance` beside it."""
    from fluxperf import baselines

    path = Path(path)
    try:
        current = baselines.validate(data, path)
    except baselines.BaselineError as exc:
        raise HistoryError(str(exc)) from None
    if (current.get("recordings") or 1) > 1:
        # A merge pools several sessions' samples under the last one's date: not one session's measurement.
        raise NotARecord(
            f"{path}: a merge of {current['recordings']} recordings (python -m fluxperf merge-baselines); import the "
            "recordings' own results.json files instead"
        )
    env = current.get("environment") or {}
    gpu_slug = env.get("gpu_slug") or path.parent.name
    session = {
        "generated_utc": current.get("recorded_utc"),
        "environment": {**env, "gpu_slug": gpu_slug},
        "scenario": {**current["key"], "slug": path.stem},
        "model_source": current["key"].get("model"),
        "baseline_file": str(path),
        "imported_from": "baseline",
    }
    return SessionRecord(
        # Of the file as written: the same file imported again is the same session, whichever schema it is in.
        id=_digest(data),
        recorded_utc=_require(current, ("recorded_utc",), str(path)),
        kind="recording",
        gpu_slug=gpu_slug,
        scenario=path.stem,
        commit=current.get("commit") or env.get("commit"),
        session=session,
        variants={name: {**e, "name": name} for name, e in current["variants"].items()},
        label=label,
        source=str(path),
    )


# The checks that compare a session with its baseline: they skip while a session writes its baseline. The others
# (steps, floors, fidelity, history) judge every session.
AGAINST_BASELINE = ("speedup", "stack", "peak_mem", *METRICS)


def recording_kind(results: dict) -> str:
    """A results.json's kind when nobody says: a session in which no variant holds a verdict against the baseline
    recorded one (or had none to be judged against)."""
    judged = any(set(v.get("verdicts") or {}) & set(AGAINST_BASELINE) for v in results.get("variants", {}).values())
    return "judged" if judged else "recording"


def load_file(path: Path, kind: str | None = None, label: str | None = None) -> SessionRecord:
    """A record from a results.json or a baseline file, told apart by their contents."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HistoryError(f"{path}: can't read it: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotARecord(f"{path}: not valid JSON: {exc}") from None
    try:
        if isinstance(data, dict) and "schema_version" in data and "key" in data:
            return baseline_record(data, path, label)
        if isinstance(data, dict) and "generated_utc" in data and "variants" in data:
            return session_record(data, kind or recording_kind(data), label, str(path))
    except NotARecord:
        raise
    except HistoryError as exc:
        raise NotARecord(str(exc)) from None
    raise NotARecord(f"{path}: neither a fluxperf results.json nor a baseline file")


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
