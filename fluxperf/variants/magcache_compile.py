"""diffusers' MagCache with FLUX.1-dev's magnitude ratios and its authors' setting, plus torch.compile of every block.

What it does: MagCache skips all 57 transformer blocks on a step, adding the residual (output minus input) of the
last computed step, while an error budget allows it. The budget grows each step by |1 - product of the ratios since
the last computed step|, read from a table of per-step ratios of residual magnitudes that its authors calibrated
offline on FLUX.1-dev at 28 steps (`diffusers.hooks.mag_cache.FLUX_MAG_RATIOS`; diffusers stretches the table to
the scenario's step count). A step is computed when the budget passes `magcache_threshold`, after
`magcache_max_skip_steps` skips in a row, and for the first `magcache_retention_ratio` of the steps. At 28 steps
the default setting below computes 8 steps and skips 20 (3-4, 6-8, 10-14, 16-20, 22-25 and 27, counted from 0);
diffusers' defaults compute 14.

Not adaptive, unlike First Block Cache: in diffusers 0.42.1 the skip decision reads only that table and the step
index, never the model's activations, so the same steps are skipped on random weights as on the real model (the
tests check that two differently seeded transformers skip the same steps). Only the image error of a skip depends
on the weights.

Setting: the authors' FLUX.1-dev script uses threshold 0.24, K=5 consecutive skips, retention ratio 0.1
("E024K5R01"; https://github.com/Zehong-Ma/MagCache/tree/main/MagCache4FLUX, magcache_flux.py), with the same
ratio table diffusers ships. diffusers' `MagCacheConfig` defaults (0.06, 3, 0.2) are generic and more conservative
(https://huggingface.co/docs/diffusers/main/en/api/cache#diffusers.MagCacheConfig); pass them with
--fluxperf-param to compare.

When it wins or loses (published by others; nothing of this variant has been run on a GPU by this project yet):
- MagCache4FLUX README, FLUX.1-dev, 28 steps at the pipeline's default 1024², one A800, no compile: about 14.26 s →
  5.05 s (2.8×) at E024K5R01; TeaCache 0.6 gave 5.65 s.
- The skipped steps cost nothing but a tensor add, so its saving is the share of steps skipped, on top of compile;
  its decision is host arithmetic, with no read-back from the GPU. It loses quality where the real trajectory
  departs from the calibrated table: another scheduler, shift, guidance or a LoRA would need new ratios
  (MagCacheConfig(calibrate=True)).

How it composes with compile (checked on CPU with torch 2.14.1 and diffusers 0.42.1): MagCache's block hooks are
`torch.compiler.disable`d as a whole. `compile_repeated_blocks(fullgraph=True)` fails on them; without fullgraph,
and with `torch.compile(transformer)`, dynamo silently skips them and the blocks run eager (0 graphs for the blocks).
So, as in fbcache_compile, each block's own forward is compiled with fullgraph=True beneath the hooks: no graph
break, images within 1e-6 of the uncompiled cache.
"""

from fluxperf.variants import register
from fluxperf.variants.fbcache_compile import compile_blocks_under_hooks

# The authors' FLUX.1-dev setting (above); prefixed because --fluxperf-param names are shared across variants.
PARAMS = {"magcache_threshold": 0.24, "magcache_max_skip_steps": 5, "magcache_retention_ratio": 0.1}


def config(scenario, params):
    from diffusers import MagCacheConfig
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

    # num_inference_steps must be the steps the pipeline really runs: the hooks count steps against it to index
    # the ratio table.
    return MagCacheConfig(
        threshold=float(params["magcache_threshold"]),
        max_skip_steps=int(params["magcache_max_skip_steps"]),
        retention_ratio=float(params["magcache_retention_ratio"]),
        num_inference_steps=scenario.steps,
        mag_ratios=FLUX_MAG_RATIOS,
    )


# Not in_place: hooks and compiled forwards on share_modules' copies only; the weights are only read. FluxPipeline
# resets the hooks' state at the end of every call (maybe_free_model_hooks -> transformer._reset_stateful_cache), and
# the hooks reset themselves once they have counted num_inference_steps, so every image starts from an empty cache.
@register("magcache_compile", params=PARAMS)
def build(pipe, scenario, params):
    compile_blocks_under_hooks(pipe.transformer)
    pipe.transformer.enable_cache(config(scenario, params))
    return pipe
