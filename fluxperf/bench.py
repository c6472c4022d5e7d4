"""The session's measurements: build each variant once, time it against eager, render and score its images."""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fluxperf import baselines, environment, progress, quality, stats, timing, variants
from fluxperf.models import build_pipeline, max_sequence_length, torch_dtype
from fluxperf.scenario import Scenario

# Eager rendering the same prompt and seed twice should be bit-identical. On GPUs whose kernels are
# nondeterministic it may not be; below this PSNR the session warns that quality verdicts are unreliable.
DETERMINISM_MIN_PSNR_DB = 40.0
WARMUP_ROUNDS = 2
# A baseline is the yardstick for every later session, so it is recorded with more rounds than a check
# takes: the seeded simulations in tests/unit/test_stats.py need 20 to catch a 2×-tolerance slowdown
# in 95% of sessions.
BASELINE_ROUNDS = 20

# Floors each image must meet against eager. Lossless variants (compile) must be near-identical.
LOSSLESS_FLOOR = {"ssim": 0.98, "psnr_db": 35.0, "lpips": 0.02}
LOSSY_FLOOR = {"ssim": 0.5, "psnr_db": 15.0, "lpips": 0.4}


@dataclass(frozen=True)
class Settings:
    """Everything the plugin resolved from options; plain values only."""
    scenario: Scenario
    variants: tuple[str, ...]
    params: dict[str, Any]
    rounds: int = 5
    max_rounds: int = 40
    cache_dir: Path = Path("~/.cache/fluxperf").expanduser()
    baseline_dir: Path = Path("baselines")
    report_dir: Path = Path("reports")
    repo_dir: Path = Path(".")
    update_baselines: bool = False
    require_baseline: bool = False
    lpips_random_backbone: bool = False
    floors: dict[str, dict[str, float]] = field(default_factory=dict)
    grid_images: int = 4
    # The pytest-xdist worker (gw0, gw1, ...) this session runs in; None in a single-process session.
    worker: str | None = None


@dataclass
class VariantResult:
    name: str
    status: str = "pending"                 # measured | failed | skipped
    error: str | None = None
    timed: bool = True
    lossless: bool = False
    params: dict = field(default_factory=dict)
    build_s: float | None = None
    phases: dict = field(default_factory=dict)
    eager_s: list[float] = field(default_factory=list)
    variant_s: list[float] = field(default_factory=list)
    paired: bool = True
    peak_mem_gb: float | None = None
    quality: dict = field(default_factory=dict)     # metric -> {"values", "mean", "worst", "worst_item"}
    lpips_error: str | None = None
    worst_pair_png: str | None = None
    verdicts: dict = field(default_factory=dict)    # check -> {"status", "message"}
    images: torch.Tensor | None = None              # judged images, uint8 N×3×H×W (not written to JSON)
    timed_images: dict = field(default_factory=dict)  # item -> uint8 image from the first timed call

    def speedup(self) -> stats.Speedup:
        return stats.speedup(self.eager_s, self.variant_s, self.paired)

    def latency(self) -> tuple[float, float]:
        return stats.median_spread(self.variant_s)

    def baseline_entry(self) -> dict:
        sp = self.speedup()
        q = {f"{m}_mean": quality.json_value(v["mean"]) for m, v in self.quality.items()}
        if self.quality:
            q["lpips_backbone"] = self.quality.get("lpips", {}).get("backbone")
        return {
            "speedup": sp.value, "speedup_ci": [sp.ci_low, sp.ci_high] if math.isfinite(sp.ci_low) else None,
            "latency_s": self.latency()[0], "eager_latency_s": stats.median_spread(self.eager_s)[0],
            "peak_mem_gb": self.peak_mem_gb, "build_s": self.build_s, "rounds": len(self.variant_s),
            "params": self.params, "quality": q,
        }


class LiveRun:
    """A built variant, held until its tests are done, able to take more timing rounds."""

    def __init__(self, bench: "Bench", result: VariantResult, pipe, eager_pipe):
        self.bench, self.result, self.pipe, self.eager_pipe = bench, result, pipe, eager_pipe

    def more_rounds(self, k: int) -> None:
        self.bench.time_rounds(self, k)


