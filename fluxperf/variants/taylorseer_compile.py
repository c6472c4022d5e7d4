"""diffusers' TaylorSeer cache with the FLUX.1-dev schedule of diffusers' caching guide, plus regional torch.compile.

What it does: every attention module of the transformer (the 19 double and 38 single blocks' `attn`) is computed
for the first `taylorseer_disable_cache_before_step` steps, then once every `taylorseer_cache_interval` steps; in
between its output is extrapolated with a Taylor series of order `taylorseer_max_order` from the last computed
outputs. The feed-forward layers and norms still run every step. The schedule is fixed by the step index, not by
the activations, so the variant is not adaptive: random weights skip what the real model skips.

Schedule: cache_interval=5, max_order=1, disable_cache_before_step=10, factors kept in bfloat16, the FLUX.1-dev
example of diffusers' caching guide (https://huggingface.co/docs/diffusers/main/en/optimization/cache, "TaylorSeer
Cache"); `TaylorSeerCacheConfig` itself defaults to disable_cache_before_step=3
(https://huggingface.co/docs/diffusers/main/en/api/cache#diffusers.TaylorSeerCacheConfig). With FLUX's 28 steps it
predicts 14 of them (steps 10, 12-15, 17-20, 22-25, 27, counted from 0). A run of 10 steps or fewer never
predicts anything, so check() skips the variant there rather than time compile under another name. diffusers'
"lite" mode is not used: its author reports it turns FLUX's output into noise (diffusers PR #12648).

When it wins or loses (published by others; nothing of this variant has been run on a GPU by this project yet):
- diffusers PR #12648 (https://github.com/huggingface/diffusers/pull/12648), its author's FluxPipeline comparison
  on one GPU, without compile: baseline 22.2 s, First Block Cache 14.0 s, TaylorSeer 8.9 s per image at about the
  same peak memory (settings in the thread).
- It keeps the attention's cost only on computed steps; the MLPs always run, so it saves less per skipped step than
  the block-skipping caches. It keeps a value and a first difference of every attention output between steps,
  memory that grows with the resolution.

How it composes with compile (checked on CPU with torch 2.14.1 and diffusers 0.42.1): its hooks sit on the
attention modules inside the blocks, and the per-step decision and the prediction are `torch.compiler.disable`d.
`compile_repeated_blocks(fullgraph=True)` therefore fails, and so does compiling the blocks beneath the hooks with
fullgraph. `compile_repeated_blocks()` without fullgraph works: each block graph-breaks at its attention's
decision and prediction, and the pieces around them are compiled, images within 1e-6 of the uncompiled cache. The
code after the decision is compiled in 7 versions (for the two attention types, computed and predicted steps, and
the first steps' counters), one below dynamo's default recompile_limit of 8; past it dynamo would run that code
eager with only a warning, so the tests make reaching the limit an error. Whole-model `torch.compile` without
fullgraph also works (13 graphs on the tiny model against 10).
"""

from fluxperf.variants import Unavailable, register

# The guide's FLUX.1-dev schedule; prefixed because --fluxperf-param names are shared across variants.
PARAMS = {"taylorseer_cache_interval": 5, "taylorseer_disable_cache_before_step": 10, "taylorseer_max_order": 1}


def check(scenario, params):
    warmup = int(params["taylorseer_disable_cache_before_step"])
    if scenario.steps <= warmup:
        raise Unavailable(
            f"TaylorSeer computes every one of the first {warmup} steps, so a {scenario.steps}-step run "
            f"never uses its cache; run more steps or lower --fluxperf-param="
            f"taylorseer_disable_cache_before_step"
        )


# Not in_place: enable_cache hooks the copies' attention modules and compile_repeated_blocks sets a compiled call
# on the copies' blocks; the weights are only read. FluxPipeline resets the hooks' step counters and Taylor factors
# at the end of every call (maybe_free_model_hooks -> transformer._reset_stateful_cache).
@register("taylorseer_compile", params=PARAMS, check=check)
def build(pipe, scenario, params):
    import torch
    from diffusers import TaylorSeerCacheConfig

    pipe.transformer.enable_cache(
        TaylorSeerCacheConfig(
            cache_interval=int(params["taylorseer_cache_interval"]),
            disable_cache_before_step=int(params["taylorseer_disable_cache_before_step"]),
            max_order=int(params["taylorseer_max_order"]),
            taylor_factors_dtype=torch.bfloat16,
        )
    )
    # fullgraph=False on purpose (see the module docstring): the hooks' decisions are graph breaks by design.
    pipe.transformer.compile_repeated_blocks()
    return pipe
