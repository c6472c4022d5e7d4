"""FP8 post-training quantization of the FLUX transformer with NVIDIA Model Optimizer (modelopt_fp8, trt_fp8).

The recipe is Model Optimizer's diffusers FP8 one: the `fp8` preset shipped in the wheel (per-tensor e4m3
weights, inputs and softmax, "max" calibration), attention quantized (q/k/v of every FluxAttention, which is
what lets TensorRT fuse an FP8 attention kernel), and the FLUX exclusions below kept in high precision.

Memory (FLUX.1-dev, bf16, batch 1): calibration runs the whole pipeline on the GPU, like eager: transformer
22.2 GiB + T5-XXL 8.9 GiB + CLIP and VAE 0.4 GiB, plus activations. Fake quantization adds no weight copies
(quantizers hold one scalar amax each), so calibration peaks about where eager does, ~33-36 GiB at 1024²:
it fits a 48 GB card. What the ONNX export needs is in fluxperf/trt.py.
"""

from __future__ import annotations

import copy

from fluxperf.optional import require

MODELOPT_INSTALL = 'pip install "nvidia-modelopt==0.47.*" onnx'

# Model Optimizer's FLUX filter, as fnmatch patterns over quantizer names. "proj_out*" is anchored, so it
# excludes the final projection and not the single blocks' proj_out, as in the recipe. The embedders and
# the output norm see the raw timestep/text/latent scales, which one per-tensor e4m3 scale can't cover.
EXCLUDED_MODULES = ("proj_out", "time_text_embed", "context_embedder", "x_embedder", "norm_out")
EXCLUDE_PATTERNS = ("proj_out*",) + tuple(f"*{name}*" for name in EXCLUDED_MODULES[1:])

# One image of 8 different prompts at the scenario's steps gives 8 × steps transformer calls, e.g. 224 at
# 28 steps: max calibration only tracks the largest |x| per tensor, and it already varies little past a
# handful of prompts (the recipe's 128 images cost an hour on FLUX.1-dev for amax changes in the noise).
DEFAULT_CALIB_SIZE = 8

_HIGH_PRECISION = {"bfloat16": "BFloat16", "float16": "Half", "float32": "Float"}


def require_modelopt():
    """Import modelopt's quantization API, and check onnx, without which attention isn't quantized."""
    mtq = require("modelopt.torch.quantization", MODELOPT_INSTALL)
    # modelopt's diffusers plugin (the one that quantizes FluxAttention) imports onnx and is silently
    # skipped when that import fails: the model would then quantize with no attention quantizers at all.
    require("onnx", MODELOPT_INSTALL)
    return mtq


def quant_config(dtype: str) -> dict:
    """The diffusers `fp8` preset + FP8 attention + FLUX exclusions, as a modelopt QuantizeConfig dict."""
    from modelopt.torch.opt.config_loader import load_config
    from modelopt.torch.quantization.config import QuantizeConfig

    preset = load_config("configs/ptq/presets/diffusers/fp8", schema_type=QuantizeConfig)
    config = copy.deepcopy(preset.model_dump(exclude_unset=True))
    config["quant_cfg"].append({"quantizer_name": "*[qkv]_bmm_quantizer", "cfg": {"num_bits": (4, 3), "axis": None}})
    # modelopt's FP8 attention export checks this against the q/k/v dtype and only accepts a 16-bit one,
    # the pattern TensorRT fuses: trt_fp8 needs a bfloat16 or float16 scenario (simulation runs in any).
    for entry in config["quant_cfg"]:
        cfg = entry.get("cfg")
        if isinstance(cfg, dict) and "num_bits" in cfg:
            cfg.setdefault("trt_high_precision_dtype", _HIGH_PRECISION[dtype])
    config["quant_cfg"] += [{"quantizer_name": pattern, "enable": False} for pattern in EXCLUDE_PATTERNS]
    return config


def calibration_prompts(scenario, calib_size: int) -> list[str]:
    if calib_size < 1:
        raise ValueError(f"calib_size must be >= 1, got {calib_size}")
    return list(scenario.prompts[:calib_size])


