"""torchao float8 on the transformer's linears with dynamic per-tensor scales, plus torch.compile.

What it does: as `ao_fp8_compile`, but each weight and each activation gets one scale for the whole tensor
(`Float8DynamicActivationFloat8WeightConfig(granularity=PerTensor())`, torchao 0.18). PyTorch's `_scaled_mm` then
runs cuBLASLt's per-tensor-scaled fp8 GEMM instead of its CUTLASS rowwise kernel. The activation's scale needs a
reduction over the whole tensor before any element can be quantized, where a row's scale needs only its row. Tunables
and their defaults are ao_fp8_compile's (`ao_fp8_tuning` off, `ao_fp8_min_features` 0), shared with it.

Why it is here: ao_fp8_compile's rowwise recipe was slower than bf16 compile at 512² (65.5 vs 45.3 ms per step,
H100, outside the variant; ../shared/FACTS.md); per-tensor scaling is the other recipe torchao ships for dynamic
fp8, and torchao's default when no granularity is given. Coarser scales cost accuracy where one channel's
outliers set the scale for all.

Needs: what ao_fp8_compile needs, except bfloat16 (torchao asserts it for rowwise scales only); check() says what
is missing before eager is timed. Memory: as ao_fp8_compile (fp8 weights of the copy beside eager's bf16 ones).
Not measured by this project on a GPU: speed, build time, quality.
"""

from fluxperf.variants import register
from fluxperf.variants.ao_fp8_compile import PARAMS, build_recipe, fp8_check

check = fp8_check("ao_fp8_tensor_compile", "tensor")


# Not in_place, for ao_fp8_compile's reason: the copy's linears get new Parameters, eager's keep theirs.
@register("ao_fp8_tensor_compile", params=PARAMS, libraries=("torchao",), check=check)
def build(pipe, scenario, params):
    return build_recipe(pipe, scenario, params, "tensor")
