"""The stack expected to be fastest without skipping any computation: compiled, CUDA-graphed, fused; lossless.

What it stacks, each piece a tunable (prefixed, so `--fluxperf-param=best_exact_cudagraphs=false` turns one off
without touching the code). The build fuses, sets the attention, quantizes, compiles the VAE and T5, and compiles the
transformer last:

- `best_exact_fuse_qkv` (true): diffusers' `fuse_qkv_projections()` on the transformer and the VAE. Each
  attention's q, k and v projections (and the text stream's three in the double blocks) become one matmul with a
  3× wider output: a third of the launches and larger GEMMs, which run closer to the matmul rate. flux-fast
  (github.com/huggingface/flux-fast, utils/pipeline_utils.py) does the same. Fusing writes new concatenated weights
  into the harness's copy (about 4.3 GB for FLUX.1-dev's transformer, an estimate from its shapes); eager keeps its
  separate projections.
- `best_exact_attention` ("_native_cudnn"): diffusers' attention backend for the transformer's attention. cuDNN's
  fused attention ships with PyTorch and needs no extra package ("flash" and "_flash_3" need packages this
  project can't install; ../shared/FACTS.md); PyTorch's SDPA does not pick it by itself. Whether it beats SDPA's
  own choice (FlashAttention-2) on FLUX's shapes is not measured: "default" leaves the choice to SDPA,
  "_native_flash" forces FlashAttention-2. Only the copy's attention processors are set: diffusers'
  `set_attention_backend()` would also make the backend the process-wide default, which eager's processors
  follow.
- `best_exact_fp8` ("off"): one of ao_fp8_compile's recipes ("row", "tensor", "static"), applied after fusing so the
  fused projections are quantized too, with the `ao_fp8_*` tunables those recipes share. Off by default: the one
  fp8 measurement this project has (rowwise, 512², H100, outside the variant) was slower than bf16 compile (65.5 vs
  45.3 ms per step; ../shared/FACTS.md). Turned on, the variant is still registered lossless, so
  test_fidelity_holds holds its transformer, step by step, to twice eager's own rounding error: fp8 counts as exact
  here only if it passes that.
- `best_exact_cudagraphs` (true): the transformer is compiled whole, fullgraph, with CUDA graphs (what
  mode="reduce-overhead" sets), so each denoising step is one graph launch. Measured outside this variant (H100,
  one step at 512², different machines; ../shared/FACTS.md): 42.7 ms against 45.3 ms for default-mode compile.
  False compiles the transformer as `compile` does.
- `best_exact_vae` ("compile"): the VAE decoder compiled (fullgraph; inductor picks the convolutions' memory
  layout itself), "channels_last" (eager, with the copy's convolution weights in channels-last layout, the one
  cuDNN's tensor-core convolutions work in; not measured here), or "eager". The decode took 23.6 ms per 512²
  image (H100; ../shared/FACTS.md).
- `best_exact_text_encoder` ("compile"): T5-XXL compiled, fullgraph. Its 512-token encode took 27-33 ms per image
  (H100; ../shared/FACTS.md), about four times its matmul floor (4.9 TFLOP at ~740 TFLOP/s, 6.6 ms): it is
  launch-bound like the eager transformer.

Not stacked: max-autotune GEMM tuning and flux-fast's other inductor flags (minutes more of build, not measured
here), ahead-of-time export (the suite builds per session), and anything that skips or predicts work.

Needs: CUDA for the CUDA graphs and the cuDNN attention, and what the fp8 recipe needs when it is on; check()
names the tunables to set to run the rest of the stack elsewhere (on the CPU: `best_exact_cudagraphs=false
best_exact_attention=default`). Nothing of this variant has been measured on a GPU by this project yet; the
compile it builds on ran 1.232-1.258 s per image at 512², 28 steps (synthetic model, H100s, 2026-12-06).
"""

from __future__ import annotations

from fluxperf.variants import Unavailable, register
from fluxperf.variants import ao_fp8_compile as fp8

# Backends that run off CUDA; every other diffusers backend needs a CUDA device.
CPU_ATTENTION = ("default", "native", "_native_math", "flex")
VAE_CHOICES = ("compile", "channels_last", "eager")
TEXT_ENCODER_CHOICES = ("compile", "eager")


def piece_params(prefix: str, **defaults) -> dict:
    """The pieces' tunables, `prefix`_name, with the defaults the docstrings argue for."""
    pieces = {
        "fuse_qkv": True,
        "attention": "_native_cudnn",
        "vae": "compile",
        "text_encoder": "compile",
        "fp8": "off",
        **defaults,
    }
    return {f"{prefix}_{key}": value for key, value in pieces.items()}


PARAMS = {**piece_params("best_exact", cudagraphs=True), **fp8.STATIC_PARAMS}


