"""Baseline files: path layout, validation (of every schema version fluxperf reads), comparison keys, atomic
writes, and merging several recordings. A file's variants are fluxperf.result.Result entries with their tolerances."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from fluxperf import result as results
from fluxperf.metrics import METRICS
from fluxperf.result import SCHEMA_VERSION, Result, SchemaError

# Defaults a new baseline starts with; a person may edit them per variant and updates keep the edit.
# speed, stack and peak_mem are relative; each image metric's is absolute (fluxperf.metrics). speed and stack depend
# on what sets the pipeline's latency: a host-bound one moves more between sessions (see README, "How a session
# judges").
DEFAULT_TOLERANCE = {"speed": 0.03, "stack": 0.05, "peak_mem": 0.10, **{m: x.tolerance for m, x in METRICS.items()}}
HOST_BOUND_TOLERANCE = {"speed": 0.08, "stack": 0.10}
RELATIVE_TOLERANCES = ("speed", "stack", "peak_mem")


def default_tolerance(bound: str) -> dict:
    return {**DEFAULT_TOLERANCE, **(HOST_BOUND_TOLERANCE if bound == "host" else {})}


class BaselineError(Exception):
    """A broken or mismatched baseline: a setup problem, reported apart from regressions."""

    def __init__(self, path: Path, field: str, problem: str):
        self.path, self.field = path, field
        super().__init__(f"baseline {path}: field '{field}': {problem}")


@dataclass(frozen=True)
class Entry:
    """A variant's baseline: its result as recorded, and the tolerances a person may edit."""

    result: Result
    tolerance: dict

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        return cls(Result.from_json(data), dict(data["tolerance"]))


def entry(data: dict | None, name: str) -> Entry | None:
    """The variant's entry in a loaded baseline, or None."""
    found = (data or {}).get("variants", {}).get(name)
    return Entry.from_json(found) if found is not None else None


def path_for(root: Path, gpu_slug: str, scenario_slug: str) -> Path:
    return Path(root) / gpu_slug / f"{scenario_slug}.json"


def _check_tolerance(tol) -> None:
    if not isinstance(tol, dict):
        raise SchemaError("tolerance", "missing or not an object")
    unknown = sorted(set(tol) - set(DEFAULT_TOLERANCE))
    if unknown:
        # A mistyped key (speedup for speed) would otherwise be kept and silently do nothing.
        raise SchemaError(
            f"tolerance.{unknown[0]}", f"unknown tolerance; the known ones are {', '.join(DEFAULT_TOLERANCE)}"
        )
    for field in DEFAULT_TOLERANCE:
        if field not in tol:
            raise SchemaError(f"tolerance.{field}", "missing")
        results._number(f"tolerance.{field}", tol[field], positive=False)
    for field in RELATIVE_TOLERANCES:
        if tol[field] >= 1:
            raise SchemaError(f"tolerance.{field}", f"{tol[field]} is a fraction and must be < 1")


def _variant(name: str, data, version: int) -> dict:
    """One variant's entry checked, as version 3; a problem names the field as the file spells it."""
    if not isinstance(data, dict):
        raise SchemaError("", "expected an object")
    if version == 2:
        data = results.from_v2(data, name)
    try:
        results.check(data)
        _check_tolerance(data.get("tolerance"))
    except SchemaError as exc:
        raise SchemaError(results.v2_field(exc.field) if version == 2 else exc.field, exc.problem) from None
    return data


def _version(data, path: Path) -> int:
    if not isinstance(data, dict):
        raise BaselineError(path, "(top level)", "expected a JSON object")
    version = data.get("schema_version")
    if version == 1:
        raise BaselineError(
            path,
            "schema_version",
            "version 1 was recorded without the machine probe and the "
            "per-round samples that the speed rule now compares",
        )
    if version not in results.READS:
        raise BaselineError(
            path,
            "schema_version",
            f"unknown schema version {version!r}; this fluxperf reads {' and '.join(map(str, results.READS))}",
        )
    return version


def validate(data, path: Path) -> dict:
    """Check every field the verdicts read; raise BaselineError naming the first bad one. Returns the baseline as
    the current schema version (an older file's entries moved to today's layout, result.V2_NAMES)."""
    version = _version(data, path)
    for top in ("key", "variants"):
        if not isinstance(data.get(top), dict):
            raise BaselineError(path, top, "missing or not an object")
    variants = {}
    for name, entry in data["variants"].items():
        try:
            variants[name] = _variant(name, entry, version)
        except SchemaError as exc:
            raise BaselineError(path, f"variants.{name}{'.' if exc.field else ''}{exc.field}", exc.problem) from None
    return {**data, "schema_version": SCHEMA_VERSION, "variants": variants}


