"""A variant's result, the one value that travels: measured by the bench, judged by the verdicts, written to
results.json and to the baseline. It serializes itself, and reads every schema version it has had.

Version history (a file states its version in `schema_version`):
1. Aggregates only (speedup, latencies): refused, as the speed rules compare per-round samples and the probe.
2. A baseline entry of flat keys: per-round samples, the machine probe beside each call, the aggregates.
   results.json had its own names for the same numbers.
3. One result for both, in three parts: `timings` (per-call samples, the probe and the sharing sensed beside them,
   and the numbers derived from them), `quality` (each metric's per-image scores and aggregates, fidelity) and
   `verdicts`. Read from version 2 through V2_NAMES: `cpu_s` became `timings.cpu_samples_s`, `quality.ssim_mean`
   became `quality.scores.ssim.mean`, the merge count `runs` became `recordings`, every other number moved under
   `timings` with its name.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from fluxperf import contention, metrics, stats
from fluxperf.probe import PROBES
from fluxperf.roofline import Work

SCHEMA_VERSION = 3
READS = (2, 3)

# A pipeline whose GPU is busy for less than this share of a call is host-bound: the host's speed sets its
# latency and the rules judge it net of the host probe. Measured on an H200 at 512²: eager 54-69% busy in
# sessions on a slow host (and it follows the host probe one for one); compile 86-94% and pruna_cache_compile
# 80-91%, which follow the GPU probe: between two sessions whose host probe moved -12% and -30%, their lower
# quartiles moved -2% (docs/results.md).
GPU_BOUND_BUSY = 0.75
BOUNDS = ("gpu", "host", "unknown")

# The numbers derived from the samples, written beside them. A file's are read as recorded: a person may edit a
# baseline's `bound` (README), and a merged baseline holds the medians of its recordings beside pooled samples.
RECORDED = (
    "latency_s",
    "latency_iqr_s",
    "eager_latency_s",
    "rounds",
    "speedup",
    "speedup_ci",
    "bound",
    "gpu_busy",
    "cpu_share",
)


class SchemaError(ValueError):
    """A result's JSON that can't be read: `field` is its path (timings.samples_s[3])."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"field '{field}': {problem}")


def json_number(value):
    """JSON has no infinity or NaN: they are written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def json_safe(obj):
    """A copy JSON can hold (infinities and NaN become null)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return json_number(obj)


@dataclass(frozen=True)
class Call:
    """One timed pipeline call and what was sensed around it."""

    eager: bool  # eager's call, or the variant's
    wall_s: float
    probe: dict  # the machine probe sample taken just before it
    contention: contention.Reading
    cpu_s: float | None = None  # the process's CPU seconds across it
    steps: int | None = None  # denoising steps it ran
    peak_mem_gb: float | None = None  # the variant's calls: peak GPU memory during it
    warmup: bool = False  # an untimed warm-up call: only its seconds are kept


def _per_probe() -> dict:
    return {k: [] for k in PROBES}


_per_reading = contention.empty  # (the field below named contention hides the module inside the class body)


