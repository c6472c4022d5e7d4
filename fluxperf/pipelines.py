"""Calling a pipeline as the bench does: the initial noise, one call from prompt to image, a weight-sharing copy of the
pipeline for a variant, and the steps a call really ran. The tests render through these same functions."""

from __future__ import annotations

import copy
import itertools

import torch

from fluxperf.models import max_sequence_length, torch_dtype


def latents(pipe, scenario, seed: int) -> torch.Tensor:
    """Initial noise for one seed, packed as the pipeline takes it, from a CPU generator so that it is identical on
    every GPU."""
    channels = pipe.transformer.config.in_channels // 4
    h = 2 * (scenario.height // (pipe.vae_scale_factor * 2))
    w = 2 * (scenario.width // (pipe.vae_scale_factor * 2))
    noise = torch.randn((1, channels, h, w), generator=torch.Generator("cpu").manual_seed(seed))
    return pipe._pack_latents(noise, 1, channels, h, w).to(scenario.device, torch_dtype(scenario.dtype))


def render(pipe, scenario, prompt: int, latents: torch.Tensor, text_tokens: int | None = None, output_type: str = "pt"):
    """One pipeline call: the scenario's prompt `prompt` from these initial latents to an image (a float tensor on
    the device for "pt"). `text_tokens`: T5 tokens per prompt, by default what the pipeline's tokenizer holds."""
    return pipe(
        prompt=scenario.prompts[prompt],
        height=scenario.height,
        width=scenario.width,
        num_inference_steps=scenario.steps,
        guidance_scale=scenario.guidance,
        latents=latents,
        output_type=output_type,
        max_sequence_length=text_tokens or max_sequence_length(pipe),
    ).images


def to_u8(images: torch.Tensor) -> torch.Tensor:
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def share_modules(pipe):
    """A new pipeline over copies of the modules that share every parameter and buffer with `pipe`'s.

    A variant that hooks, wraps or swaps modules (pruna's FORA and compile, Model Optimizer's quantizers,
    context parallelism) changes only the copies, so eager keeps its own modules and both can be timed in
    alternating rounds, with no second copy of the weights. A variant that changes the weights themselves, or
    moves them, must say in_place=True.
    """
    components = {k: shared_copy(m) if isinstance(m, torch.nn.Module) else m for k, m in pipe.components.items()}
    clone = type(pipe)(**components)
    clone.set_progress_bar_config(disable=True)
    return clone


def shared_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module structure that shares every parameter and buffer with `module`: hooks, wrappers or
    swapped submodules on the copy leave `module` alone, and no weight is duplicated."""
    shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, shared)


class StepCounter:
    """Counts the scheduler steps a pipeline call runs: one per denoising step the pipeline really took."""

    def __init__(self):
        self.count = 0

    @classmethod
    def on(cls, pipe) -> StepCounter:
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
