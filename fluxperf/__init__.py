"""fluxperf: a pytest plugin that benchmarks optimized FLUX.1-dev pipelines against eager."""

__version__ = "0.1.0"