@dataclass
class Timings:
    """A variant's timed calls with eager's beside them, what was sensed around each, and what was built.

    The numbers derived from them (latency, speedup, bound, ...) are methods: computed from the samples, or, for
    timings read from a file, as the file recorded them (RECORDED)."""

    device: str | None = None
    design: str = "paired"  # paired: eager and the variant alternate; blocks: eager's calls, then its
    samples_s: list = field(default_factory=list)  # the variant's seconds per image, call by call
    eager_samples_s: list = field(default_factory=list)  # eager's, of the same rounds (paired) or its block
    cpu_samples_s: list = field(default_factory=list)  # the process's CPU seconds of the same calls
    eager_cpu_samples_s: list = field(default_factory=list)
    probe: dict = field(default_factory=_per_probe)  # a probe sample before each variant call (PROBES)
    eager_probe: dict = field(default_factory=_per_probe)  # ... before each eager call
    contention: dict = field(default_factory=_per_reading)  # what shared the machine, per call (its FIELDS)
    eager_contention: dict = field(default_factory=_per_reading)
    steps: list = field(default_factory=list)  # denoising steps each timed call ran (both)
    warmup_s: dict = field(default_factory=lambda: {"eager": [], "variant": []})  # the untimed warm-up calls
    kernel_s: float | None = None  # GPU kernel time of one untimed call
    peak_mem_gb: float | None = None
    build_s: float | None = None  # the build and its warm-up call (compilation happens there)
    build_phases_s: dict = field(default_factory=dict)
    work: Work | None = None  # the transformer's counted work per image
    recorded: dict = field(default_factory=dict, repr=False)

    # ----- what one call adds --------------------------------------------------------------------------------------
    def add(self, call: Call) -> None:
        side = "eager_" if call.eager else ""
        if call.warmup:
            self.warmup_s["eager" if call.eager else "variant"].append(call.wall_s)
            return
        getattr(self, f"{side}samples_s").append(call.wall_s)
        if call.cpu_s is not None:
            getattr(self, f"{side}cpu_samples_s").append(call.cpu_s)
        if call.steps is not None:
            self.steps.append(call.steps)
        for k in PROBES:
            getattr(self, f"{side}probe")[k].append(call.probe[k])
        contention.append(getattr(self, f"{side}contention"), call.contention)
        if call.peak_mem_gb is not None:
            self.peak_mem_gb = max(self.peak_mem_gb or 0.0, call.peak_mem_gb)

    def extended(self, more: Timings) -> Timings:
        """These timings followed by `more` (further rounds, or the variant's block after eager's)."""
        lists = {name: getattr(self, name) + getattr(more, name) for name in _LISTS}
        dicts = {
            name: {
                k: getattr(self, name).get(k, []) + getattr(more, name).get(k, [])
                for k in {**getattr(self, name), **getattr(more, name)}
            }
            for name in _DICTS
        }
        peaks = [p for p in (self.peak_mem_gb, more.peak_mem_gb) if p is not None]
        return replace(self, **lists, **dicts, peak_mem_gb=max(peaks) if peaks else None, recorded={})

    def mirrored(self) -> Timings:
        """Eager's own timings, whose rounds time eager alone: its samples are also the eager side's."""
        return replace(
            self,
            eager_samples_s=list(self.samples_s),
            eager_cpu_samples_s=list(self.cpu_samples_s),
            eager_probe=copy.deepcopy(self.probe),
            eager_contention=copy.deepcopy(self.contention),
        )

    # ----- derived -------------------------------------------------------------------------------------------------
    def _derived(self, key: str, compute):
        return self.recorded[key] if key in self.recorded else compute()

    @property
    def latency_s(self) -> float | None:
        """Median seconds per image."""
        return self._derived("latency_s", lambda: _median_spread(self.samples_s)[0])

    @property
    def latency_iqr_s(self) -> float | None:
        return self._derived("latency_iqr_s", lambda: _median_spread(self.samples_s)[1])

    @property
    def eager_latency_s(self) -> float | None:
        return self._derived("eager_latency_s", lambda: _median_spread(self.eager_samples_s)[0])

    @property
    def rounds(self) -> int:
        return self._derived("rounds", lambda: len(self.samples_s))

    def speedup(self) -> stats.Speedup | None:
        """Eager's latency over the variant's, with its interval; None without samples on both sides."""
        if self.recorded.get("speedup") is not None:
            low, high = self.recorded.get("speedup_ci") or (math.nan, math.nan)
            return stats.Speedup(self.recorded["speedup"], low, high, self.rounds, self.design)
        if not self.samples_s or not self.eager_samples_s:
            return None
        return stats.speedup(self.eager_samples_s, self.samples_s, self.design == "paired")

    @property
    def gpu_busy(self) -> float | None:
        """Share of a call the GPU was busy; the rest it waited for the host."""

        def compute():
            if self.kernel_s is None or not self.samples_s:
                return None
            return min(1.0, self.kernel_s / self.latency_s)

        return self._derived("gpu_busy", compute)

    @property
    def bound(self) -> str:
        """What sets this pipeline's latency: "gpu", "host" (everything on a CPU device), or "unknown"."""

        def compute():
            if not self.samples_s:
                return "unknown"
            if self.kernel_s is None:
                # On a CPU device the host does all the work; on CUDA without the profiler it can't be told.
                return "unknown" if (self.device or "").startswith("cuda") else "host"
            return "gpu" if self.gpu_busy >= GPU_BOUND_BUSY else "host"

        return self._derived("bound", compute)

    @property
    def cpu_share(self) -> float | None:
        """Process CPU time over wall time, median over the timed calls."""

        def compute():
            if not self.cpu_samples_s:
                return None
            return stats.median_spread([c / w for c, w in zip(self.cpu_samples_s, self.samples_s)])[0]

        return self._derived("cpu_share", compute)

    @property
    def sharing(self) -> contention.Sharing:
        """What else used the machine during the variant's calls."""
        return contention.sharing(self.contention, self.samples_s)

    @property
    def all_probe(self) -> dict:
        return {k: list(self.probe[k]) + list(self.eager_probe[k]) for k in self.probe}

    def summary(self) -> dict:
        """The derived numbers, as results.json and the baseline hold them beside the samples."""
        sp = self.speedup()
        ci = [sp.ci_low, sp.ci_high] if sp else []
        sh = self.sharing
        return {
            "latency_s": self.latency_s,
            "latency_iqr_s": self.latency_iqr_s,
            "eager_latency_s": self.eager_latency_s,
            "rounds": self.rounds,
            "speedup": sp.value if sp else None,
            "speedup_ci": ci if ci and all(map(math.isfinite, ci)) else None,
            "bound": self.bound,
            "gpu_busy": self.gpu_busy,
            "cpu_share": self.cpu_share,
            "sharing": {**sh.as_dict(), "shared": sh.shared},
        }

    # ----- JSON ----------------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        raw = {name: getattr(self, name) for name in _RAW}
        return json_safe({**raw, "work": asdict(self.work) if self.work else None, **self.summary()})

    @classmethod
    def from_json(cls, data: dict) -> Timings:
        raw = {name: copy.deepcopy(data[name]) for name in _RAW if data.get(name) is not None}
        work = Work(**data["work"]) if data.get("work") else None
        return cls(**raw, work=work, recorded={k: data[k] for k in RECORDED if k in data})


