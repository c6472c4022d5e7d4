"""The transformer's work per image, counted: FLOPs actually executed and block computations that ran or were reused.

Counted on one untimed call with torch.compile's graphs bypassed (set_stance("force_eager")), where
torch.utils.flop_counter sees every matmul and attention and a hook sees every block that computes. A cache that
skips a block skips its FLOPs and its hook, so skipped work is never counted. Compiled and eager numerics differ
in the last bits, so an adaptive cache may decide a step differently on this call than on the timed ones.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Work:
    transformer_flops: float | None  # None when the transformer runs outside PyTorch (a TensorRT engine)
    blocks_ran: int | None  # block attentions that were computed (not skipped, not predicted)
    blocks_total: int | None  # blocks × denoising steps: what an uncached image computes

    @property
    def blocks_reused(self) -> int | None:
        return None if self.blocks_total is None else self.blocks_total - self.blocks_ran


def _blocks(transformer) -> list:
    module = getattr(transformer, "_orig_mod", transformer)  # under torch.compile's wrapper
    return [*getattr(module, "transformer_blocks", []), *getattr(module, "single_transformer_blocks", [])]


def count(render, pipe, steps: int) -> Work:
    """Run `render()` once, counting the transformer's FLOPs and its blocks' attention calls."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    transformer = pipe.transformer
    blocks = _blocks(transformer)
    ran = [0]
    # The query norm runs only when a block's attention is really computed: a cache that skips the block
    # (FORA, First Block Cache) or predicts the attention's output (TaylorSeer) skips it, and fused q/k/v
    # projections still pass through it.
    points = [getattr(b.attn, "norm_q", None) or b.attn for b in blocks if hasattr(b, "attn")]
    hooks = [p.register_forward_hook(lambda *_: ran.__setitem__(0, ran[0] + 1)) for p in points]
    stance = (
        torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else contextlib.nullcontext()
    )
    try:
        with stance, FlopCounterMode(display=False) as counter, torch.no_grad():
            render()
    finally:
        for h in hooks:
            h.remove()
    # The counter files FLOPs under the module that ran them, by class name: the transformer's are its own.
    flops = sum(counter.get_flop_counts().get(type(transformer).__name__, {}).values())
    return Work(float(flops) or None, ran[0] if hooks else None, len(hooks) * steps if hooks else None)