def check_pieces(name: str, prefix: str, scenario, params, cuda_only: dict[str, str] | None = None) -> None:
    """ValueError for a tunable no piece knows; Unavailable, naming the tunables to switch, for a CUDA-only piece
    off CUDA or a backend or fp8 recipe this session can't run. `cuda_only` maps boolean tunables that need CUDA
    to what they are called in the message."""
    import torch

    attention, fp8_recipe = str(params[f"{prefix}_attention"]), str(params[f"{prefix}_fp8"])
    for key, choices in (
        (f"{prefix}_vae", VAE_CHOICES),
        (f"{prefix}_text_encoder", TEXT_ENCODER_CHOICES),
        (f"{prefix}_fp8", ("off", *fp8.RECIPES)),
    ):
        if str(params[key]) not in choices:
            raise ValueError(f"{name}: {key} must be one of {', '.join(choices)}; got {params[key]!r}")
    backend = _backend(attention, f"{prefix}_attention")
    pieces, off = [], []
    if torch.device(scenario.device).type != "cuda":
        for key, label in (cuda_only or {}).items():
            if params[key]:
                pieces.append(label)
                off.append(f"{key}=false")
        if attention not in CPU_ATTENTION:
            pieces.append(f"the {attention} attention")
            off.append(f"{prefix}_attention=default")
        if fp8_recipe != "off":
            pieces.append(f"fp8 ({fp8_recipe})")
            off.append(f"{prefix}_fp8=off")
    if off:
        raise Unavailable(
            f"{name} stacks pieces that need CUDA ({', '.join(pieces)}); this session runs on "
            f"{scenario.device}; to run the rest of the stack pass " + " ".join(f"--fluxperf-param={o}" for o in off)
        )
    if backend is not None:
        from diffusers.models.attention_dispatch import _check_attention_backend_requirements

        try:
            _check_attention_backend_requirements(backend)
        except RuntimeError as exc:
            raise Unavailable(f"{name}: {exc} (or pass --fluxperf-param={prefix}_attention=default)") from None
    if fp8_recipe != "off":
        fp8.check_fp8(name, scenario, params, fp8_recipe)


def _backend(attention: str, key: str = "attention"):
    if attention == "default":
        return None
    from diffusers.models.attention_dispatch import AttentionBackendName

    try:
        return AttentionBackendName(attention)
    except ValueError:
        names = ", ".join(["default", *(b.value for b in AttentionBackendName)])
        raise ValueError(f"{key} must be one of {names}; got {attention!r}") from None


def set_attention(transformer, attention: str) -> int:
    """Point the copy's attention processors at `attention`; returns how many. Leaves the process-wide default
    alone (ModelMixin.set_attention_backend sets it too), so eager's processors, which follow it, are untouched."""
    backend = _backend(attention)
    if backend is None:
        return 0
    count = 0
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            # share_modules deep-copies the processors with their modules: this instance is the copy's alone.
            processor._attention_backend = backend
            count += 1
    if not count:
        raise RuntimeError(f"no attention processor of {type(transformer).__name__} takes a backend")
    return count


def channels_last(module) -> int:
    """Give the copy's 2-D convolutions channels-last weights; returns how many."""
    import torch

    count = 0
    for conv in module.modules():
        if isinstance(conv, torch.nn.Conv2d):
            # A new Parameter on the copy's convolution: Module.to(memory_format=...) would restride the shared
            # Parameter itself (param.data = ...), and eager's convolution with it.
            conv.weight = torch.nn.Parameter(
                conv.weight.detach().contiguous(memory_format=torch.channels_last), requires_grad=False
            )
            count += 1
    return count


def apply_pieces(pipe, scenario, params, prefix: str) -> None:
    """Everything but the transformer's compile: fused projections, attention backend, fp8, VAE, text encoder."""
    if params[f"{prefix}_fuse_qkv"]:
        pipe.transformer.fuse_qkv_projections()
        pipe.vae.fuse_qkv_projections()
    set_attention(pipe.transformer, str(params[f"{prefix}_attention"]))
    recipe = str(params[f"{prefix}_fp8"])
    if recipe != "off":
        # Before anything is compiled: the static recipe calibrates on uncompiled calls of the pipeline.
        fp8.quantize(pipe, scenario, params, recipe)
    vae = str(params[f"{prefix}_vae"])
    if vae == "channels_last":
        channels_last(pipe.vae)
    elif vae == "compile":
        # Module.compile wraps this instance's call only: eager's decoder, another instance, stays as it is.
        pipe.vae.decoder.compile(fullgraph=True)
    if str(params[f"{prefix}_text_encoder"]) == "compile":
        pipe.text_encoder_2.compile(fullgraph=True)


def inductor_options(params, prefix: str, cudagraphs: bool) -> dict:
    options = {"triton.cudagraphs": True} if cudagraphs else {}
    if str(params[f"{prefix}_fp8"]) != "off":
        options.update(fp8.compile_options(params))
    return options


def check(scenario, params):
    check_pieces("best_exact", "best_exact", scenario, params, cuda_only={"best_exact_cudagraphs": "CUDA graphs"})


def fidelity_hint(params) -> str | None:
    """With fp8 on, quantization is what a fidelity failure points at: the fix is a tunable, not the registration."""
    recipe = str(params["best_exact_fp8"])
    if recipe == "off":
        return None
    return (
        f"best_exact_fp8={recipe} quantizes the transformer, which changes the function: pass "
        "--fluxperf-param=best_exact_fp8=off to keep best_exact exact, or time fp8 with an ao_fp8_* variant "
        "(ao_fp8_compile, ao_fp8_tensor_compile, ao_fp8_static_compile), which the image floors judge"
    )


# Lossless: every piece computes what eager computes, up to float rounding (fp8 off by default; on, it must still pass
# test_fidelity_holds, and fidelity_hint says what to do when it doesn't). Not in_place: every piece adds modules,
# Parameters, processors' settings or compiled calls to share_modules' copy; eager's weights are only read.
@register("best_exact", lossless=True, params=PARAMS, check=check, fidelity_hint=fidelity_hint)
def build(pipe, scenario, params):
    import torch

    apply_pieces(pipe, scenario, params, "best_exact")
    options = inductor_options(params, "best_exact", cudagraphs=bool(params["best_exact_cudagraphs"]))
    # fullgraph=True: a graph break would split the transformer into several graphs with eager code between them, a
    # silent slowdown (and, with CUDA graphs, several graphs per step); here it is a build error.
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=True, **({"options": options} if options else {}))
    return pipe