_LISTS = ("samples_s", "eager_samples_s", "cpu_samples_s", "eager_cpu_samples_s", "steps")
_DICTS = ("probe", "eager_probe", "contention", "eager_contention", "warmup_s")
PER_CALL = _LISTS + _DICTS  # what grows call by call: concatenated by Timings.extended, pooled by a merge
_RAW = tuple(f.name for f in fields(Timings) if f.name not in ("work", "recorded"))


def _median_spread(samples) -> tuple[float | None, float | None]:
    return stats.median_spread(samples) if samples else (None, None)


@dataclass
class Score:
    """One metric over a variant's images against eager's: each image's value, the aggregate and the worst."""

    values: list | None = None
    mean: float | None = None  # the aggregate (metrics.Metric.aggregate): a mean, or PSNR pooled
    worst: float | None = None
    worst_item: list | None = None  # [prompt index, seed] of the worst image
    backbone: str | None = None  # the weights a learned metric ran with (LPIPS: alexnet or random)

    def to_json(self) -> dict:
        out = json_safe({"values": self.values, "mean": self.mean, "worst": self.worst, "worst_item": self.worst_item})
        return {**out, "backbone": self.backbone} if self.backbone else out

    @classmethod
    def from_json(cls, metric: str, data: dict) -> Score:
        read = lambda v: metrics.from_json(metric, v)
        values = data.get("values")
        return cls(
            None if values is None else [read(v) for v in values],
            read(data.get("mean")),
            read(data.get("worst")),
            data.get("worst_item"),
            data.get("backbone"),
        )


@dataclass
class Quality:
    """The variant's images against eager's: a Score per metric, why a metric is missing, and fidelity."""

    scores: dict = field(default_factory=dict)  # metric -> Score
    errors: dict = field(default_factory=dict)  # metric -> why it couldn't be computed (LPIPS without weights)
    worst_pair_png: str | None = None  # eager's and the variant's worst image, side by side
    fidelity: dict | None = None  # lossless variants: {"status", "details", "floor", "hint"} or {"skipped"}

    def to_json(self) -> dict:
        return {
            "scores": {m: s.to_json() for m, s in self.scores.items()},
            "errors": dict(self.errors),
            "worst_pair_png": self.worst_pair_png,
            "fidelity": json_safe(self.fidelity),
        }

    @classmethod
    def from_json(cls, data: dict) -> Quality:
        scores = {m: Score.from_json(m, s) for m, s in (data.get("scores") or {}).items()}
        return cls(scores, dict(data.get("errors") or {}), data.get("worst_pair_png"), data.get("fidelity"))


