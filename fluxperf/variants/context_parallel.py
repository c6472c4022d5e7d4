"""diffusers' context parallelism: one image's attention split across the GPUs torchrun started (Ulysses or ring)."""

from fluxperf import torchrun
from fluxperf.variants import Unavailable, register


def check(scenario, params):
    torchrun.check_params(params)
    if params["cp_mode"] == "ring" and not scenario.device.startswith("cuda"):
        raise Unavailable("cp_mode=ring needs CUDA (flash attention's log-sum-exp); on CPU use cp_mode=ulysses")
    degree = params["cp_degree"]
    if torchrun.world_size() != degree:
        started = (
            "without torchrun" if not torchrun.launched() else f"under torchrun with {torchrun.world_size()} processes"
        )
        hint = f" (or pass --fluxperf-param=cp_degree={torchrun.world_size()})" if torchrun.launched() else ""
        raise Unavailable(
            f"context_parallel splits each image over cp_degree={degree} GPUs, one process each, but pytest runs "
            f"{started}: run torchrun --nproc-per-node {degree} -m pytest -m gpu --fluxperf-variants "
            f"context_parallel{hint}"
        )


@register("context_parallel", lossless=True, params={"cp_mode": "ulysses", "cp_degree": 2}, check=check)
def build(pipe, scenario, params):
    from fluxperf import parallel

    check(scenario, params)
    # enable_parallelism hooks the harness's copy of the transformer; eager's modules stay as they are, so eager
    # on this GPU alone and the split call alternate round by round.
    return parallel.lead(pipe, scenario, params)
