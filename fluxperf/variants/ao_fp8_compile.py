"""torchao float8 on the transformer's linears, dynamic rowwise scales (flux-fast's recipe), plus torch.compile.

What it does: `quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))` (torchao
0.18) gives every nn.Linear whose dimensions suit the fp8 matmul (both multiples of 16) an e4m3 weight with one scale
per output row; at run time each input is quantized to e4m3 per row, with scales from its own absolute maximum, and
the matmul runs on the fp8 tensor cores (`torch._scaled_mm`). `torch.compile(fullgraph=True)` then fuses the
activation quantization into the surrounding kernels. The same module holds what the other fp8 recipes share:
`ao_fp8_tensor_compile` (dynamic per-tensor scales) and `ao_fp8_static_compile` (static per-tensor activation
scales, calibrated), and `best_exact` / `best_cached` when their `*_fp8` tunable names a recipe.

Needs: an NVIDIA GPU of compute capability 8.9 or newer (Ada L4/L40S, Hopper, Blackwell), where torchao's fp8
kernels run; torchao refuses anything else, the CPU included. Rowwise scales need bfloat16 weights. check() says
which is missing before eager is timed.

Build cost, `ao_fp8_tuning` (default "off"). Measured: the recipe outside this variant, with torchao's recommended
inductor settings (coordinate-descent tuning in all directions, which `quantize_` sets process-wide by default),
took 369 s to compile cold at 512² against 138 s for bf16 compile (H100 80GB HBM3, one denoising step, torch
2.11.0+cu130; ../shared/FACTS.md, 2026-11-25); this variant, with the same two settings passed to its compile,
had not finished its build after ~530 s (H100, synthetic, 512², 2026-12-06). Not measured: how much of that the
tuning costs. Read from torch's source (torch/_inductor/runtime/coordinate_descent_tuner.py): at the first launch
of every distinct Triton kernel, coordinate-descent tuning compiles and benchmarks the neighbouring block sizes,
warps and stages one field at a time until none is faster; `check_all_directions` then also tries the Cartesian
product of every field's neighbours (up to 3^5 configurations per kernel, each compiled by Triton) and repeats the
descent after every improvement. It tunes only inductor's Triton kernels (the activation quantization, norms,
rotary embedding, activations); the fp8 matmuls are `_scaled_mm` library calls it never touches, so its gain is
expected to be small (not measured). Hence "off" by default; "coordinate_descent" and "all_directions" restore
what torchao recommends, for measuring what they cost and bring. Their results go to inductor's autotune cache, so
a build whose cache is warm skips the tuning.

Scope, `ao_fp8_min_features` (default 0: every linear torchao accepts, as flux-fast does): a linear is quantized
only when both its input and output features are at least this many. 3072 keeps FLUX.1-dev's block linears, the
context embedder and the timestep/norm projections, and leaves the small embedders and the final projection in
bf16.

When it wins or loses. Measured for this project on an H100 80GB HBM3 (FLUX.1-dev-shaped transformer, random
weights, bf16, batch 1, one denoising step, torch 2.11.0+cu130, diffusers 0.42.1; ../shared/FACTS.md), not with
this variant's code: at 512² fp8 + compile took 65.5 ms per step against 45.3 ms for bf16 compile, i.e. it was
slower. Not measured: why. Two candidates: at 512² the matmuls are small (1,536 tokens), so quantizing every
activation may cost more than the fp8 matmuls save; and rowwise-scaled `_scaled_mm` runs a CUTLASS kernel in
PyTorch, where per-tensor scaling runs cuBLASLt's (ao_fp8_tensor_compile). At 1024² (4,608 tokens) the matmuls
weigh more and fp8 may win. Its output's relative error against bf16 was 0.089 on random weights (same source).
Nothing of this variant itself has been measured on a GPU by this project yet.

Memory: quantize_ gives the harness's copy new fp8 weights (1 byte per parameter, at most ~11.9 GB for
FLUX.1-dev's transformer) while eager keeps its bf16 ones for the paired timing. That is an estimate, not a
measurement; next to the ~33 GB bf16 pipeline on a 48 GB L40S it may not fit.
"""

from fluxperf.variants import Unavailable, register, require

