"""torchrun support: which rank this process is, and the plugin hooks that make ranks above 0 serve rank 0.

`torchrun --nproc-per-node N -m pytest -m gpu ...` starts N pytest processes, one per GPU. Rank 0 runs the suite.
The others run no tests: each follows rank 0's context_parallel calls (fluxperf.parallel, which the plugin starts).
Reading the environment is all this module does at import, so the plugin can load it in every pytest run.
"""

from __future__ import annotations

import os

import pytest

MODES = ("ulysses", "ring")
GROUP = pytest.StashKey["object"]()  # rank 0's fluxperf.parallel.Group, once joined


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    return world_size() > 1


def is_follower() -> bool:
    return launched() and rank() > 0


def device_for(device: str) -> str:
    """The device this process works on: under torchrun each rank has GPU LOCAL_RANK."""
    if launched() and device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def check_params(params: dict) -> None:
    if params["cp_mode"] not in MODES:
        raise ValueError(f"cp_mode must be one of {', '.join(MODES)}, got {params['cp_mode']!r}")
    if params["cp_degree"] < 2:
        raise ValueError(f"cp_degree must be at least 2, got {params['cp_degree']}")


class TorchrunPlugin:
    """Registered on rank 0 under torchrun."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_teardown(self, item, nextitem):
        group = self.config.stash.get(GROUP, None)
        if group is not None and group.broken:
            # The other ranks are stuck in a call that failed here: nothing more can run on them. Stop after
            # this test; the reports of what was measured are still written.
            item.session.shouldstop = f"{group.broken}; the other ranks can't take more work"

    def pytest_unconfigure(self, config):
        group = config.stash.get(GROUP, None)
        if group is not None:
            group.finish()