@dataclass
class Result:
    """One variant's measurement in one session."""

    name: str
    status: str = "pending"  # pending | measured | failed | skipped
    error: str | None = None
    worker: str | None = None  # the pytest-xdist worker that measured it; None in one process
    timed: bool = True
    lossless: bool = False
    adaptive: bool = False
    libraries: tuple = ()
    params: dict = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    quality: Quality = field(default_factory=Quality)
    verdicts: dict = field(default_factory=dict)  # check -> {"status", "message"}
    images: Any = None  # the judged images, uint8 N×3×H×W: in memory only
    timed_images: dict = field(default_factory=dict)  # item -> uint8 image of its first timed call: in memory only

    @classmethod
    def of(cls, variant, params: dict, worker: str | None = None) -> Result:
        """A registered variant's result before it is measured (`variant`: a fluxperf.variants.Variant)."""
        facts = {k: getattr(variant, k) for k in ("timed", "lossless", "adaptive", "libraries")}
        return cls(variant.name, worker=worker, params=params, **facts)

    def record(self, check: str, verdict) -> None:
        self.verdicts[check] = {"status": verdict.status, "message": verdict.message}

    def to_json(self) -> dict:
        head = {f.name: getattr(self, f.name) for f in fields(self) if f.name in _HEAD}
        return {**json_safe(head), "timings": self.timings.to_json(), "quality": self.quality.to_json()}

    @classmethod
    def from_json(cls, data: dict, version: int = SCHEMA_VERSION) -> Result:
        if version == 2:
            data = from_v2(data)
        head = {k: copy.deepcopy(data[k]) for k in _HEAD if k in data}
        head["libraries"] = tuple(head.get("libraries", ()))
        return cls(
            **head,
            timings=Timings.from_json(data.get("timings") or {}),
            quality=Quality.from_json(data.get("quality") or {}),
        )


_HEAD = ("name", "status", "error", "worker", "timed", "lossless", "adaptive", "libraries", "params", "verdicts")


# ----- version 2 -----------------------------------------------------------------------------------------------------

# Where each key of a version-2 baseline entry lives in version 3 (the quality means and per-image values follow
# the pattern in _v2_quality). Keys not named here (params, tolerance) keep their place.
V2_NAMES = {
    "samples_s": "timings.samples_s",
    "eager_samples_s": "timings.eager_samples_s",
    "cpu_s": "timings.cpu_samples_s",
    "probe": "timings.probe",
    "eager_probe": "timings.eager_probe",
    "contention": "timings.contention",
    "design": "timings.design",
    "bound": "timings.bound",
    "gpu_busy": "timings.gpu_busy",
    "peak_mem_gb": "timings.peak_mem_gb",
    "build_s": "timings.build_s",
    "speedup": "timings.speedup",
    "speedup_ci": "timings.speedup_ci",
    "latency_s": "timings.latency_s",
    "eager_latency_s": "timings.eager_latency_s",
    "rounds": "timings.rounds",
    "runs": "recordings",
}


def _v2_quality(quality):
    if not isinstance(quality, dict):
        return quality
    scores = {}
    for metric in metrics.METRICS:
        for old, new in ((f"{metric}_mean", "mean"), (f"{metric}_values", "values")):
            if old in quality:
                scores.setdefault(metric, {})[new] = quality[old]
    if "lpips_backbone" in quality and "lpips" in scores:
        scores["lpips"]["backbone"] = quality["lpips_backbone"]
    return {"scores": scores}


# Where each field of version 3 came from in version 2 ({new path: old path}), so that a problem found in the new
# layout names the field the file has.
V2_ORIGINS = {
    **{new: old for old, new in V2_NAMES.items()},
    **{
        f"quality.scores.{m}.{new}": f"quality.{m}_{old}"
        for m in metrics.METRICS
        for old, new in (("mean", "mean"), ("values", "values"))
    },
}


