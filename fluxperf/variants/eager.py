"""Eager: the pipeline as loaded, in the scenario's dtype; the reference every other variant is judged against."""

from fluxperf.variants import register


@register("eager", lossless=True)
def build(pipe, scenario, params):
    return pipe
