"""Model Optimizer FP8, simulated in PyTorch: trt_fp8's recipe, with image quality measurable on any device."""

from fluxperf import fp8
from fluxperf.variants import register


# Fake quantization runs every GEMM in high precision plus quantize/dequantize ops, so it is slower than
# eager by design (timed=False); it exists to judge the recipe's images where TensorRT can't run.
# Quantizer insertion swaps modules of the harness's copy of the transformer; eager's weights are only read.
@register(
    "modelopt_fp8",
    timed=False,
    params={"calib_size": fp8.DEFAULT_CALIB_SIZE},
    libraries=("nvidia-modelopt",),
    check=lambda scenario, params: fp8.require_modelopt(),
)
def build(pipe, scenario, params):
    from fluxperf import timing

    fp8.require_modelopt()
    progress = params["progress"]
    prompts = fp8.calibration_prompts(scenario, int(params["calib_size"]))
    with progress.step(
        f"calibrating FP8 on {len(prompts)} prompts at {scenario.height}x{scenario.width}, {scenario.steps} steps",
        key="calibration_s",
    ):
        fp8.quantize(pipe, scenario, len(prompts))
    peak = timing.peak_gb(scenario.device)
    if peak is not None:
        # Since the build began: what a smaller card must hold for calibration (docs/results.md).
        progress.say(f"peak GPU memory through calibration: {peak:.1f} GB")
    return pipe
