"""The session's measurements: build each variant once, time it beside eager and the machine probe, render its images."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fluxperf import baselines, contention, environment, fidelity, quality, roofline, stats, timing, variants, watchdog
from fluxperf.models import build_pipeline, max_sequence_length, torch_dtype
from fluxperf.options import Settings
from fluxperf.probe import PROBES, Probe
from fluxperf.progress import Progress

# Eager rendering the same prompt and seed twice should be bit-identical. On GPUs whose kernels are
# nondeterministic it may not be; below this PSNR the session warns that quality verdicts are unreliable.
DETERMINISM_MIN_PSNR_DB = 40.0
# Untimed rounds after every build, for eager as for the variant: latency keeps falling for a few images
# after a build (allocator, clocks, autotuning caches).
WARMUP_ROUNDS = 2
# A baseline is the yardstick for every later session, so it is recorded with more rounds than a check takes.
BASELINE_ROUNDS = 20
# A pipeline whose GPU is busy for less than this share of a call is host-bound: the host's speed sets its
# latency and the rules judge it net of the host probe. Measured on an H200 at 512²: eager 54-69% busy in
# sessions on a slow host (and it follows the host probe one for one); compile 86-94% and pruna_cache_compile
# 80-91%, which follow the GPU probe: between two sessions whose host probe moved -12% and -30%, their lower
# quartiles moved -2% (docs/results.md).
GPU_BOUND_BUSY = 0.75

# Floors each image must meet against eager. A lossless variant is judged step by step (test_fidelity_holds) and
# against its own baseline's images; its final images only have to stay clear of a broken pipeline, because on
# the real model 28 steps turn bf16-level differences into different, equally good images: FLUX.1-dev compiled
# vs eager scored LPIPS 0.38 at 1024² (pytorch/pytorch#179520). These floors are set to catch images unrelated to
# eager's (noise, a blank image), not a subtle change, which the other two checks catch. Lossy variants keep the
# floors they had.
LOSSLESS_FLOOR = {"ssim": 0.3, "psnr_db": 12.0, "lpips": 0.6}
LOSSY_FLOOR = {"ssim": 0.5, "psnr_db": 15.0, "lpips": 0.4}


@dataclass
class VariantResult:
    name: str
    status: str = "pending"                 # measured | failed | skipped
    device: str = "cpu"
    error: str | None = None
    timed: bool = True
    lossless: bool = False
    libraries: tuple = ()
    params: dict = field(default_factory=dict)
    build_s: float | None = None
    phases: dict = field(default_factory=dict)
    eager_s: list[float] = field(default_factory=list)
    variant_s: list[float] = field(default_factory=list)
    eager_cpu_s: list[float] = field(default_factory=list)
    variant_cpu_s: list[float] = field(default_factory=list)
    probe: dict = field(default_factory=lambda: {k: [] for k in PROBES})        # a sample before each variant call
    eager_probe: dict = field(default_factory=lambda: {k: [] for k in PROBES})  # a sample before each eager call
    steps: list[int] = field(default_factory=list)        # denoising steps each timed call ran (both pipelines)
    # What shared the machine around each timed call (fluxperf.contention.FIELDS), the variant's and eager's.
    contention: dict = field(default_factory=lambda: contention.empty())
    eager_contention: dict = field(default_factory=lambda: contention.empty())
    # The untimed warm-up calls' seconds, kept to show what timing right after a build would have measured.
    warmup_s: dict = field(default_factory=lambda: {"eager": [], "variant": []})
    paired: bool = True
    kernel_s: float | None = None                         # GPU kernel time of one untimed call
    work: roofline.Work | None = None                     # the transformer's counted work per image
    adaptive: bool = False                                # a threshold cache: its hit rate depends on the weights
    peak_mem_gb: float | None = None
    quality: dict = field(default_factory=dict)     # metric -> {"values", "mean", "worst", "worst_item"}
    lpips_error: str | None = None
    worst_pair_png: str | None = None
    verdicts: dict = field(default_factory=dict)    # check -> {"status", "message"}
    # A lossless variant's step-by-step fidelity: {"status", "details", "floor"}, or {"skipped": why}.
    fidelity: dict | None = None
    images: torch.Tensor | None = None              # judged images, uint8 N×3×H×W (not written to JSON)
    timed_images: dict = field(default_factory=dict)  # item -> uint8 image from the first timed call

    def speedup(self) -> stats.Speedup:
        return stats.speedup(self.eager_s, self.variant_s, self.paired)

    def latency(self) -> tuple[float, float]:
        return stats.median_spread(self.variant_s)

    @property
    def design(self) -> str:
        return "paired" if self.paired else "blocks"

    @property
    def gpu_busy(self) -> float | None:
        """Share of a call the GPU was busy; the rest it waited for the host."""
        if self.kernel_s is None or not self.variant_s:
            return None
        return min(1.0, self.kernel_s / self.latency()[0])

    @property
    def cpu_share(self) -> float | None:
        """Process CPU time over wall time, median over the timed calls."""
        if not self.variant_cpu_s:
            return None
        return stats.median_spread([c / w for c, w in zip(self.variant_cpu_s, self.variant_s)])[0]

    @property
    def bound(self) -> str:
        """What sets this pipeline's latency: "gpu", "host" (everything on a CPU device), or "unknown"."""
        if not self.variant_s:
            return "unknown"
        if self.kernel_s is None:
            # On a CPU device the host does all the work; on CUDA without the profiler it can't be told.
            return "unknown" if self.device.startswith("cuda") else "host"
        return "gpu" if self.gpu_busy >= GPU_BOUND_BUSY else "host"

    def run(self) -> stats.Run:
        return stats.Run(self.variant_s, self.eager_s, self.probe, self.eager_probe, self.paired, self.bound,
                         self.gpu_busy, contention.sharing(self.contention, self.variant_s))


