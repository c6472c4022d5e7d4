"""The fastest cache stack: MagCache at its authors' FLUX.1-dev setting on best_exact's pieces that compose with it.

What it stacks, each piece a tunable:

- the cache: diffusers' MagCache with FLUX.1-dev's magnitude ratios at the setting its authors publish for
  FLUX.1-dev, threshold 0.24, at most 5 consecutive skips, retention ratio 0.1 ("E024K5R01";
  https://github.com/Zehong-Ma/MagCache/tree/main/MagCache4FLUX, README and magcache_flux.py: ~14.26 s → ~5.05 s
  per image, 2.8×, FLUX.1-dev at 1024², 28 steps, one A800, no compile). At 28 steps it computes 8 steps and skips
  the other 20; the decision reads the ratio table and the step index, never the activations, so random weights
  skip what the real model skips. The tunables are magcache_compile's (`magcache_threshold`,
  `magcache_max_skip_steps`, `magcache_retention_ratio`), shared with it. Chosen over the other caches by this
  project's measurement (H100, synthetic model, 512², 28 steps, 4 prompts, 2026-12-06): magcache_compile 0.405 s
  per image (456 of 1596 block computations ran), pruna_cache_compile (FORA 2/2) 0.903 s, taylorseer_compile
  1.168 s, fbcache_compile 1.265 s (it never skips on random weights, so that one says nothing of FLUX.1-dev).
- compile: every transformer block's own forward, fullgraph, beneath MagCache's hooks, as magcache_compile does:
  the hooks' decisions are torch.compiler.disable'd, so a whole-transformer compile would break its graph at every
  block.
- `best_cached_fuse_qkv` (true), `best_cached_attention` ("_native_cudnn"), `best_cached_vae` ("compile"),
  `best_cached_text_encoder` ("compile") and `best_cached_fp8` ("off", or an ao_fp8 recipe with the shared
  `ao_fp8_*` tunables): best_exact's pieces, applied the same way and for the same reasons (its docstring). They
  weigh more here: with 20 of 28 steps skipped, T5's encode and the VAE's decode (about 55 ms of a 0.405 s image
  at 512² on an H100; ../shared/FACTS.md) are a seventh of the image.
- Not stacked: CUDA graphs. The blocks are 57 separate compiled calls with Python hooks between them, and all
  blocks of one type share one compiled graph while each holds its own weights, so CUDA graphs would record one
  graph per block, in a private memory pool, with Python deciding between them; not tried.

Lossy (the cache reuses residuals): held to the lossy floors. Needs: CUDA for the cuDNN attention and fp8; check()
names the tunables to set elsewhere (on the CPU: `best_cached_attention=default`). Nothing of this variant has
been measured on a GPU by this project yet.
"""

from fluxperf.variants import ao_fp8_compile as fp8
from fluxperf.variants import magcache_compile as magcache
from fluxperf.variants import register
from fluxperf.variants.best_exact import apply_pieces, check_pieces, inductor_options, piece_params
from fluxperf.variants.fbcache_compile import compile_blocks_under_hooks

PARAMS = {**piece_params("best_cached"), **magcache.PARAMS, **fp8.STATIC_PARAMS}


def check(scenario, params):
    check_pieces("best_cached", "best_cached", scenario, params)


# Not in_place: the pieces, the compiled forwards and the cache's hooks all go on share_modules' copy; eager's weights
# are only read. FluxPipeline resets the hooks' state at the end of every call, so every image starts from an empty
# cache (magcache_compile's docstring).
@register("best_cached", params=PARAMS, check=check)
def build(pipe, scenario, params):
    # The pieces first: fp8's static recipe calibrates on every step, which the cache would skip.
    apply_pieces(pipe, scenario, params, "best_cached")
    compile_blocks_under_hooks(pipe.transformer, inductor_options(params, "best_cached", cudagraphs=False))
    pipe.transformer.enable_cache(magcache.config(scenario, params))
    return pipe
