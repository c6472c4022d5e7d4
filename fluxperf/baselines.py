"""Baseline files: path layout, validation, comparison keys, atomic writes, and merging several runs."""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from pathlib import Path

from fluxperf.contention import FIELDS as CONTENTION_FIELDS

# 2: per-round samples and the machine probe beside them, what the speed and stack rules compare.
SCHEMA_VERSION = 2

# Defaults a new baseline starts with; a person may edit them per variant and updates keep the edit.
# speed, stack and peak_mem are relative; ssim/lpips absolute; psnr_db in dB. speed and stack depend on what
# sets the pipeline's latency: a host-bound one moves more between sessions (see README, "How a session judges").
DEFAULT_TOLERANCE = {"speed": 0.03, "stack": 0.05, "peak_mem": 0.10, "ssim": 0.02, "lpips": 0.02, "psnr_db": 1.0}
HOST_BOUND_TOLERANCE = {"speed": 0.08, "stack": 0.10}
REQUIRED_POSITIVE = ("speedup", "latency_s", "eager_latency_s")
REQUIRED_SAMPLES = ("samples_s", "eager_samples_s")
PROBE_FIELDS = ("matmul_s", "copy_s", "launch_s")
OPTIONAL_NONNEGATIVE = ("peak_mem_gb", "build_s")
QUALITY_FIELDS = ("lpips_mean", "ssim_mean", "psnr_db_mean")
# Per-image values beside each mean: their spread over prompts sets how far a later session's mean may move.
QUALITY_VALUES = ("lpips_values", "ssim_values", "psnr_db_values")
BOUNDS = ("gpu", "host", "unknown")


def default_tolerance(bound: str) -> dict:
    return {**DEFAULT_TOLERANCE, **(HOST_BOUND_TOLERANCE if bound == "host" else {})}


class BaselineError(Exception):
    """A broken or mismatched baseline: a setup problem, reported apart from regressions."""

    def __init__(self, path: Path, field: str, problem: str):
        self.path, self.field = path, field
        super().__init__(f"baseline {path}: field '{field}': {problem}")


def path_for(root: Path, gpu_slug: str, scenario_slug: str) -> Path:
    return Path(root) / gpu_slug / f"{scenario_slug}.json"