def calibration_calls(pipe, scenario, calib_size: int, text_tokens: int | None = None) -> None:
    """One pipeline call per calibration prompt at the scenario's resolution and steps, so that observers see every
    timestep and the token count that is timed; to the latents only (the VAE plays no part). The seeds are beyond
    the scenario's, so calibration never sees the exact latents that are judged. `text_tokens`: T5 tokens per prompt,
    the pipeline's default (512) unless given."""
    import torch

    tokens = {"max_sequence_length": text_tokens} if text_tokens else {}
    for i, prompt in enumerate(calibration_prompts(scenario, calib_size)):
        generator = torch.Generator(device="cpu").manual_seed(10_000 + i)
        pipe(
            prompt=prompt,
            height=scenario.height,
            width=scenario.width,
            num_inference_steps=scenario.steps,
            guidance_scale=scenario.guidance,
            generator=generator,
            output_type="latent",
            **tokens,
        )


def swap_rmsnorm(module) -> int:
    """Replace torch.nn.RMSNorm submodules with diffusers' RMSNorm, keeping weights; returns how many.

    diffusers' FluxAttention builds torch.nn.RMSNorm for its q/k norms, and the legacy ONNX exporter has no
    symbolic for aten::rms_norm at opset 20. Our pipelines are already built when a variant gets them, so
    instead of patching the class before construction we swap the instances. diffusers' RMSNorm computes
    the variance in float32 and exports as plain Pow/ReduceMean/Rsqrt/Mul. Both FP8 variants swap before
    calibrating, so that modelopt_fp8 simulates exactly the network trt_fp8 exports.
    """
    import torch
    from diffusers.models.normalization import RMSNorm

    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.RMSNorm:
                continue
            weight = child.weight
            eps = (
                child.eps
                if child.eps is not None
                else torch.finfo(weight.dtype if weight is not None else torch.float32).eps
            )
            new = RMSNorm(child.normalized_shape, eps=eps, elementwise_affine=weight is not None)
            if weight is not None:
                new.weight = weight
            setattr(parent, name, new.to(device=weight.device if weight is not None else None))
            swapped += 1
    return swapped


def quantize(pipe, scenario, calib_size: int = DEFAULT_CALIB_SIZE):
    """Insert FP8 quantizers into pipe.transformer in place and calibrate them on the pipeline itself.

    Calibration renders the first `calib_size` shipped prompts at the scenario's resolution and steps, so the
    amax values come from the same timesteps and token counts the benchmark runs.
    """
    import torch

    mtq = require_modelopt()
    prompts = calibration_prompts(scenario, calib_size)
    swap_rmsnorm(pipe.transformer)

    def forward_loop(_transformer):
        calibration_calls(pipe, scenario, len(prompts))

    # no_grad, not inference_mode: the amax buffers calibration creates must stay usable outside it.
    with torch.no_grad():
        mtq.quantize(pipe.transformer, quant_config(scenario.dtype), forward_loop)
    check_quantized(pipe.transformer)
    return pipe


def quantizers(module):
    """{name: TensorQuantizer} for every quantizer modelopt inserted under `module`."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return {name: q for name, q in module.named_modules() if isinstance(q, TensorQuantizer)}


def enabled_quantizers(module) -> dict:
    return {name: q for name, q in quantizers(module).items() if q.is_enabled}


def check_quantized(transformer) -> None:
    """Fail loudly where modelopt would silently produce a partly quantized model."""
    names = enabled_quantizers(transformer)
    attention = [n for n in names if n.endswith(("q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer"))]
    if not attention:
        raise RuntimeError(
            "modelopt inserted no attention quantizers (its diffusers plugin did not load); "
            f"check that onnx and diffusers import, then: {MODELOPT_INSTALL}"
        )
    leaked = [n for n in names if any(n == m or n.startswith(m + ".") for m in EXCLUDED_MODULES)]
    if leaked:
        raise RuntimeError(f"excluded layers still quantized: {', '.join(leaked[:5])}")
    # The softmax quantizer has no amax by design: its FP8 scale is fixed at 1.0 on export.
    uncalibrated = [
        n for n, q in names.items() if not n.endswith("softmax_quantizer") and getattr(q, "amax", None) is None
    ]
    if uncalibrated:
        raise RuntimeError(f"{len(uncalibrated)} quantizers were never calibrated, e.g. {uncalibrated[0]}")