class Bench:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.scenario = settings.scenario
        self.device = settings.scenario.device
        self.worker = settings.worker
        self.results: dict[str, VariantResult] = {}
        self.baseline: dict | None = None
        self.baseline_path: Path | None = None
        self.determinism: dict | None = None
        self._base = None
        self._reference: torch.Tensor | None = None
        self._latents: dict[int, torch.Tensor] = {}
        self._lpips = None

    # ----- environment and keys -------------------------------------------------------------------
    @property
    def env(self) -> dict:
        return environment.describe(self.device, str(self.settings.repo_dir))

    def baseline_key(self, env: dict | None = None) -> dict:
        """The key a baseline must match: this scenario on the GPU of `env` (this process's by default)."""
        return {"gpu": (env or self.env)["gpu"], **self.scenario.key()}

    def locate_baseline(self, env: dict | None = None) -> Path:
        return baselines.path_for(self.settings.baseline_dir, (env or self.env)["gpu_slug"], self.scenario.slug)

    def load_baseline(self) -> None:
        """Read and validate this run's baseline; BaselineError for a broken or mismatched file."""
        self.baseline_path = self.locate_baseline()
        self.baseline = baselines.load(self.baseline_path)
        if self.baseline is not None:
            baselines.check_key(self.baseline, self.baseline_key(), self.baseline_path)

    # ----- pipelines ------------------------------------------------------------------------------
    def base(self):
        """The eager pipeline, built on first use and rebuilt after an in-place variant consumed it."""
        if self._base is None:
            progress.begin("eager")
            with progress.step(f"building the {self.scenario.model} pipeline on {self.device}", key="load_s"):
                self._base = build_pipeline(self.scenario, progress.say)
            with progress.step("warm-up call"):
                self.render(self._base, self.scenario.items[0])
        return self._base

    def _clone(self, pipe):
        # A new pipeline object over the same modules: a variant that wraps or replaces a module
        # (compile) leaves eager's pipeline untouched, so both can be timed in turn.
        clone = type(pipe)(**pipe.components)
        clone.set_progress_bar_config(disable=True)
        return clone

    def latents(self, seed: int) -> torch.Tensor:
        """Initial noise from a CPU generator, so that it is identical on every GPU."""
        if seed not in self._latents:
            pipe = self.base()
            sc = self.scenario
            channels = pipe.transformer.config.in_channels // 4
            h = 2 * (sc.height // (pipe.vae_scale_factor * 2))
            w = 2 * (sc.width // (pipe.vae_scale_factor * 2))
            noise = torch.randn((1, channels, h, w), generator=torch.Generator("cpu").manual_seed(seed))
            packed = pipe._pack_latents(noise, 1, channels, h, w)
            self._latents[seed] = packed.to(self.device, torch_dtype(sc.dtype))
        return self._latents[seed]

    def render(self, pipe, item) -> torch.Tensor:
        """One pipeline call, prompt in and image out (a float tensor on the device)."""
        p, seed = item
        sc = self.scenario
        return pipe(prompt=sc.prompts[p], height=sc.height, width=sc.width, num_inference_steps=sc.steps,
                    guidance_scale=sc.guidance, latents=self.latents(seed), output_type="pt",
                    max_sequence_length=max_sequence_length(sc.model)).images

    @staticmethod
    def to_u8(images: torch.Tensor) -> torch.Tensor:
        return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    # ----- eager reference images -----------------------------------------------------------------
    def reference_cache(self) -> Path:
        env = self.env
        key = {"scenario": self.baseline_key(), "versions": {k: env["versions"].get(k)
               for k in ("torch", "diffusers", "transformers")}, "cuda": env["cuda"]}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.settings.cache_dir / "reference" / env["gpu_slug"] / f"{self.scenario.slug}-{digest}.pt"

    def reference(self) -> torch.Tensor:
        """Eager's images for every prompt and seed: from the disk cache, or rendered once and cached."""
        if self._reference is None:
            path = self.reference_cache()
            if path.exists():
                progress.say(f"eager reference images from {path}")
                self._reference = torch.load(path, weights_only=True)
            else:
                pipe = self.base()
                progress.begin("eager")
                with progress.step(f"rendering {len(self.scenario.items)} reference images"):
                    self._reference = torch.cat([self.to_u8(self.render(pipe, it)) for it in self.scenario.items])
                path.parent.mkdir(parents=True, exist_ok=True)
                # xdist workers may render the same reference at once: each writes its own temporary
                # file and renames it into place, so a reader never sees a half-written one.
                tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
                torch.save(self._reference, tmp)
                tmp.replace(path)
        return self._reference

    # ----- measuring a variant --------------------------------------------------------------------
    def params_for(self, variant: variants.Variant) -> dict:
        chosen = {k: self.settings.params.get(k, default) for k, default in variant.params.items()}
        return chosen

    def measure(self, name: str) -> LiveRun:
        """Build, warm up, time and render one variant. Raises what the build raised; the result records it."""
        variant = variants.get(name)
        result = VariantResult(name, timed=variant.timed, lossless=variant.lossless,
                               params=self.params_for(variant), paired=not variant.in_place)
        self.results[name] = result
        rounds = max(self.settings.rounds, BASELINE_ROUNDS) if self.settings.update_baselines \
            else self.settings.rounds
        live = None
        try:
            if variant.check is not None:
                variant.check(self.scenario, result.params)
            reference = self.reference() if name != "eager" else None
            base = self.base()
            live = LiveRun(self, result, None, base)
            if variant.in_place:
                # The build will change eager's modules: time eager first, in a block, then give it away.
                progress.begin(name)
                with progress.step(f"timing eager before the in-place build ({rounds} images)"):
                    for i in range(rounds):
                        item = self.scenario.items[i % len(self.scenario.items)]
                        result.eager_s.append(timing.timed(lambda: self.render(base, item), self.device)[0])
                self._base, live.eager_pipe = None, None
            progress.begin(name)
            timing.reset_peak(self.device)
            with progress.step(f"building {name}", key="build_s"):
                params = {**result.params, "cache_dir": self.settings.cache_dir / "artifacts" / name}
                pipe = variant.build(self._clone(base), self.scenario, params)
                with progress.step("warm-up call (compilation and autotuning happen here)"):
                    self.render(pipe, self.scenario.items[0])
            result.phases = progress.phases()
            result.build_s = result.phases.pop("build_s")
            live.pipe = pipe
            # Eager's latency keeps falling for several images after a build (allocator, clocks):
            # untimed warm-up rounds keep that out of the samples.
            with progress.step(f"{WARMUP_ROUNDS} untimed warm-up rounds"):
                self.time_rounds(live, WARMUP_ROUNDS, record=False)
            with progress.step(f"timing {rounds} rounds"):
                self.time_rounds(live, rounds)
            if name == "eager":
                self.check_determinism(result)
            else:
                with progress.step(f"rendering {len(self.scenario.items)} images for quality"):
                    result.images = torch.cat([self.to_u8(self.render(pipe, it)) for it in self.scenario.items])
                self.score(result, reference)
            result.status = "measured"
            return live
        except variants.Unavailable as exc:
            result.status, result.error = "skipped", str(exc)
            raise
        except BaseException as exc:
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}".strip()
            self.close(live.pipe if live is not None else None)
            if variant.in_place:
                self._base = None  # whatever the build did to eager's modules, don't reuse them
            raise
        finally:
            self.write_reports()

    def time_rounds(self, live: LiveRun, k: int, record: bool = True) -> None:
        """k more rounds. Paired rounds alternate eager-first and variant-first to cancel linear drift."""
        result, items = live.result, self.scenario.items
        if not record:
            saved = (list(result.eager_s), list(result.variant_s), result.peak_mem_gb, dict(result.timed_images))
        for _ in range(k):
            r = len(result.variant_s)
            item = items[r % len(items)]
            pair = live.eager_pipe is not None and result.name != "eager"
            order = ("eager", "variant") if r % 2 == 0 else ("variant", "eager")
            for which in order if pair else ("variant",):
                if which == "eager":
                    seconds, out = timing.timed(lambda: self.render(live.eager_pipe, item), self.device)
                    result.eager_s.append(seconds)
                    continue
                timing.reset_peak(self.device)
                seconds, out = timing.timed(lambda: self.render(live.pipe, item), self.device)
                peak = timing.peak_gb(self.device)
                if peak is not None:
                    result.peak_mem_gb = max(result.peak_mem_gb or 0.0, peak)
                result.variant_s.append(seconds)
                result.timed_images.setdefault(item, self.to_u8(out))
            if result.name == "eager":
                result.eager_s = list(result.variant_s)
        if not record:
            result.eager_s, result.variant_s, result.peak_mem_gb, result.timed_images = saved

    def check_determinism(self, result: VariantResult) -> None:
        """Eager's timed images against its reference images: the same prompt and seed twice."""
        reference, items = self.reference(), self.scenario.items
        worst = math.inf
        for item, img in result.timed_images.items():
            ref = reference[items.index(item)][None]
            worst = min(worst, quality.per_image(ref, img)["psnr_db"][0])
        self.determinism = {"identical": math.isinf(worst), "worst_psnr_db": quality.json_value(worst),
                            "bound_psnr_db": DETERMINISM_MIN_PSNR_DB, "images_compared": len(result.timed_images),
                            "ok": worst >= DETERMINISM_MIN_PSNR_DB}

    def lpips_model(self):
        if self._lpips is None:
            self._lpips = quality.make_lpips(self.settings.lpips_random_backbone, self.device)
        return self._lpips

    def score(self, result: VariantResult, reference: torch.Tensor) -> None:
        try:
            lp = self.lpips_model()
        except quality.LpipsUnavailable as exc:
            lp, result.lpips_error = None, str(exc)
        values = quality.per_image(reference, result.images, lp)
        for metric, vals in values.items():
            if vals is None:
                continue
            s = quality.summarize(metric, vals)
            result.quality[metric] = {"values": vals, "mean": s.mean, "worst": s.worst,
                                      "worst_item": list(self.scenario.items[s.worst_index])}
        if "lpips" in result.quality:
            result.quality["lpips"]["backbone"] = "random" if self.settings.lpips_random_backbone else "alexnet"
        # Save the worst pair (by SSIM) so a failure message can point at it.
        from fluxperf import report
        i = quality.summarize("ssim", values["ssim"]).worst_index
        p, seed = self.scenario.items[i]
        path = self.settings.report_dir / "pairs" / f"{result.name}-p{p}-s{seed}.png"
        report.save_pair(reference[i], result.images[i], path, f"eager | {result.name}  (prompt {p}, seed {seed})")
        result.worst_pair_png = str(path)

    def floors(self, result: VariantResult) -> dict[str, float]:
        base = LOSSLESS_FLOOR if result.lossless else LOSSY_FLOOR
        return {**base, **self.settings.floors.get(result.name, {})}

    def release(self, live: LiveRun) -> None:
        """Drop the variant's pipeline so the next variant starts with the memory free."""
        pipe, live.pipe, live.eager_pipe = live.pipe, None, None
        try:
            self.close(pipe)
        finally:
            if live.result.images is not None:
                live.result.timed_images.clear()
            timing.release(self.device)

    @staticmethod
    def close(pipe) -> None:
        """context_parallel's pipeline: the other ranks drop theirs too."""
        from fluxperf.parallel import ParallelPipeline
        if isinstance(pipe, ParallelPipeline):
            pipe.close()

    # ----- verdicts and reports -------------------------------------------------------------------
    def record(self, name: str, check: str, verdict: stats.Verdict) -> None:
        self.results[name].verdicts[check] = {"status": verdict.status, "message": verdict.message}

    def baseline_entry(self, name: str) -> dict | None:
        return (self.baseline or {}).get("variants", {}).get(name)

    def write_reports(self) -> None:
        from fluxperf import report
        if self.worker is None:
            report.write_all(self)
        else:
            # An xdist worker holds only its own variants: it writes their image grids, and the controller
            # writes results.json and report.md once, from every worker's results.
            report.write_images(self)

    def update_baseline(self, recorded_utc: str, results: dict) -> Path | None:
        """Write this session's baseline from a results dict (report.results_dict, or the merge of every
        xdist worker's): its measured variants' entries, keyed on the GPU the results were measured on."""
        measured = {n: v["baseline_entry"] for n, v in results["variants"].items()
                    if v["status"] == "measured" and v.get("baseline_entry")}
        if not measured:
            return None
        env = results["environment"]
        path = self.locate_baseline(env)
        old = baselines.load(path) if path.exists() else None
        data = baselines.updated(old, self.baseline_key(env), env, recorded_utc, measured)
        baselines.write_atomic(path, baselines.dumps(baselines.validate(data, path)))
        return path