class LiveRun:
    """A built variant, held until its tests are done, able to take more timing rounds."""

    def __init__(self, bench: "Bench", result: VariantResult, pipe, eager_pipe):
        self.bench, self.result, self.pipe, self.eager_pipe = bench, result, pipe, eager_pipe

    def more_rounds(self, k: int) -> None:
        """k more rounds on both sides; in blocks design the blocks were sized for the cap, so none remain."""
        if self.result.paired and self.pipe is not None:
            self.bench.time_rounds(self, k)


def share_modules(pipe):
    """A new pipeline over copies of the modules that share every parameter and buffer with `pipe`'s.

    A variant that hooks, wraps or swaps modules (pruna's FORA and compile, Model Optimizer's quantizers,
    context parallelism) changes only the copies, so eager keeps its own modules and both can be timed in
    alternating rounds, with no second copy of the weights. A variant that changes the weights themselves, or
    moves them, must say in_place=True.
    """
    components = {}
    for key, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
            module = copy.deepcopy(module, shared)
        components[key] = module
    clone = type(pipe)(**components)
    clone.set_progress_bar_config(disable=True)
    return clone


class StepCounter:
    """Counts the scheduler steps a pipeline call runs: one per denoising step the pipeline really took."""

    def __init__(self):
        self.count = 0

    @classmethod
    def on(cls, pipe) -> "StepCounter":
        scheduler = getattr(pipe, "scheduler", None)
        if scheduler is None:
            raise RuntimeError(f"{type(pipe).__name__} has no scheduler: fluxperf can't count its denoising steps")
        counter = scheduler.__dict__.get("_fluxperf_steps")
        if counter is None:
            counter = cls()
            step = scheduler.step

            def counted(*args, **kwargs):
                counter.count += 1
                return step(*args, **kwargs)

            scheduler.step = counted
            scheduler._fluxperf_steps = counter
        return counter