def from_v2(entry: dict, name: str = "") -> dict:
    """A version-2 baseline entry in version 3's layout."""
    out: dict = {"name": name, "status": "measured", "timings": {}}
    for key, value in entry.items():
        new = V2_NAMES.get(key, key)
        value = _v2_quality(value) if key == "quality" else value
        if new.startswith("timings."):
            out["timings"][new.split(".", 1)[1]] = value
        else:
            out[new] = value
    return out


def v2_field(path: str) -> str:
    """The field of a version-2 file a version-3 path came from (timings.samples_s[2] -> samples_s[2])."""
    for new in sorted(V2_ORIGINS, key=len, reverse=True):
        if path == new or path.startswith((f"{new}.", f"{new}[")):
            return V2_ORIGINS[new] + path[len(new) :]
    return path


# ----- checking a file's result --------------------------------------------------------------------------------------


def _number(field: str, value, *, positive: bool, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(field, f"expected a number, found {value!r}")
    if not math.isfinite(value):
        raise SchemaError(field, f"{value} is not allowed (must be finite)")
    if value < 0 or (positive and value == 0):
        raise SchemaError(field, f"{value} must be {'positive' if positive else 'non-negative'}")


def _samples(field: str, values, minimum: int) -> None:
    if not isinstance(values, list) or len(values) < minimum:
        raise SchemaError(field, f"expected a list of at least {minimum} sample(s), found {values!r}"[:200])
    for i, value in enumerate(values):
        _number(f"{field}[{i}]", value, positive=True)


def _check_timings(t) -> None:
    if not isinstance(t, dict):
        raise SchemaError("timings", "missing or not an object")
    for name in ("speedup", "latency_s", "eager_latency_s"):
        if name not in t:
            raise SchemaError(f"timings.{name}", "missing")
        _number(f"timings.{name}", t[name], positive=True)
    for name in ("samples_s", "eager_samples_s"):
        _samples(f"timings.{name}", t.get(name), minimum=2)
    for side in ("probe", "eager_probe"):
        if not isinstance(t.get(side), dict):
            raise SchemaError(f"timings.{side}", "missing or not an object")
        for k in PROBES:
            _samples(f"timings.{side}.{k}", t[side].get(k), minimum=1)
    if t.get("bound", "unknown") not in BOUNDS:
        raise SchemaError("timings.bound", f"{t.get('bound')!r} is not one of {', '.join(BOUNDS)}")
    for name in ("peak_mem_gb", "build_s"):
        _number(f"timings.{name}", t.get(name), positive=False, nullable=True)
    record = t.get("contention")
    if record is not None:
        if not isinstance(record, dict) or any(not isinstance(v, list) for v in record.values()):
            raise SchemaError("timings.contention", "expected an object of per-call lists")
        unknown = sorted(set(record) - set(contention.FIELDS))
        if unknown:
            raise SchemaError(
                f"timings.contention.{unknown[0]}", f"unknown field; the known ones are {', '.join(contention.FIELDS)}"
            )


def _check_quality(quality) -> None:
    if not isinstance(quality, dict):
        raise SchemaError("quality", "expected an object")
    for metric, score in (quality.get("scores") or {}).items():
        where = f"quality.scores.{metric}"
        if metric not in metrics.METRICS:
            raise SchemaError(where, f"unknown metric; the known ones are {', '.join(metrics.METRICS)}")
        if not isinstance(score, dict):
            raise SchemaError(where, "expected an object")
        # null means "not measured", or for PSNR "identical images"
        _number(f"{where}.mean", score.get("mean"), positive=False, nullable=True)
        values = score.get("values")
        if values is None:
            continue  # recorded before per-image values were kept
        if not isinstance(values, list):
            raise SchemaError(f"{where}.values", "expected a list of per-image values")
        for i, value in enumerate(values):
            _number(f"{where}.values[{i}]", value, positive=False, nullable=True)


def check(data: dict) -> None:
    """Every field a verdict reads from a recorded result, checked; SchemaError names the first bad one."""
    _check_timings(data.get("timings"))
    _check_quality(data.get("quality") or {})
