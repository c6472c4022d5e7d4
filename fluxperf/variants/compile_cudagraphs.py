"""torch.compile with CUDA graphs (mode="reduce-overhead", fullgraph=True) on the transformer; lossless.

What it does: inductor compiles the transformer as `compile` does, then records its kernels into a CUDA graph and
replays the graph every step, so a step costs one launch from the host instead of hundreds. Needs a CUDA device;
check() skips it elsewhere before eager is timed.

When it wins or loses. It pays only where the host sets the pace: at 512², where eager is host-bound and compile
still leaves gaps between launches. Measured for this project on H100s (FLUX.1-dev-shaped transformer, random
weights, bf16, batch 1, one denoising step, torch 2.11.0+cu130, diffusers 0.42.1; ../shared/FACTS.md), not with this
variant's code: 42.7 ms per step at 512², with a 2.1% coefficient of variation, against 45.3 ms for default-mode
compile; the two were measured on different H100 machines, so the 6% gap is only indicative. At 1024², which is
GPU-bound, little gain is expected; not measured. Nothing of this variant has been run on a GPU by this project yet.

Costs: one graph is recorded per input shape (per resolution), and its static input and output buffers stay in a
private memory pool for as long as the variant is built. Where a call can't be graphed (a CPU tensor, a mutated
input) torch logs "skipping cudagraphs due to ..." and runs the compiled code without graphs, which then times
like `compile`.
"""

from fluxperf.variants import Unavailable, register


def check(scenario, params):
    import torch

    if torch.device(scenario.device).type != "cuda":
        raise Unavailable(
            f"compile_cudagraphs needs a CUDA device (CUDA graphs are a CUDA feature); this session runs "
            f"on {scenario.device}"
        )


# Lossless: the same inductor kernels as compile, replayed from a graph. Not in_place: the compiled wrapper goes on
# the harness's copy, and the graphs read the shared weights where they are.
@register("compile_cudagraphs", lossless=True, check=check)
def build(pipe, scenario, params):
    import torch

    # fullgraph=True: a graph break would split the transformer into several graphs with eager code between them,
    # a silent slowdown; here it is a build error.
    pipe.transformer = torch.compile(pipe.transformer, mode="reduce-overhead", fullgraph=True)
    return pipe