class Bench:
    """One pytest session's measurements: the pipelines, the timings, the images, and the baseline judged against."""

    def __init__(self, settings: Settings, progress: Progress | None = None, parallel=None):
        self.settings = settings
        self.progress = progress or Progress()
        self.parallel = parallel  # fluxperf.parallel.Group under torchrun, for context_parallel
        self.scenario = settings.scenario
        self.device = settings.scenario.device
        self.worker = settings.worker
        self.results: dict[str, VariantResult] = {}
        self.baseline: dict | None = None
        self.baseline_path: Path | None = None
        self.determinism: dict | None = None
        self._base = None
        self._pipeline = None  # the pipeline as built, before eager's build: what variants get copies of
        self._text_tokens = 512
        self._reference: torch.Tensor | None = None
        self._latents: dict[int, torch.Tensor] = {}
        self.scorer = quality.Scorer(settings.lpips_random_backbone, self.device)
        self._probe: Probe | None = None
        self._sensor: contention.Sensor | None = None
        self._fidelity: tuple[fidelity.Trajectory, fidelity.Floor] | None = None

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
        try:
            self.baseline = baselines.load(self.baseline_path)
        except baselines.BaselineError:
            if not self.settings.update_baselines:
                raise
            self.baseline = None  # this session rewrites it and judges nothing against it
        if self.baseline is not None:
            baselines.check_key(self.baseline, self.baseline_key(), self.baseline_path)

    def baseline_entry(self, name: str) -> dict | None:
        return (self.baseline or {}).get("variants", {}).get(name)

    def context(self, name: str) -> stats.Context:
        """What a verdict message names besides numbers: the file, the rebaseline command, what changed."""
        software, host = environment.changes((self.baseline or {}).get("environment") or {}, self.env,
                                             self.results[name].libraries if name in self.results else ())
        return stats.Context(str(self.baseline_path), self.settings.rebaseline, tuple(software), tuple(host))

    # ----- pipelines ------------------------------------------------------------------------------
    def base(self):
        """The eager pipeline, built on first use and rebuilt after an in-place variant consumed it."""
        if self._base is None:
            self.progress.begin("eager")
            # Loading is not under the build limit: every variant needs it, and an interrupted import (diffusers
            # imports lazily) would break the module for the rest of the process.
            with self.progress.step(f"building the {self.scenario.model} pipeline on {self.device}", key="load_s"):
                pipe = build_pipeline(self.scenario, self.progress.say)
            self._make_latents(pipe)
            self._text_tokens = max_sequence_length(pipe)
            self._pipeline = pipe
            # Eager's own build (the pipeline as loaded) is also the eager side of every other variant's rounds.
            pipe = self._base = variants.get("eager").build(pipe, self.scenario, {})
            with self.progress.step("warm-up call"), self.call_limit("eager's warm-up call"):
                self.render(pipe, self.scenario.items[0])
        return self._base

    def _make_latents(self, pipe) -> None:
        """Initial noise for every seed, from a CPU generator so that it is identical on every GPU. Made once,
        with the first pipeline, so that no later call needs a pipeline to exist."""
        sc = self.scenario
        channels = pipe.transformer.config.in_channels // 4
        h = 2 * (sc.height // (pipe.vae_scale_factor * 2))
        w = 2 * (sc.width // (pipe.vae_scale_factor * 2))
        for seed in sc.seeds:
            if seed not in self._latents:
                noise = torch.randn((1, channels, h, w), generator=torch.Generator("cpu").manual_seed(seed))
                packed = pipe._pack_latents(noise, 1, channels, h, w)
                self._latents[seed] = packed.to(self.device, torch_dtype(sc.dtype))

    def latents(self, seed: int) -> torch.Tensor:
        return self._latents[seed]

    def render(self, pipe, item) -> torch.Tensor:
        """One pipeline call, prompt in and image out (a float tensor on the device)."""
        p, seed = item
        sc = self.scenario
        return pipe(prompt=sc.prompts[p], height=sc.height, width=sc.width, num_inference_steps=sc.steps,
                    guidance_scale=sc.guidance, latents=self.latents(seed), output_type="pt",
                    max_sequence_length=self._text_tokens).images

    @staticmethod
    def to_u8(images: torch.Tensor) -> torch.Tensor:
        return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    @property
    def probe(self) -> Probe:
        if self._probe is None:
            self._probe = Probe(self.device)
        return self._probe

    @property
    def sensor(self) -> contention.Sensor:
        if self._sensor is None:
            self._sensor = contention.Sensor(self.device)
            if self._sensor.why_not_gpu and self.device.startswith("cuda"):
                self.progress.say(f"other work on the GPU is not sensed: {self._sensor.why_not_gpu}")
        return self._sensor

    def call_limit(self, what: str):
        """The per-call time limit around one pipeline call."""
        return watchdog.limit(self.settings.call_timeout_s, what, "--fluxperf-call-timeout")

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
                self.progress.say(f"eager reference images from {path}")
                self._reference = torch.load(path, weights_only=True)
            else:
                pipe = self.base()
                self.progress.begin("eager")
                with self.progress.step(f"rendering {len(self.scenario.items)} reference images"):
                    self._reference = torch.cat([self.to_u8(self.limited_render(pipe, it, "eager"))
                                                 for it in self.scenario.items])
                path.parent.mkdir(parents=True, exist_ok=True)
                # xdist workers may render the same reference at once: each writes its own temporary
                # file and renames it into place, so a reader never sees a half-written one.
                tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
                torch.save(self._reference, tmp)
                tmp.replace(path)
        return self._reference

    # ----- measuring a variant --------------------------------------------------------------------
    def params_for(self, variant: variants.Variant) -> dict:
        return {k: self.settings.params.get(k, default) for k, default in variant.params.items()}

    def rounds(self) -> int:
        return max(self.settings.rounds, BASELINE_ROUNDS) if self.settings.update_baselines else self.settings.rounds

    def measure(self, name: str) -> LiveRun:
        """Build, warm up, time and render one variant. Raises what the build raised; the result records it."""
        variant = variants.get(name)
        result = VariantResult(name, device=self.device, timed=variant.timed, adaptive=variant.adaptive, lossless=variant.lossless, libraries=variant.libraries,
                               params=self.params_for(variant), paired=not variant.in_place)
        self.results[name] = result
        live = None
        try:
            if variant.check is not None:
                variant.check(self.scenario, result.params)
            reference = self.reference() if name != "eager" else None
            if variant.lossless and name != "eager":
                self.fidelity_floor()  # from eager's own modules, before an in-place build consumes them
            base, source = self.base(), self._pipeline
            live = LiveRun(self, result, None, base)
            # A block design can't add eager images after the build has changed eager's modules, so both
            # blocks are as long as the cap: the same number of rounds on both sides, none to add later.
            block = self.rounds() if self.settings.update_baselines else self.settings.max_rounds
            if variant.in_place:
                self.progress.begin(name)
                with self.progress.step(f"timing eager before the in-place build ({WARMUP_ROUNDS} untimed, {block} timed)"):
                    self.time_block(result, base, WARMUP_ROUNDS, eager=True, record=False)
                    self.time_block(result, base, block, eager=True)
                self._base = self._pipeline = live.eager_pipe = None
            self.progress.begin(name)
            timing.reset_peak(self.device)
            # The build and its warm-up call (where torch.compile compiles) share one limit: a build that never
            # ends costs this variant, not the session.
            with self.progress.step(f"building {name}", key="build_s"), \
                    watchdog.limit(self.settings.build_timeout_s, f"{name}'s build and warm-up call",
                                   "--fluxperf-build-timeout"):
                params = {**result.params, "cache_dir": self.settings.cache_dir / "artifacts" / name,
                          "progress": self.progress, "parallel": self.parallel}
                pipe = base if name == "eager" else variant.build(share_modules(source), self.scenario, params)
                with self.progress.step("warm-up call (compilation and autotuning happen here)"):
                    self.render(pipe, self.scenario.items[0])
            result.phases = self.progress.phases()
            result.build_s = result.phases.pop("build_s")
            live.pipe = pipe
            if variant.in_place:
                with self.progress.step(f"{WARMUP_ROUNDS} untimed warm-up rounds, then {block} timed"):
                    self.time_block(result, pipe, WARMUP_ROUNDS, eager=False, record=False)
                    self.time_block(result, pipe, block, eager=False)
            else:
                with self.progress.step(f"{WARMUP_ROUNDS} untimed warm-up rounds"):
                    self.time_rounds(live, WARMUP_ROUNDS, record=False)
                with self.progress.step(f"timing {self.rounds()} rounds"):
                    self.time_rounds(live, self.rounds())
            first = self.scenario.items[0]
            result.kernel_s = timing.kernel_seconds(lambda: self.render(pipe, first), self.device)
            result.work = roofline.count(lambda: self.render(pipe, first), pipe, self.scenario.steps)
            if name == "eager":
                self.check_determinism(result)
            else:
                with self.progress.step(f"rendering {len(self.scenario.items)} images for quality"):
                    result.images = torch.cat([self.to_u8(self.limited_render(pipe, it, name))
                                               for it in self.scenario.items])
                self.score(result, reference)
                if variant.lossless:
                    self.check_fidelity(result, pipe)
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
                self._base = self._pipeline = None  # whatever the build did to eager's modules, don't reuse them
            raise
        finally:
            self.write_reports()

    def limited_render(self, pipe, item, who: str) -> torch.Tensor:
        with self.call_limit(f"a call of {who} (prompt {item[0]}, seed {item[1]})"):
            return self.render(pipe, item)

    def _timed_call(self, result: VariantResult, pipe, item, eager: bool, record: bool):
        """One timed call with the machine sensed around it (the quiet window and the probe sample before it,
        the host's counters across it); returns the image."""
        quiet = self.sensor.quiet() if record else None   # warm-up calls are not judged: no window for them
        sample = self.probe.sample()
        counter = StepCounter.on(pipe)
        before = counter.count
        if not eager:
            timing.reset_peak(self.device)
        token = self.sensor.start()
        with self.call_limit(f"a timed call of {'eager' if eager else result.name}"):
            wall, cpu, out = timing.timed(lambda: self.render(pipe, item), self.device)
        reading = self.sensor.stop(token, quiet)
        if not record:
            result.warmup_s["eager" if eager else "variant"].append(wall)
            return out
        result.steps.append(counter.count - before)
        contention.append(result.eager_contention if eager else result.contention, reading)
        for k in PROBES:
            (result.eager_probe if eager else result.probe)[k].append(sample[k])
        if eager:
            result.eager_s.append(wall)
            result.eager_cpu_s.append(cpu)
        else:
            peak = timing.peak_gb(self.device)
            if peak is not None:
                result.peak_mem_gb = max(result.peak_mem_gb or 0.0, peak)
            result.variant_s.append(wall)
            result.variant_cpu_s.append(cpu)
            result.timed_images.setdefault(item, self.to_u8(out))
        return out

    def time_block(self, result: VariantResult, pipe, k: int, eager: bool, record: bool = True) -> None:
        """k calls of one pipeline in a row (the blocks design, for in-place variants)."""
        items = self.scenario.items
        done = len(result.eager_s if eager else result.variant_s)
        for i in range(k):
            self._timed_call(result, pipe, items[(done + i) % len(items)], eager, record)

    def time_rounds(self, live: LiveRun, k: int, record: bool = True) -> None:
        """k more paired rounds, alternating eager-first and variant-first to cancel linear drift."""
        result, items = live.result, self.scenario.items
        for i in range(k):
            r = len(result.variant_s) + (0 if record else i)
            item = items[r % len(items)]
            if result.name == "eager":
                self._timed_call(result, live.pipe, item, eager=False, record=record)
                continue
            order = (True, False) if r % 2 == 0 else (False, True)
            for eager in order:
                self._timed_call(result, live.eager_pipe if eager else live.pipe, item, eager, record)
        if result.name == "eager" and record:
            result.eager_s, result.eager_cpu_s = list(result.variant_s), list(result.variant_cpu_s)
            result.eager_probe = {k: list(v) for k, v in result.probe.items()}
            result.eager_contention = {k: list(v) for k, v in result.contention.items()}

    def fidelity_floor(self) -> tuple[fidelity.Trajectory, fidelity.Floor]:
        """Eager's trajectory for the first prompt and seed, and its own rounding error at every step: once per
        session (fluxperf.fidelity)."""
        if self._fidelity is None:
            pipe = self.base()
            with self.progress.step("fidelity: eager's trajectory, then its own rounding error step by step"):
                trajectory = fidelity.capture(pipe, lambda p: self.limited_render(p, self.scenario.items[0], "eager"))
                self._fidelity = trajectory, fidelity.noise_floor(trajectory, pipe.transformer)
        return self._fidelity

    def check_fidelity(self, result: VariantResult, pipe) -> None:
        """The variant's transformer on eager's recorded inputs, step by step, against eager's floor."""
        from fluxperf.parallel import ParallelPipeline

        if isinstance(pipe, ParallelPipeline):
            # Its transformer runs across the ranks: a call outside the pipeline would leave the others waiting.
            result.fidelity = {"skipped": f"{result.name}'s transformer runs across the torchrun ranks; only whole "
                                          "pipeline calls reach them, so it is judged by its images"}
            return
        trajectory, floor = self.fidelity_floor()
        with self.progress.step(f"fidelity: {result.name}'s transformer on eager's inputs, {trajectory.steps} steps"):
            steps = fidelity.compare(trajectory, pipe.transformer, floor)
        status, details = fidelity.judge(steps, floor.values)
        result.fidelity = {"status": status, "details": details, "floor": floor.to_dict()}

    def check_determinism(self, result: VariantResult) -> None:
        """Eager's timed images against its reference images: the same prompt and seed twice."""
        self.determinism = quality.determinism(self.reference(), result.timed_images, self.scenario.items,
                                               DETERMINISM_MIN_PSNR_DB)

    def score(self, result: VariantResult, reference: torch.Tensor) -> None:
        result.quality, worst, result.lpips_error = self.scorer.score(reference, result.images, self.scenario.items)
        # Save the worst pair (by SSIM) so a failure message can point at it.
        from fluxperf import report
        p, seed = self.scenario.items[worst]
        path = self.settings.report_dir / "pairs" / f"{result.name}-p{p}-s{seed}.png"
        report.save_pair(reference[worst], result.images[worst], path,
                         f"eager | {result.name}  (prompt {p}, seed {seed})")
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
            # The variant's verdicts are in: on disk now, in case the session is stopped before it ends.
            self.write_reports()

    @staticmethod
    def close(pipe) -> None:
        """context_parallel's pipeline: the other ranks drop theirs too."""
        from fluxperf.parallel import ParallelPipeline
        if isinstance(pipe, ParallelPipeline):
            pipe.close()

    # ----- verdicts and reports -------------------------------------------------------------------
    def record(self, name: str, check: str, verdict: stats.Verdict) -> None:
        self.results[name].verdicts[check] = {"status": verdict.status, "message": verdict.message}

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
        env = results["environment"]
        return baselines.write_session(self.locate_baseline(env), self.baseline_key(env), results, recorded_utc)
