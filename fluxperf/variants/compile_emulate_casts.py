"""torch.compile on the transformer with inductor's emulate_precision_casts: compile rounding where eager rounds.

What it does: `compile` with `options={"emulate_precision_casts": True}`. By default inductor fuses chains of bf16
operations and keeps the intermediates in float32, eliding the bf16 rounding eager does after every operation: its
results are usually closer to an exact computation than eager's, but not eager's. With this option inductor keeps
those roundings (and, in Triton kernels, disables FMA contraction), so compiled code reproduces eager's numerics
where it can. It is what PyTorch's maintainers point to when compile and eager disagree (pytorch/pytorch#179520,
FLUX.1-dev compiled vs eager, LPIPS 0.38) and what a TensorRT-LLM pull request proposed turning on by default for its
video pipelines (NVIDIA/TensorRT-LLM#15317); docs/fidelity.md quotes both.

Why a variant and not a `compile` parameter: a parameter is one value per session, so the two could not be timed
beside each other, and a baseline records its variant's parameters, so adding one to `compile` would make every
recorded compile entry incomparable. As its own variant it has its own baseline and its own row.

What it is for: a team whose acceptance test compares final images with eager's bit for bit, or nearly. fluxperf's
own lossless check doesn't need it: it judges each step against eager's own rounding error, which plain compile
meets (docs/fidelity.md). On the tiny model in bf16 on CPU (torch 2.14.1, 8 steps) its transformer output equalled
eager's bit for bit at 7 of 8 steps (not guaranteed: inductor's maintainers promise no bitwise match,
pytorch/pytorch#141727), where plain compile's differed at every step by about eager's own error, being nearer a
float32 computation.

Cost: extra rounding instructions and no FMA contraction in the fused kernels. Not measured on a GPU by this project
yet: scripts/fidelity_gpu.py measures it beside plain compile.
"""

from fluxperf.variants import Unavailable, register

OPTIONS = {"emulate_precision_casts": True}


def check(scenario, params):
    if scenario.dtype == "float32":
        # The option keeps eager's roundings to a lower precision; a float32 session has none to keep, and the
        # variant would build compile's graph a second time for nothing (as the CPU smoke run of `make bench` would).
        raise Unavailable(
            "compile_emulate_casts keeps eager's roundings to bfloat16 or float16; this session runs "
            "in float32, where it computes what compile does (use --fluxperf-dtype=bfloat16)"
        )
    import torch._inductor.config as inductor_config

    # Present in torch 2.14.1 and in use since 2024 (pytorch/pytorch#136896); a torch without it would refuse the
    # option only at the first call, after eager had been timed for nothing.
    if not hasattr(inductor_config, "emulate_precision_casts"):
        import torch

        raise Unavailable(
            f"torch {torch.__version__} has no torch._inductor.config.emulate_precision_casts; upgrade torch"
        )


# Lossless: the same function as eager, rounded as eager rounds it. Not in_place: the compiled wrapper goes on the
# harness's copy of the modules, sharing eager's weights.
@register("compile_emulate_casts", lossless=True, check=check)
def build(pipe, scenario, params):
    import torch

    # fullgraph=True: a graph break is a build error, not a silent slowdown (as for `compile`).
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=True, options=dict(OPTIONS))
    return pipe
