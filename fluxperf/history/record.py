"""What the history keeps of a session: the one mapping from a results dict (or a baseline file) to a record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

# judged: a session judged against a baseline; recording: one that wrote a baseline (or a baseline file imported).
KINDS = ("judged", "recording")


class HistoryError(Exception):
    """A history that can't be used as asked (damaged, newer, unreachable, or an input it can't read): a setup
    problem. The message names the file or the database URL (password hidden); the plugin turns it into a usage
    error."""


class NotARecord(HistoryError):
    """A JSON file that is neither a results.json nor a baseline: skipped when found in a folder."""


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
    variants: dict  # {variant: entry}, each entry as results.json has it
    label: str | None = None  # free text, e.g. "nightly" or "pr-123", to tell several runners' sessions apart
    source: str | None = None  # where an imported record came from


@dataclass(frozen=True)
class Point:
    """One variant in one stored session: what a series is made of."""

    session_id: str
    recorded_utc: str
    kind: str
    commit: str | None
    entry: dict
    session: dict = field(repr=False)
    label: str | None = None

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
    samples = entry.get("samples_s")
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


def session_record(results: dict, kind: str, label: str | None = None, source: str | None = None) -> SessionRecord:
    """The record of a session from its results dict (report.results_dict, or the merge of xdist workers').

    The only place that reads a results dict's layout: when results become a versioned type, this is what
    changes. Each variant's entry is kept as-is (samples, probes, bound, GPU busy, memory, quality, verdicts)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    where = source or "results"
    if not isinstance(results, dict) or not isinstance(results.get("variants"), dict):
        raise HistoryError(f"{where}: not a fluxperf results dict (no 'variants' object)")
    env = results.get("environment") or {}
    return SessionRecord(
        id=_digest(results),
        recorded_utc=_require(results, ("generated_utc",), where),
        kind=kind,
        gpu_slug=_require(results, ("environment", "gpu_slug"), where),
        scenario=_require(results, ("scenario", "slug"), where),
        commit=env.get("commit"),
        session={k: v for k, v in results.items() if k != "variants"},
        variants=dict(results["variants"]),
        label=label,
        source=source,
    )


def _entry_from_baseline(entry: dict) -> dict:
    # A baseline entry in the shape of a results.json entry, so every stored entry reads the same way.
    quality = entry.get("quality") or {}
    ci = entry.get("speedup_ci") or [None, None]
    out = {
        "status": "measured",
        "samples_s": entry["samples_s"],
        "eager_samples_s": entry["eager_samples_s"],
        "probe": entry["probe"],
        "eager_probe": entry["eager_probe"],
        "design": entry.get("design"),
        "bound": entry.get("bound", "unknown"),
        "gpu_busy": entry.get("gpu_busy"),
        "peak_mem_gb": entry.get("peak_mem_gb"),
        "build_s": entry.get("build_s"),
        "params": entry.get("params"),
        "latency_median_s": entry.get("latency_s"),
        "n": len(entry["samples_s"]),
        "speedup": {
            "value": entry["speedup"],
            "ci_low": ci[0],
            "ci_high": ci[1],
            "n": len(entry["samples_s"]),
            "design": entry.get("design"),
        },
        "quality": {
            m: {"mean": quality.get(f"{m}_mean")} for m in ("lpips", "ssim", "psnr_db") if f"{m}_mean" in quality
        },
        "verdicts": {},
        "baseline_entry": entry,
    }
    if quality.get("lpips_backbone") and "lpips" in out["quality"]:
        out["quality"]["lpips"]["backbone"] = quality["lpips_backbone"]
    return out


def baseline_record(data: dict, path: Path, label: str | None = None) -> SessionRecord:
    """The record of the session that recorded a baseline file (schema 2: samples and probes per variant)."""
    from fluxperf import baselines

    path = Path(path)
    try:
        baselines.validate(data, path)
    except baselines.BaselineError as exc:
        raise HistoryError(str(exc)) from None
    env = data.get("environment") or {}
    gpu_slug = env.get("gpu_slug") or path.parent.name
    session = {
        "generated_utc": data.get("recorded_utc"),
        "environment": {**env, "gpu_slug": gpu_slug},
        "scenario": {**data["key"], "slug": path.stem},
        "model_source": data["key"].get("model"),
        "baseline_file": str(path),
        "imported_from": "baseline",
    }
    return SessionRecord(
        id=_digest(data),
        recorded_utc=_require(data, ("recorded_utc",), str(path)),
        kind="recording",
        gpu_slug=gpu_slug,
        scenario=path.stem,
        commit=data.get("commit") or env.get("commit"),
        session=session,
        variants={name: _entry_from_baseline(e) for name, e in data["variants"].items()},
        label=label,
        source=str(path),
    )


def recording_kind(results: dict) -> str:
    """A results.json's kind when nobody says: verdict tests skip while a session writes its baseline, so a session
    whose variants hold no verdict at all recorded one."""
    return "judged" if any(v.get("verdicts") for v in results.get("variants", {}).values()) else "recording"


def load_file(path: Path, kind: str | None = None, label: str | None = None) -> SessionRecord:
    """A record from a results.json or a baseline file, told apart by their contents."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HistoryError(f"{path}: can't read it: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HistoryError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict) and "schema_version" in data and "key" in data:
        return baseline_record(data, path, label)
    if isinstance(data, dict) and "generated_utc" in data and "variants" in data:
        return session_record(data, kind or recording_kind(data), label, str(path))
    raise NotARecord(f"{path}: neither a fluxperf results.json nor a baseline file")


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