INSTALL = "pip install 'torchao>=0.18,<0.19'  (or: pip install -e '.[fp8]')"

# Prefixed because --fluxperf-param names are shared across variants: every fp8 recipe and the best_* stacks read
# these, so one value applies to all of them in a session.
PARAMS = {"ao_fp8_tuning": "off", "ao_fp8_min_features": 0}
# Static scales are calibrated on this many of the scenario's prompts (one image each, every denoising step).
STATIC_PARAMS = {**PARAMS, "ao_fp8_calib_size": 2}

# Passed to this variant's compile only. torchao's quantize_ would set the last two process-wide by default
# (recommended_inductor_config_setter); the variants share one process and are built one after another, so that
# would change how every later variant compiles.
TUNING = {
    "off": {},
    "coordinate_descent": {"coordinate_descent_tuning": True},
    "all_directions": {"coordinate_descent_tuning": True, "coordinate_descent_check_all_directions": True},
}

# row: dynamic rowwise scales; tensor: dynamic per-tensor scales; static: per-tensor activation scales calibrated
# once, dynamic nothing.
RECIPES = ("row", "tensor", "static")


def compile_options(params) -> dict:
    """Inductor options for a compile of fp8 code, from `ao_fp8_tuning`."""
    tuning = str(params["ao_fp8_tuning"])
    if tuning not in TUNING:
        raise ValueError(f"ao_fp8_tuning must be one of {', '.join(TUNING)}; got {tuning!r}")
    return dict(TUNING[tuning])


def check_fp8(name: str, scenario, params, recipe: str) -> None:
    """Raise Unavailable unless `recipe` can run in this session; ValueError for a bad tunable."""
    import torch

    if recipe not in RECIPES:
        raise ValueError(f"{name}: unknown fp8 recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    compile_options(params)
    device = torch.device(scenario.device)
    if device.type != "cuda":
        raise Unavailable(
            f"{name} needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell) for "
            f"torchao's float8 matmuls; this session runs on {scenario.device}"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        raise Unavailable(
            f"{name} needs CUDA compute capability 8.9 or newer for torchao's float8 matmuls; "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}"
        )
    if recipe == "row" and scenario.dtype != "bfloat16":
        raise Unavailable(
            f"{name} quantizes rowwise, which torchao only does from bfloat16 weights; this session "
            f"runs in {scenario.dtype} (use --fluxperf-dtype=bfloat16)"
        )
    require("torchao", INSTALL)


def fused_away(transformer) -> set[str]:
    """Names of the projections that fused attentions no longer call (fuse_qkv_projections keeps them in place)."""
    unused = set()
    for name, module in transformer.named_modules():
        if not getattr(module, "fused_projections", False):
            continue
        for fused, parts in (
            ("to_qkv", ("to_q", "to_k", "to_v")),
            ("to_kv", ("to_k", "to_v")),
            ("to_added_qkv", ("add_q_proj", "add_k_proj", "add_v_proj")),
        ):
            if hasattr(module, fused):
                unused.update(f"{name}.{part}" for part in parts if getattr(module, part, None) is not None)
    return unused


def _selected(min_features: int, exclude: tuple[str, ...] = (), unused: set[str] = frozenset()):
    import torch

    def keep(module, fqn: str) -> bool:
        if not isinstance(module, torch.nn.Linear) or fqn in unused:
            return False
        # _scaled_mm needs both dimensions to be multiples of 16. torchao's dynamic recipes skip other linears
        # themselves; the static one would fail at run time instead, so all three are held to it here.
        dims = (module.in_features, module.out_features)
        return all(d % 16 == 0 for d in dims) and min(dims) >= min_features and fqn.split(".")[0] not in exclude

    return keep


def quantized_linears(module) -> list[str]:
    """Names of the linears whose weight is a torchao float8 tensor."""
    import torch
    from torchao.utils import TorchAOBaseTensor

    return [
        name
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear) and isinstance(m.weight, TorchAOBaseTensor)
    ]


def calibrate(pipe, scenario, calib_size: int) -> None:
    """One image per calibration prompt at the scenario's resolution and steps, as modelopt_fp8 calibrates
    (fp8.calibration_calls), with the token count that is timed."""
    import torch

    from fluxperf import fp8
    from fluxperf.models import max_sequence_length

    with torch.no_grad():
        fp8.calibration_calls(pipe, scenario, calib_size, max_sequence_length(pipe))


