"""torchao float8 with static per-tensor activation scales, calibrated on the pipeline, plus torch.compile.

What it does: observers are put on the transformer's linears (torchao 0.18's
`Float8StaticActivationFloat8WeightConfig(step="prepare")`, a prototype API re-exported from torchao.quantization),
the pipeline renders `ao_fp8_calib_size` images (default 2) of the scenario's first prompts at its resolution and
steps, with seeds the benchmark never uses, and `step="convert"` then fixes one e4m3 scale per weight and one per
linear's input from the largest absolute value seen. At run time an input is only multiplied, clamped and cast (no
reduction over it, nothing dynamic), which inductor fuses into the kernel that produced it, and the matmul is
cuBLAS's per-tensor-scaled fp8 GEMM. The embedders, the output norm and the final projection stay bf16, as in
Model Optimizer's FLUX recipe (fluxperf/fp8.py; its `modelopt_fp8` and `trt_fp8` use the same exclusions), because
the raw timestep, text and latent scales they see don't suit one scale fixed in advance.

Why it is here: calibrated per-tensor activation scales are Model Optimizer's FP8 recipe for FLUX, the one
TensorRT's FP8 engines are built from (`trt_fp8`; ../shared/FACTS.md). They remove the per-call activation
reduction that may cost dynamic fp8 its lead at 512² (ao_fp8_compile's docstring). Unlike trt_fp8 it needs no
TensorRT and quantizes no attention.

Costs and risks (not measured by this project yet): calibration adds `ao_fp8_calib_size` eager-speed images to
the build (eager measured 1.7-2.2 s per image at 512² on H100s), plus the observers' cost. A prompt whose
activations exceed the calibrated range is clipped: with real weights the quality floor may need more calibration
prompts. Tunables shared with the other fp8 recipes: `ao_fp8_tuning` (off), `ao_fp8_min_features` (0).

Needs: what ao_fp8_tensor_compile needs; check() says what is missing before eager is timed. Memory: as
ao_fp8_compile, plus one float32 scale per linear.
"""

from fluxperf.variants import register
from fluxperf.variants.ao_fp8_compile import STATIC_PARAMS, build_recipe, fp8_check

check = fp8_check("ao_fp8_static_compile", "static")


# Not in_place: the prepare and convert steps swap the copy's linears for new modules that hold eager's bias and
# new fp8 weights; eager's linears and weights are only read.
@register("ao_fp8_static_compile", params=STATIC_PARAMS, libraries=("torchao",), check=check)
def build(pipe, scenario, params):
    return build_recipe(pipe, scenario, params, "static")
