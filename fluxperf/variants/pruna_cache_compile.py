"""pruna's FORA cacher plus pruna's torch_compile compiler on the blocks that FORA runs."""

from fluxperf.variants import register
from fluxperf.variants.pruna_cache import FORA_PARAMS, check, smash_fora


# pruna's torch_compile keeps its defaults (inductor, default mode, no fullgraph), as the reference comparison did;
# it compiles lazily, so the harness's warm-up pays the compile.
@register("pruna_cache_compile", params=FORA_PARAMS, check=check, libraries=("pruna",))
def build(pipe, scenario, params):
    return smash_fora(pipe, scenario, params, compile=True)