def quantize(pipe, scenario, params, recipe: str) -> list[str]:
    """Quantize the linears of `pipe.transformer` (the harness's copy) to float8 with `recipe`; returns their names.

    Not in place: quantize_ gives each chosen linear of the copy a new Parameter holding the fp8 tensor
    (setattr(module, "weight", Parameter(...))), or, for the static recipe, swaps the copy's linear for an observing
    one and then for a new linear; it never writes into the old tensor, which eager's linear still holds.
    """
    require("torchao", INSTALL)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

    from fluxperf.progress import Progress

    progress = params.get("progress") or Progress(sink=lambda _line: None)
    transformer = pipe.transformer
    min_features = int(params["ao_fp8_min_features"])
    # After fuse_qkv_projections (best_exact, best_cached) the separate projections stay on the module unused: an fp8
    # copy of them would cost memory, and the static recipe's observers on them would never see an input.
    unused = fused_away(transformer)
    if recipe in ("row", "tensor"):
        config = Float8DynamicActivationFloat8WeightConfig(
            granularity=PerRow() if recipe == "row" else PerTensor(), set_inductor_config=False
        )
        quantize_(transformer, config, filter_fn=_selected(min_features, unused=unused))
    elif recipe == "static":
        from fluxperf import fp8

        # Model Optimizer's FLUX exclusions (fluxperf/fp8.py): the embedders and the output norm see the raw
        # timestep, text and latent scales, which one per-tensor scale fixed in advance can't cover.
        keep = _selected(min_features, exclude=fp8.EXCLUDED_MODULES, unused=unused)
        _quantize_static(pipe, scenario, params, keep, progress)
    else:
        raise ValueError(f"unknown fp8 recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    names = quantized_linears(transformer)
    if not names:
        raise RuntimeError(
            f"fp8 ({recipe}) quantized no linear of the transformer: ao_fp8_min_features="
            f"{min_features} excludes them all"
        )
    progress.say(f"fp8 ({recipe}) on {len(names)} linears")
    return names


def _quantize_static(pipe, scenario, params, keep, progress) -> None:
    """The static recipe: observers on the chosen linears, calibration on the scenario's prompts, then fp8 linears
    with the observed per-tensor activation scales."""
    from torchao.prototype.quantization.quant_api import Float8ObservedLinear
    from torchao.quantization import Float8StaticActivationFloat8WeightConfig, quantize_

    transformer = pipe.transformer
    quantize_(
        transformer, Float8StaticActivationFloat8WeightConfig(step="prepare", set_inductor_config=False), filter_fn=keep
    )
    calib_size = int(params["ao_fp8_calib_size"])
    with progress.step(
        f"calibrating fp8 activation scales on {calib_size} prompt(s) at "
        f"{scenario.height}x{scenario.width}, {scenario.steps} steps",
        key="calibration_s",
    ):
        calibrate(pipe, scenario, calib_size)
    quantize_(
        transformer,
        Float8StaticActivationFloat8WeightConfig(step="convert", set_inductor_config=False),
        filter_fn=lambda module, fqn: isinstance(module, Float8ObservedLinear),
    )


def build_recipe(pipe, scenario, params, recipe: str):
    """Quantize with `recipe`, then compile the whole transformer, fullgraph."""
    import torch

    quantize(pipe, scenario, params, recipe)
    options = compile_options(params)
    # fullgraph=True turns a graph break (a tensor-subclass op dynamo can't trace) into a build error instead of a
    # silent slowdown. With tuning off the compile is configured exactly as `compile`'s.
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=True, **({"options": options} if options else {}))
    return pipe


def fp8_check(name: str, recipe: str):
    """The check a recipe's variant registers: check_fp8 under the variant's own name."""
    return lambda scenario, params: check_fp8(name, scenario, params, recipe)


@register("ao_fp8_compile", params=PARAMS, libraries=("torchao",), check=fp8_check("ao_fp8_compile", "row"))
def build(pipe, scenario, params):
    return build_recipe(pipe, scenario, params, "row")
