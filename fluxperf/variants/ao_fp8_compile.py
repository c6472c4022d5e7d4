"""torchao float8 dynamic activations and weights, rowwise scales, on the transformer's linears, plus torch.compile.

What it does: `quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))` (torchao
0.18) gives every nn.Linear whose dimensions suit the fp8 matmul an e4m3 weight with one scale per output row;
at run time each input is quantized to e4m3 per row, with scales from its own absolute maximum, and the matmul runs
on the fp8 tensor cores. `torch.compile(fullgraph=True)` then fuses the activation quantization into the
surrounding kernels, which would otherwise be separate launches around every matmul.

Needs: an NVIDIA GPU of compute capability 8.9 or newer (Ada L4/L40S, Hopper, Blackwell), where torchao's fp8
kernels run; torchao refuses anything else, the CPU included. Rowwise scales need bfloat16 weights. check() says
which is missing before eager is timed.

When it wins or loses. Measured for this project on an H100 80GB HBM3 (FLUX.1-dev-shaped transformer, random
weights, bf16, batch 1, one denoising step, torch 2.11.0+cu130, diffusers 0.42.1; ../shared/FACTS.md), not with
this variant's code: at 512² fp8 + compile took 65.5 ms per step against 45.3 ms for bf16 compile, i.e. it was
slower. The likely reason: at 512² the matmuls are small (1,536 tokens), so quantizing every activation costs
more than the fp8 matmuls save; at 1024² (4,608 tokens) the matmuls weigh more and fp8 may win, but that was not
measured. Its cold compile took 369 s (bf16 compile: 138 s), and its output's relative error against bf16 was
0.089 on random weights. Nothing of this variant itself has been run on a GPU by this project yet.

Memory: quantize_ gives the harness's copy new fp8 weights (1 byte per parameter, at most ~11.9 GB for
FLUX.1-dev's transformer) while eager keeps its bf16 ones for the paired timing. That is an estimate, not a
measurement; next to the ~33 GB bf16 pipeline on a 48 GB L40S it may not fit.
"""

from fluxperf.variants import Unavailable, register, require

INSTALL = "pip install 'torchao>=0.18,<0.19'  (or: pip install -e '.[fp8]')"

# torchao's quantize_ sets these in torch._inductor.config for the whole process by default
# (recommended_inductor_config_setter). The variants share one process and are built one after another (this one
# right after eager), so that would change how every later variant compiles. They are passed to this variant's
# compile only.
INDUCTOR_OPTIONS = {"coordinate_descent_tuning": True, "coordinate_descent_check_all_directions": True}


def check(scenario, params):
    import torch

    device = torch.device(scenario.device)
    if device.type != "cuda":
        raise Unavailable(f"ao_fp8_compile needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, "
                          f"Blackwell) for torchao's float8 matmuls; this session runs on {scenario.device}")
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        raise Unavailable(f"ao_fp8_compile needs CUDA compute capability 8.9 or newer for torchao's float8 matmuls; "
                          f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}")
    if scenario.dtype != "bfloat16":
        raise Unavailable(f"ao_fp8_compile quantizes rowwise, which torchao only does from bfloat16 weights; this "
                          f"session runs in {scenario.dtype} (use --fluxperf-dtype=bfloat16)")
    require("torchao", INSTALL)


# Not in_place: quantize_ reads each linear's weight and gives the module a new Parameter holding the fp8 tensor
# (setattr(module, "weight", Parameter(Float8Tensor))); it never writes into the old tensor, which eager's linear
# still holds. The copy's linears get the new Parameters, eager's keep theirs.
@register("ao_fp8_compile", check=check, libraries=("torchao",))
def build(pipe, scenario, params):
    require("torchao", INSTALL)
    import torch
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(pipe.transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(),
                                                                         set_inductor_config=False))
    # fullgraph=True turns a graph break (a tensor-subclass op dynamo can't trace) into a build error instead of a
    # silent slowdown.
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=True, options=INDUCTOR_OPTIONS)
    return pipe
