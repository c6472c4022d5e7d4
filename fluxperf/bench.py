"""The session's measurements: build each variant once, time it beside eager and the machine probe, render its images.

The bench returns data (a fluxperf.result.Result per variant); the plugin writes the reports from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import torch

from fluxperf import (
    baselines,
    environment,
    fidelity,
    messages,
    models,
    pipelines,
    protocol,
    quality,
    roofline,
    timing,
    variants,
    watchdog,
)
from fluxperf import scenario as scenario_module
from fluxperf.models import build_pipeline, max_sequence_length
from fluxperf.options import Settings
from fluxperf.progress import Progress
from fluxperf.result import Result, Timings

# Eager rendering the same prompt and seed twice should be bit-identical. On GPUs whose kernels are
# nondeterministic it may not be; below this PSNR the session warns that quality verdicts are unreliable.
DETERMINISM_MIN_PSNR_DB = 40.0


class Live:
    """A built variant, held until its tests are done: its result and pipelines, able to time more rounds."""

    def __init__(self, bench: Bench, result: Result):
        self.bench, self.result, self.pipe, self.eager_pipe = bench, result, None, None

    def more_rounds(self, k: int, start: int) -> Timings:
        """k more paired rounds numbered from `start`, as new Timings (verdicts.speed's hook)."""
        items = self.bench.scenario.items
        timings, images = self.bench.timer.rounds(
            {True: self.eager_pipe, False: self.pipe}, items, protocol.paired(start, k, len(items)), self.result.name
        )
        for item, image in judged(images, self.bench.scenario).items():
            self.result.timed_images.setdefault(item, image)
        return timings


class Bench:
    """One pytest session's measurements: the pipelines, the timings, the images, and the baseline judged against."""

    def __init__(self, settings: Settings, progress: Progress | None = None, parallel=None):
        self.settings, self.scenario, self.worker = settings, settings.scenario, settings.worker
        self.device = settings.scenario.device
        self.progress = progress or Progress()
        self.parallel = parallel  # fluxperf.parallel.Group under torchrun, for context_parallel
        self.results: dict[str, Result] = {}
        self.baseline: dict | None = None
        self.baseline_path: Path | None = None
        self.determinism: dict | None = None
        self.scorer = quality.Scorer(settings.lpips_random_backbone, self.device)
        self.timer = protocol.Timer(self.device, self.render, self.call_limit, self.progress.say)
        self.reference_images: torch.Tensor | None = None  # eager's, once a variant needed them
        self._base = self._pipeline = self._fidelity = None  # _pipeline: as built, what variants get copies of
        self._latents: dict[int, torch.Tensor] = {}
        self._text_tokens = 512

    # ----- environment and baseline ----------------------------------------------------------------------------
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

    # ----- pipelines -----------------------------------------------------------------------------------------------
    def base(self):
        """The eager pipeline, built on first use and rebuilt after an in-place variant consumed it."""
        if self._base is None:
            self.progress.begin("eager")
            # Loading is not under the build limit: every variant needs it, and an interrupted import (diffusers
            # imports lazily) would break the module for the rest of the process.
            with self.progress.step(f"building the {self.scenario.model} pipeline on {self.device}", key="load_s"):
                pipe = build_pipeline(self.scenario, self.progress.say)
            # The noise is made once, with the first pipeline, so that no later call needs a pipeline to exist.
            for seed in self.scenario.seeds:
                if seed not in self._latents:
                    self._latents[seed] = pipelines.latents(pipe, self.scenario, seed)
            self._text_tokens, self._pipeline = max_sequence_length(pipe), pipe
            # Eager's own build (the pipeline as loaded) is also the eager side of every other variant's rounds.
            pipe = self._base = variants.get("eager").build(pipe, self.scenario, {})
            with self.progress.step("warm-up call"), self.call_limit("eager's warm-up call"):
                self.render(pipe, self.scenario.items[0])
        return self._base

    def render(self, pipe, item) -> torch.Tensor:
        """One pipeline call, prompt in and image out (a float tensor on the device)."""
        return pipelines.render(pipe, self.scenario, item[0], self._latents[item[1]], self._text_tokens)

    def render_all(self, pipe, who: str, what: str) -> torch.Tensor:
        """Every item judged for quality (scenario.quality_items), each call under the call limit, as uint8 images."""
        items = self.scenario.quality_items
        with self.progress.step(f"rendering {len(items)} {what}"):
            return torch.cat([pipelines.to_u8(self.limited_render(pipe, it, who)) for it in items])

    def limited_render(self, pipe, item, who: str) -> torch.Tensor:
        with self.call_limit(f"a call of {who} (prompt {item[0]}, seed {item[1]})"):
            return self.render(pipe, item)

    def call_limit(self, what: str):
        """The per-call time limit around one pipeline call."""
        return watchdog.limit(self.settings.call_timeout_s, what, "--fluxperf-call-timeout")

    def reference(self) -> torch.Tensor:
        """Eager's images for every item judged for quality: from the disk cache, or rendered once and cached."""
        if self.reference_images is None:
            path = reference_cache(self.settings.cache_dir, self.baseline_key(), self.env, self.scenario.slug)
            if path.exists():
                self.progress.say(f"eager reference images from {path}")
                self.reference_images = torch.load(path, weights_only=True)
            else:
                pipe = self.base()
                self.progress.begin("eager")
                self.reference_images = self.render_all(pipe, "eager", "reference images")
                save_atomic(self.reference_images, path)
        return self.reference_images

    def fidelity_floor(self) -> tuple[fidelity.Trajectory, fidelity.Floor]:
        """Eager's trajectory for the first prompt and seed, and its own rounding error at every step: once per
        session (fluxperf.fidelity)."""
        if self._fidelity is None:
            pipe = self.base()
            with self.progress.step("fidelity: eager's trajectory, then its own rounding error step by step"):
                trajectory = fidelity.capture(pipe, lambda p: self.limited_render(p, self.scenario.items[0], "eager"))
                self._fidelity = trajectory, fidelity.noise_floor(trajectory, pipe.transformer)
        return self._fidelity

    # ----- measuring a variant ---------------------------------------------------------------------------------
    def measure(self, name: str) -> Live:
        """Build, warm up, time and render one variant. Raises what the build raised; the result records it."""
        variant = variants.get(name)
        params = {k: self.settings.params.get(k, default) for k, default in variant.params.items()}
        result = self.results[name] = Result.of(variant, params, self.worker)
        live = Live(self, result)
        try:
            if variant.check is not None:
                variant.check(self.scenario, params)
            reference = self.reference() if name != "eager" else None
            if variant.lossless and name != "eager":
                self.fidelity_floor()  # from eager's own modules, before an in-place build consumes them
            live.eager_pipe, source = self.base(), self._pipeline
            design = _InPlace if variant.in_place else _Paired
            design(self, live, variant).measure(source, reference)
            result.status = "measured"
            return live
        except variants.Unavailable as exc:
            result.status, result.error = "skipped", str(exc)
            raise
        except BaseException as exc:
            cause = watchdog.timeout_in(exc) or exc  # a limit that fired inside torch.compile, told as itself
            result.status, result.error = "failed", f"{type(cause).__name__}: {cause}".strip()
            close(live.pipe)
            if variant.in_place:
                self.forget_eager()  # whatever the build did to eager's modules, don't reuse them
            raise

    def release(self, live: Live) -> None:
        """Drop the variant's pipeline so the next variant starts with the memory free."""
        pipe, live.pipe, live.eager_pipe = live.pipe, None, None
        try:
            close(pipe)
        finally:
            if live.result.images is not None:
                live.result.timed_images.clear()
            timing.release(self.device)

    def forget_eager(self) -> None:
        """An in-place variant is about to change eager's weights: the next variant rebuilds eager."""
        self._base = self._pipeline = None


class _Measurement:
    """One variant's measurement once eager is ready: build it, time it (the design is the subclass's), then what
    its kernels, its work and its images show."""

    design = "paired"

    def __init__(self, bench: Bench, live: Live, variant: variants.Variant):
        self.bench, self.live, self.variant, self.result = bench, live, variant, live.result
        self.items, self.name, self.progress = bench.scenario.items, live.result.name, bench.progress
        s = bench.settings
        self.rounds = max(s.rounds, protocol.BASELINE_ROUNDS) if s.update_baselines else s.rounds
        self.result.timings = Timings(bench.device, self.design)

    def build(self, source) -> None:
        b, name = self.bench, self.name
        self.progress.begin(name)
        timing.reset_peak(b.device)
        # The build and its warm-up call (where torch.compile compiles) share one limit: a build that never ends
        # costs this variant, not the session.
        limit = watchdog.limit(
            b.settings.build_timeout_s, f"{name}'s build and warm-up call", "--fluxperf-build-timeout"
        )
        with self.progress.step(f"building {name}", key="build_s"), limit:
            params = {
                **self.result.params,
                "cache_dir": b.settings.cache_dir / "artifacts" / name,
                "progress": self.progress,
                "parallel": b.parallel,
            }
            pipe = (
                self.live.eager_pipe
                if name == "eager"
                else self.variant.build(pipelines.share_modules(source), b.scenario, params)
            )
            with self.progress.step("warm-up call (compilation and autotuning happen here)"):
                b.render(pipe, self.items[0])
        self.live.pipe = pipe
        phases = self.progress.phases()
        self.result.timings.build_s, self.result.timings.build_phases_s = phases.pop("build_s"), phases

    def time(self, pipes: dict, plan, warmup: bool = False) -> None:
        _, images = self.bench.timer.rounds(pipes, self.items, plan, self.name, warmup, into=self.result.timings)
        self.result.timed_images.update(judged(images, self.bench.scenario))

    def finish(self, reference) -> None:
        b, result, pipe, first = self.bench, self.result, self.live.pipe, self.items[0]
        judged_items = b.scenario.quality_items
        result.timings.kernel_s = timing.kernel_seconds(lambda: b.render(pipe, first), b.device)
        result.timings.work = roofline.count(lambda: b.render(pipe, first), pipe, b.scenario.steps)
        if self.name == "eager":
            b.determinism = quality.determinism(
                b.reference(), result.timed_images, judged_items, DETERMINISM_MIN_PSNR_DB
            )
            return
        result.images = b.render_all(pipe, self.name, "images for quality")
        result.quality.scores, result.quality.errors = b.scorer.score(reference, result.images, judged_items)
        if self.variant.lossless:
            result.quality.fidelity = self.fidelity(pipe)

    def fidelity(self, pipe) -> dict:
        """The variant's transformer on eager's recorded inputs, step by step, against eager's floor."""
        from fluxperf.parallel import ParallelPipeline

        if isinstance(pipe, ParallelPipeline):
            # Its transformer runs across the ranks: a call outside the pipeline would leave the others waiting.
            return {"skipped": messages.fidelity_across_ranks(self.name)}
        trajectory, floor = self.bench.fidelity_floor()
        with self.progress.step(f"fidelity: {self.name}'s transformer on eager's inputs, {trajectory.steps} steps"):
            steps = fidelity.compare(trajectory, pipe.transformer, floor)
        status, details = fidelity.judge(steps, floor.values)
        hint = self.variant.fidelity_hint(self.result.params) if self.variant.fidelity_hint else None
        return {"status": status, "details": details, "floor": floor.to_dict(), "hint": hint}


class _Paired(_Measurement):
    """Eager and the variant alternate round by round on eager's own modules and the variant's copies."""

    def measure(self, source, reference) -> None:
        self.build(source)
        alone, warmup, n = self.name == "eager", protocol.WARMUP_ROUNDS, len(self.items)
        pipes = {True: self.live.eager_pipe, False: self.live.pipe}
        with self.progress.step(f"{warmup} untimed warm-up rounds"):
            self.time(pipes, protocol.paired(0, warmup, n, alone), warmup=True)
        with self.progress.step(f"timing {self.rounds} rounds"):
            self.time(pipes, protocol.paired(0, self.rounds, n, alone))
        if alone:
            self.result.timings = self.result.timings.mirrored()
        self.finish(reference)


class _InPlace(_Measurement):
    """A variant that changes or moves eager's weights: eager's block before the build, the variant's after."""

    design = "blocks"

    def measure(self, source, reference) -> None:
        # A block design can't add eager images after the build has changed eager's modules, so both blocks are as
        # long as the cap: the same number of rounds on both sides, none to add later.
        s, warmup, n = self.bench.settings, protocol.WARMUP_ROUNDS, len(self.items)
        k = self.rounds if s.update_baselines else s.max_rounds
        self.progress.begin(self.name)
        with self.progress.step(f"timing eager before the in-place build ({warmup} untimed, {k} timed)"):
            self.time({True: self.live.eager_pipe}, protocol.block(0, warmup, n, eager=True), warmup=True)
            self.time({True: self.live.eager_pipe}, protocol.block(0, k, n, eager=True))
        self.bench.forget_eager()  # the build changes eager's modules
        self.live.eager_pipe = None
        self.build(source)
        with self.progress.step(f"{warmup} untimed warm-up rounds, then {k} timed"):
            self.time({False: self.live.pipe}, protocol.block(0, warmup, n, eager=False), warmup=True)
            self.time({False: self.live.pipe}, protocol.block(0, k, n, eager=False))
        self.finish(reference)


def judged(images: dict, scenario) -> dict:
    """The timed images of the items judged for quality: only those have a reference and a rendered image to match."""
    return {item: image for item, image in images.items() if item in scenario.quality_items}


def close(pipe) -> None:
    """context_parallel's pipeline: the other ranks drop theirs too."""
    from fluxperf.parallel import ParallelPipeline

    if isinstance(pipe, ParallelPipeline):
        pipe.close()


def reference_cache(cache_dir: Path, key: dict, env: dict, slug: str) -> Path:
    """Where eager's images for a scenario are kept: by its baseline key, every library version, the driver and CUDA,
    and fluxperf's own code that builds and calls eager (a pull request's runner shares the nightly's cache dir, and
    a branch that renders differently must not be judged against main's images, nor leave its own for main)."""
    sources = [Path(m.__file__).read_bytes() for m in (models, pipelines, scenario_module)]
    digest = hashlib.sha256(
        json.dumps(
            {
                "scenario": key,
                "versions": env["versions"],
                "driver": env.get("driver"),
                "cuda": env["cuda"],
                "code": hashlib.sha256(b"".join(sources)).hexdigest(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return Path(cache_dir) / "reference" / env["gpu_slug"] / f"{slug}-{digest}.pt"


def save_atomic(images: torch.Tensor, path: Path) -> None:
    # xdist workers may render the same reference at once: each writes its own temporary file and renames it into
    # place, so a reader never sees a half-written one.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    torch.save(images, tmp)
    tmp.replace(path)
