"""TensorRT FP8: the transformer quantized with Model Optimizer's recipe and compiled to a TensorRT engine."""

from fluxperf import fp8
from fluxperf.variants import MissingDependency, register


def check(scenario, params):
    from fluxperf import trt as engine

    # Before eager is timed for the in-place build, and before minutes of calibration.
    engine.require_tensorrt()
    fp8.require_modelopt()
    if not str(scenario.device).startswith("cuda"):
        raise MissingDependency("a CUDA device", "TensorRT runs on NVIDIA GPUs: run the scenario on cuda")


# in_place: the shared transformer's weights leave the GPU for the engine build, and eager's with them.
@register(
    "trt_fp8",
    in_place=True,
    params={"calib_size": fp8.DEFAULT_CALIB_SIZE},
    check=check,
    libraries=("tensorrt", "nvidia-modelopt"),
)
def build(pipe, scenario, params):
    import torch

    from fluxperf import trt as engine

    check(scenario, params)
    progress = params["progress"]
    device = torch.device(scenario.device)
    transformer = pipe.transformer
    spec = engine.io_spec(scenario, transformer.config)
    prompts = fp8.calibration_prompts(scenario, int(params["calib_size"]))
    key = engine.cache_key(
        scenario, spec, fp8.quant_config(scenario.dtype), prompts, engine.versions(), torch.cuda.get_device_name(device)
    )
    folder = engine.engine_dir(params["cache_dir"], key)
    plan = folder / "engine.plan"

    if plan.exists():
        progress.say(f"reusing the cached engine {plan}")
    else:
        _calibrate_and_build(pipe, scenario, prompts, spec, plan, progress)

    # The PyTorch transformer is no longer called: free its 22 GiB of GPU memory for the engine.
    transformer.to("cpu")
    torch.cuda.empty_cache()
    runner = engine.EngineRunner(plan, spec)
    pipe.transformer = engine.TRTTransformer(runner, transformer.config, spec, transformer.dtype, device)
    return pipe


def _calibrate_and_build(pipe, scenario, prompts, spec, plan, progress) -> None:
    """Calibrate FP8 on the scenario's prompts, export the quantized transformer to ONNX, build the engine at `plan`."""
    import torch

    from fluxperf import trt as engine

    transformer, device = pipe.transformer, torch.device(scenario.device)
    others = [m for m in (pipe.text_encoder, pipe.text_encoder_2, pipe.vae) if m is not None]
    with progress.step(
        f"calibrating FP8 on {len(prompts)} prompts at {scenario.height}x{scenario.width}, {scenario.steps} steps",
        key="calibration_s",
    ):
        fp8.quantize(pipe, scenario, len(prompts))
    onnx_path = plan.parent / "onnx" / "model.onnx"
    try:
        # The export and the build need the GPU for the transformer alone (memory: see fluxperf/trt.py).
        for module in others:
            module.to("cpu")
        torch.cuda.empty_cache()
        with progress.step("exporting the quantized transformer to ONNX", key="export_s"):
            engine.export_onnx(transformer, spec, onnx_path, guidance=scenario.guidance)
        transformer.to("cpu")
        torch.cuda.empty_cache()
        with progress.step("building the TensorRT engine", key="engine_build_s"):
            engine.build_engine(onnx_path, spec, plan)
    finally:
        for module in others:
            module.to(device)
    engine.discard_onnx(onnx_path.parent)
