"""diffusers' First Block Cache (threshold 0.08, FLUX.1-dev's published value) plus torch.compile of every block.

What it does: each step runs the first transformer block, compares its residual with the previous step's (mean
absolute difference over the previous residual's mean absolute value) and, below `fbcache_threshold`, skips the
other 56 blocks and adds the residual they produced last time. The decision comes from the model's own activations,
so the variant is adaptive: on random weights (the `tiny` and `synthetic` models) its hit rate says nothing about
the real model's. On the tiny model the default 0.08 never skips at all; the tests raise the threshold to see it work.

Threshold: 0.08 is "the default residual difference value for FLUX models" in diffusers' ParaAttention guide
(https://huggingface.co/docs/diffusers/main/en/optimization/para_attn, "First Block Cache", FLUX-1.dev tab), which
measures the same relative L1 test on the same first-block residual. diffusers' own `FirstBlockCacheConfig` defaults
to 0.05 for all models (https://huggingface.co/docs/diffusers/main/en/api/cache#diffusers.FirstBlockCacheConfig).

When it wins or loses (published by others; nothing of this variant has been run on a GPU by this project yet):
- ParaAttention guide, FLUX.1-dev at 1024², 28 steps, one L20, no compile: 26.36 s → 17.01 s at 0.08 (1.55×);
  0.06 gave 21.83 s and 0.12 gave 13.78 s.
- unsloth PR #6703 (https://github.com/unslothai/unsloth/pull/6703), FLUX.1-dev, 1024², 28 steps, one B200, with
  regional compile (fullgraph=False): 2.83 s → 2.03 s at 0.08 (1.40× over compile alone), LPIPS about 0.08
  against the uncached compiled image.
- It loses where few steps are skippable (few-step or distilled schedules) and on the host: the decision reads one
  scalar back from the GPU every step (`.item()`), so the host can't queue the next step's kernels ahead of the GPU.
  At 512² eager is host-bound (README); how much of compile's lead that sync costs there is not measured.

How it composes with compile (checked on CPU with torch 2.14.1 and diffusers 0.42.1): the cache's per-step decision
is a `torch.compiler.disable` function, so `compile_repeated_blocks(fullgraph=True)` and
`torch.compile(transformer, fullgraph=True)` both fail; without fullgraph they work, with a graph break at that
decision. This variant compiles each block's own `forward` with fullgraph=True *beneath* the hooks instead: the
hooks run in Python and call the compiled blocks, no graph break anywhere, graphs shared by all blocks of a type (3
on a tiny transformer of 4 + 6 blocks), images within 1e-6 of the uncompiled cache. The embedders and the final
norm and projection, a small share of a step, stay eager.
"""

from fluxperf.variants import register

# Prefixed: --fluxperf-param names are shared by every variant that declares them.
PARAMS = {"fbcache_threshold": 0.08}


def compile_blocks_under_hooks(transformer, options: dict | None = None) -> None:
    """Compile every transformer block's own forward, fullgraph, before a cache hooks the blocks; `options` go to
    inductor (best_cached passes the fp8 tuning).

    diffusers' HookRegistry keeps the module's current `forward` as the one its hook calls, so compiling first puts
    the compiled block under the hook; compiling after (module.compile or compile_repeated_blocks) would trace the
    hook, whose decisions are torch.compiler.disable'd, and break the graph at every block.
    """
    import torch

    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        # An instance attribute on the harness's copy: eager's blocks and their class keep the plain forward.
        block.forward = torch.compile(block.forward, fullgraph=True, **({"options": options} if options else {}))


# Not in_place: enable_cache registers hooks and compile wraps forwards, both on share_modules' copies; the weights
# are only read. The cache state lives in the hooks and FluxPipeline resets it at the end of every call
# (maybe_free_model_hooks -> transformer._reset_stateful_cache), so every image starts from an empty cache.
@register("fbcache_compile", params=PARAMS, adaptive=True)
def build(pipe, scenario, params):
    from diffusers import FirstBlockCacheConfig

    compile_blocks_under_hooks(pipe.transformer)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=float(params["fbcache_threshold"])))
    return pipe