def _number(path: Path, field: str, value, *, positive: bool, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BaselineError(path, field, f"expected a number, found {value!r}")
    if not math.isfinite(value):
        raise BaselineError(path, field, f"{value} is not allowed (must be finite)")
    if value < 0 or (positive and value == 0):
        raise BaselineError(path, field, f"{value} must be {'positive' if positive else 'non-negative'}")


def _samples(path: Path, field: str, values, minimum: int) -> None:
    if not isinstance(values, list) or len(values) < minimum:
        raise BaselineError(path, field, f"expected a list of at least {minimum} sample(s), found {values!r}"[:200])
    for i, value in enumerate(values):
        _number(path, f"{field}[{i}]", value, positive=True)


def validate(data, path: Path) -> dict:
    """Check every field the verdicts read; raise BaselineError naming the first bad one."""
    if not isinstance(data, dict):
        raise BaselineError(path, "(top level)", "expected a JSON object")
    version = data.get("schema_version")
    if version == 1:
        raise BaselineError(path, "schema_version", "version 1 was recorded without the machine probe and the "
                                                    "per-round samples that the speed rule now compares")
    if version != SCHEMA_VERSION:
        raise BaselineError(path, "schema_version", f"unknown schema version {version!r}; this fluxperf reads "
                                                    f"{SCHEMA_VERSION}")
    for top in ("key", "variants"):
        if not isinstance(data.get(top), dict):
            raise BaselineError(path, top, "missing or not an object")
    for name, entry in data["variants"].items():
        where = f"variants.{name}"
        if not isinstance(entry, dict):
            raise BaselineError(path, where, "expected an object")
        for field in REQUIRED_POSITIVE:
            if field not in entry:
                raise BaselineError(path, f"{where}.{field}", "missing")
            _number(path, f"{where}.{field}", entry[field], positive=True)
        for field in REQUIRED_SAMPLES:
            _samples(path, f"{where}.{field}", entry.get(field), minimum=2)
        for key in ("probe", "eager_probe"):
            probe = entry.get(key)
            if not isinstance(probe, dict):
                raise BaselineError(path, f"{where}.{key}", "missing or not an object")
            for field in PROBE_FIELDS:
                _samples(path, f"{where}.{key}.{field}", probe.get(field), minimum=1)
        if entry.get("bound", "unknown") not in BOUNDS:
            raise BaselineError(path, f"{where}.bound", f"{entry.get('bound')!r} is not one of {', '.join(BOUNDS)}")
        for field in OPTIONAL_NONNEGATIVE:
            _number(path, f"{where}.{field}", entry.get(field), positive=False, nullable=True)
        tol = entry.get("tolerance")
        if not isinstance(tol, dict):
            raise BaselineError(path, f"{where}.tolerance", "missing or not an object")
        unknown = sorted(set(tol) - set(DEFAULT_TOLERANCE))
        if unknown:
            # A mistyped key (speedup for speed) would otherwise be kept and silently do nothing.
            raise BaselineError(path, f"{where}.tolerance.{unknown[0]}",
                                f"unknown tolerance; the known ones are {', '.join(DEFAULT_TOLERANCE)}")
        for field in DEFAULT_TOLERANCE:
            if field not in tol:
                raise BaselineError(path, f"{where}.tolerance.{field}", "missing")
            _number(path, f"{where}.tolerance.{field}", tol[field], positive=False)
        for field in ("speed", "stack", "peak_mem"):
            if tol[field] >= 1:
                raise BaselineError(path, f"{where}.tolerance.{field}", f"{tol[field]} is a fraction and must be < 1")
        record = entry.get("contention")
        if record is not None:
            if not isinstance(record, dict) or any(not isinstance(v, list) for v in record.values()):
                raise BaselineError(path, f"{where}.contention", "expected an object of per-call lists")
            unknown = sorted(set(record) - set(CONTENTION_FIELDS))
            if unknown:
                raise BaselineError(path, f"{where}.contention.{unknown[0]}",
                                    f"unknown field; the known ones are {', '.join(CONTENTION_FIELDS)}")
        quality = entry.get("quality") or {}
        if not isinstance(quality, dict):
            raise BaselineError(path, f"{where}.quality", "expected an object")
        for field in QUALITY_FIELDS:
            # null means "not measured" (lpips) or "identical images" (psnr_db)
            _number(path, f"{where}.quality.{field}", quality.get(field), positive=False, nullable=True)
        for field in QUALITY_VALUES:
            values = quality.get(field)
            if values is None:
                continue  # recorded before per-image values were kept
            if not isinstance(values, list):
                raise BaselineError(path, f"{where}.quality.{field}", "expected a list of per-image values")
            for i, value in enumerate(values):
                _number(path, f"{where}.quality.{field}[{i}]", value, positive=False, nullable=True)
    return data


def load(path: Path) -> dict | None:
    """The validated baseline at `path`, or None when there is no file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BaselineError(path, "(file)", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None
    return validate(data, path)


def check_key(data: dict, expected: dict, path: Path) -> None:
    """A baseline recorded for another GPU, model or scenario must never be compared with this run."""
    for field, want in expected.items():
        have = data["key"].get(field)
        if have != want:
            raise BaselineError(path, f"key.{field}", f"recorded for {have!r}, this run is {want!r}; "
                                                      "this file belongs to another GPU, model or scenario")


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
    """A new baseline from this session's entries, keeping hand-edited tolerances and unmeasured variants."""
    variants = dict((old or {}).get("variants", {}))
    for name, entry in measured.items():
        previous = variants.get(name, {}).get("tolerance", {})
        variants[name] = {**entry, "tolerance": {**default_tolerance(entry.get("bound", "unknown")), **previous}}
    return {"schema_version": SCHEMA_VERSION, "key": key, "environment": environment,
            "commit": environment.get("commit"), "recorded_utc": recorded_utc, "variants": variants}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def merge_runs(runs: list[dict]) -> dict:
    """Median per metric across several recordings of the same baseline (the rebaseline workflow)."""
    first = runs[-1]
    for other in runs:
        if other["key"] != first["key"]:
            raise ValueError("runs to merge were recorded for different scenarios")
    variants = {}
    # Every variant any run measured: one that failed to build in the last run still has the others.
    for name in sorted({n for r in runs for n in r["variants"]}):
        entries = [r["variants"][name] for r in runs if name in r["variants"]]
        merged = dict(entries[-1])
        for field in ("speedup", "latency_s", "eager_latency_s", "peak_mem_gb", "build_s"):
            merged[field] = _median(e.get(field) for e in entries)
        merged["speedup_ci"] = [_median(e["speedup_ci"][i] for e in entries if e.get("speedup_ci")) for i in (0, 1)]
        # Pooled samples carry the sessions' spread between them, which one session's can't show.
        for field in REQUIRED_SAMPLES:
            merged[field] = [x for e in entries for x in e[field]]
        for key in ("probe", "eager_probe"):
            merged[key] = {f: [x for e in entries for x in e[key][f]] for f in PROBE_FIELDS}
        quality = {f: _median((e.get("quality") or {}).get(f) for e in entries) for f in QUALITY_FIELDS}
        merged["quality"] = {**(entries[-1].get("quality") or {}), **quality}
        merged["runs"] = len(entries)
        variants[name] = merged
    return {**first, "variants": variants}


def compare_table(old: dict | None, new: dict, name: str) -> str:
    """Markdown rows of old vs new for the rebaseline pull request body."""
    rows = [f"### {name}", "", "| variant | metric | old | new | change |", "|---|---|---|---|---|"]
    for variant, entry in sorted(new["variants"].items()):
        before = (old or {}).get("variants", {}).get(variant, {})
        for field in ("speedup", "latency_s", "eager_latency_s", "peak_mem_gb"):
            a, b = before.get(field), entry.get(field)
            change = f"{(b / a - 1):+.1%}" if a and b else "new" if b is not None and a is None else ""
            fmt = (lambda x: "–" if x is None else f"{x:.3f}")
            rows.append(f"| {variant} | {field} | {fmt(a)} | {fmt(b)} | {change} |")
    return "\n".join(rows) + "\n"


def merge_dirs(run_dirs: list[Path], out: Path) -> str:
    """Merge every baseline file found in all run folders into `out`; return the old-vs-new table."""
    relative = sorted({p.relative_to(d) for d in map(Path, run_dirs) for p in d.rglob("*.json")})
    if not relative:
        raise ValueError(f"no baseline files under {', '.join(map(str, run_dirs))}")
    tables = []
    for rel in relative:
        runs = [load(Path(d) / rel) for d in run_dirs if (Path(d) / rel).exists()]
        target = Path(out) / rel
        old = load(target)
        merged = merge_runs(runs)
        if old:
            # Hand-edited tolerances in the committed file survive a rebaseline.
            for name, entry in merged["variants"].items():
                entry["tolerance"] = {**entry["tolerance"], **old["variants"].get(name, {}).get("tolerance", {})}
            merged["variants"] = {**old["variants"], **merged["variants"]}
        write_atomic(target, dumps(validate(merged, target)))
        tables.append(compare_table(old, merged, str(rel)))
    return "\n".join(tables)


def entry(result) -> dict:
    """A variant's baseline entry from its measured result (bench.VariantResult)."""
    from fluxperf import quality, stats

    sp = result.speedup()
    q = {f"{m}_mean": quality.json_value(v["mean"]) for m, v in result.quality.items()}
    q.update({f"{m}_values": [quality.json_value(x) for x in v["values"]] for m, v in result.quality.items()})
    if result.quality:
        q["lpips_backbone"] = result.quality.get("lpips", {}).get("backbone")
    ci = [sp.ci_low, sp.ci_high]
    return {
        "speedup": sp.value, "speedup_ci": ci if all(map(math.isfinite, ci)) else None,
        "latency_s": result.latency()[0], "eager_latency_s": stats.median_spread(result.eager_s)[0],
        "samples_s": list(result.variant_s), "eager_samples_s": list(result.eager_s),
        "cpu_s": list(result.variant_cpu_s), "probe": {k: list(v) for k, v in result.probe.items()},
        "contention": {k: list(v) for k, v in result.contention.items()},
        "eager_probe": {k: list(v) for k, v in result.eager_probe.items()},
        "design": result.design, "bound": result.bound, "gpu_busy": result.gpu_busy,
        "peak_mem_gb": result.peak_mem_gb, "build_s": result.build_s, "rounds": len(result.variant_s),
        "params": result.params, "quality": q,
    }


def write_session(path: Path, key: dict, results: dict, recorded_utc: str) -> Path | None:
    """Write a session's measured variants (a report.results_dict, or the merge of xdist workers') into the
    baseline at `path`, keeping edited tolerances and the variants this session did not measure."""
    measured = {n: v["baseline_entry"] for n, v in results["variants"].items()
                if v["status"] == "measured" and v.get("baseline_entry")}
    if not measured:
        return None
    try:
        old = load(path)
    except BaselineError:
        old = None  # a damaged or outdated file is what --fluxperf-update-baselines is told to rewrite
    data = updated(old, key, results["environment"], recorded_utc, measured)
    write_atomic(path, dumps(validate(data, path)))
    return Path(path)
