"""torch.compile on the transformer, the part that runs once per denoising step."""

from fluxperf.variants import register


@register("compile", lossless=True)
def build(pipe, scenario, params):
    import torch

    # fullgraph=True turns a graph break into a build error instead of a silent slowdown. `pipe` is the
    # harness's copy of eager's modules (sharing the weights): wrapping its transformer leaves eager's alone.
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=True)
    return pipe