def load(path: Path) -> dict | None:
    """The validated baseline at `path` in the current schema, or None when there is no file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BaselineError(
            path, "(file)", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return validate(data, path)


def check_key(data: dict, expected: dict, path: Path) -> None:
    """A baseline recorded for another GPU, model or scenario must never be compared with this run."""
    for field, want in expected.items():
        have = data["key"].get(field)
        if have != want:
            raise BaselineError(
                path,
                f"key.{field}",
                f"recorded for {have!r}, this run is {want!r}; this file belongs to another GPU, model or scenario",
            )


def dumps(data: dict) -> str:
    # Sorted keys and one field per line so that a baseline update reads well in a diff.
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename: a killed run leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def updated(old: dict | None, key: dict, environment: dict, recorded_utc: str, measured: dict[str, dict]) -> dict:
    """A new baseline from this session's results (Result.to_json), keeping hand-edited tolerances and the variants
    not measured this session (`old` as load() returns it)."""
    variants = dict((old or {}).get("variants", {}))
    for name, entry in measured.items():
        previous = variants.get(name, {}).get("tolerance", {})
        bound = entry.get("timings", {}).get("bound", "unknown")
        variants[name] = {**entry, "tolerance": {**default_tolerance(bound), **previous}}
    return {
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "environment": environment,
        "commit": environment.get("commit"),
        "recorded_utc": recorded_utc,
        "variants": variants,
    }


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# What a merge takes the median of across recordings (the rest of an entry is the last recording's; the per-call
# samples are pooled).
MEDIAN_TIMINGS = ("speedup", "latency_s", "eager_latency_s", "peak_mem_gb", "build_s")


def _merged(entries: list[dict]) -> dict:
    pooled = reduce(lambda a, b: a.extended(b), [results.Timings.from_json(e["timings"]) for e in entries]).to_json()
    merged = {**entries[-1], "timings": {**entries[-1]["timings"], **{k: pooled[k] for k in results.PER_CALL}}}
    for field in MEDIAN_TIMINGS:
        merged["timings"][field] = _median(e["timings"].get(field) for e in entries)
    cis = [e["timings"]["speedup_ci"] for e in entries if e["timings"].get("speedup_ci")]
    merged["timings"]["speedup_ci"] = [_median(ci[i] for ci in cis) for i in (0, 1)]
    scores = merged["quality"]["scores"] = {m: dict(s) for m, s in entries[-1]["quality"]["scores"].items()}
    for metric, score in scores.items():
        score["mean"] = _median(e["quality"]["scores"].get(metric, {}).get("mean") for e in entries)
    merged["recordings"] = len(entries)
    return merged


def merge_recordings(recordings: list[dict]) -> dict:
    """Median per metric across several recordings of the same baseline (the rebaseline workflow), their samples
    pooled: pooled, they carry the sessions' spread between them, which one session's can't show."""
    first = recordings[-1]
    for other in recordings:
        if other["key"] != first["key"]:
            raise ValueError("recordings to merge were made for different scenarios")
    # Every variant any recording measured: one that failed to build in the last one still has the others.
    names = sorted({n for r in recordings for n in r["variants"]})
    variants = {n: _merged([r["variants"][n] for r in recordings if n in r["variants"]]) for n in names}
    return {**first, "variants": variants}


def compare_table(old: dict | None, new: dict, name: str) -> str:
    """Markdown rows of old vs new for the rebaseline pull request body."""
    rows = [f"### {name}", "", "| variant | metric | old | new | change |", "|---|---|---|---|---|"]
    for variant, entry in sorted(new["variants"].items()):
        before = (old or {}).get("variants", {}).get(variant, {}).get("timings", {})
        for field in ("speedup", "latency_s", "eager_latency_s", "peak_mem_gb"):
            a, b = before.get(field), entry["timings"].get(field)
            change = f"{(b / a - 1):+.1%}" if a and b else "new" if b is not None and a is None else ""
            fmt = lambda x: "–" if x is None else f"{x:.3f}"
            rows.append(f"| {variant} | {field} | {fmt(a)} | {fmt(b)} | {change} |")
    return "\n".join(rows) + "\n"


def merge_dirs(run_dirs: list[Path], out: Path) -> str:
    """Merge every baseline file found in all recording folders into `out`; return the old-vs-new table."""
    relative = sorted({p.relative_to(d) for d in map(Path, run_dirs) for p in d.rglob("*.json")})
    if not relative:
        raise ValueError(f"no baseline files under {', '.join(map(str, run_dirs))}")
    tables = []
    for rel in relative:
        recordings = [load(Path(d) / rel) for d in run_dirs if (Path(d) / rel).exists()]
        target = Path(out) / rel
        old = load(target)
        merged = merge_recordings(recordings)
        if old:
            # Hand-edited tolerances in the committed file survive a rebaseline.
            for name, entry in merged["variants"].items():
                entry["tolerance"] = {**entry["tolerance"], **old["variants"].get(name, {}).get("tolerance", {})}
            merged["variants"] = {**old["variants"], **merged["variants"]}
        write_atomic(target, dumps(validate(merged, target)))
        tables.append(compare_table(old, merged, str(rel)))
    return "\n".join(tables)


def write_session(path: Path, key: dict, results_doc: dict, recorded_utc: str) -> Path | None:
    """Write a session's measured variants (the results document report.document writes, or the merge of xdist
    workers') into the baseline at `path`, keeping edited tolerances and the variants this session did not
    measure."""
    measured = {n: v for n, v in results_doc["variants"].items() if v["status"] == "measured"}
    if not measured:
        return None
    try:
        old = load(path)
    except BaselineError:
        old = None  # a damaged or outdated file is what --fluxperf-update-baselines is told to rewrite
    data = updated(old, key, results_doc["environment"], recorded_utc, measured)
    write_atomic(path, dumps(validate(data, path)))
    return Path(path)
