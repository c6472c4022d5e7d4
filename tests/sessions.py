"""The real suite on the tiny model in pytest sessions: the arguments every session passes, the variants only these
sessions register (tests/conftest.py's `suite` fixture runs them), and dynamo reset around a session that compiles."""

import contextlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PERF = REPO / "fluxperf" / "suite"

# Variants only these tests need: cheap, and each with a known behaviour.
CONFTEST = '''
import torch
from fluxperf.variants import register

@register("twin", lossless=True)
def twin(pipe, scenario, params):
    """Eager under another name: as fast as eager, identical images."""
    return pipe

class HalfDenoised:
    """Stops denoising halfway, as a broken cache or scheduler would: the image is left half noise."""
    def __init__(self, pipe):
        self._pipe = pipe
    def __call__(self, **kw):
        half = kw["num_inference_steps"] // 2
        def stop(pipe, step, timestep, tensors):
            if step + 1 >= half:
                pipe._interrupt = True
            return tensors
        return self._pipe(**kw, callback_on_step_end=stop)
    def __getattr__(self, name):
        return getattr(self._pipe, name)

@register("half_denoised")
def half_denoised(pipe, scenario, params):
    return HalfDenoised(pipe)

@register("wrong_guidance", lossless=True, fidelity_hint=lambda params: "it doubles the guidance (a test variant)")
def wrong_guidance(pipe, scenario, params):
    """Declared lossless, but its transformer sees twice the guidance: another function from the first step on."""
    def double(module, args, kwargs):
        return args, {**kwargs, "guidance": kwargs["guidance"] * 2}
    pipe.transformer.register_forward_pre_hook(double, with_kwargs=True)
    return pipe

@register("inplace_twin", lossless=True, in_place=True)
def inplace_twin(pipe, scenario, params):
    """Eager again, but declared in place: eager is timed in a block before it and rebuilt after."""
    return pipe

@register("broken")
def broken(pipe, scenario, params):
    raise RuntimeError("simulated build failure")

@register("oom")
def oom(pipe, scenario, params):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")

@register("slow_build")
def slow_build(pipe, scenario, params):
    """A build that takes far longer than its limit, as a cold compile with autotuning can."""
    import time
    time.sleep(120)
    return pipe

@register("wedged")
def wedged(pipe, scenario, params):
    """A build that never ends while the session is stopped from outside (a CI time limit)."""
    import time
    time.sleep(600)
    return pipe
'''

SMALL = [
    "-m",
    "gpu",
    "--fluxperf-device=cpu",
    "--fluxperf-height=64",
    "--fluxperf-width=64",
    "--fluxperf-steps=4",
    "--fluxperf-num-prompts=2",
    "--fluxperf-rounds=3",
    "--fluxperf-max-rounds=6",
    "--fluxperf-lpips-random-backbone",
    "-p",
    "no:cacheprovider",
    "-W",
    "ignore::UserWarning",
]


# While a baseline is written every verdict against it skips: eager's stack and memory checks, and twin's speed,
# stack, memory and three quality comparisons; and both history checks (no history before the first session).
# twin's fidelity is judged within the session and passes.
RECORDED = {"passed": 7, "skipped": 10}


@contextlib.contextmanager
def own_dynamo():
    """For an in-process session that compiles. dynamo keeps compiled code and counts recompiles per function, per
    process: the session starts from a fresh interpreter's state (no earlier test's compiles count towards its
    recompile limit, past which dynamo would silently run eager), and leaves nothing for later tests (test_stacks
    counts its own recompiles)."""
    import torch

    torch._dynamo.reset()
    try:
        yield
    finally:
        torch._dynamo.reset()
