"""Context parallelism over the GPUs of one host, for the context_parallel variant.

`torchrun --nproc-per-node N -m pytest -m gpu ...` starts N pytest processes, one per GPU. Rank 0 runs the
suite as usual. The other ranks run no tests: each becomes a follower that builds the same pipeline on its own
GPU and makes every context-parallel call rank 0 makes, so that the ranks meet in each attention layer's
collectives (diffusers' ContextParallelConfig, Ulysses or ring attention over NCCL).

Rank 0 sends its orders (build, call, release, exit) over a gloo group whose timeout is a day, because a
follower waits there while rank 0 times eager and the other variants on its own GPU, for as long as that takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import traceback
from datetime import timedelta

import torch

from fluxperf import progress, timing
from fluxperf.models import build_pipeline

MODES = ("ulysses", "ring")
ORDER_TIMEOUT = timedelta(hours=24)
_orders = None  # the gloo group orders travel on; set by init()


class ParallelError(RuntimeError):
    """torchrun's processes can't work together (a bad launch, or a follower that failed); the message says why."""


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


def init(device: str) -> None:
    """Join torchrun's process group: NCCL for the GPUs' collectives, plus the gloo group for orders."""
    global _orders
    if int(os.environ.get("LOCAL_WORLD_SIZE", world_size())) != world_size():
        raise ParallelError("context_parallel runs on the GPUs of one host: start torchrun with --nnodes 1")
    if device.startswith("cuda"):
        if torch.cuda.device_count() < world_size():
            raise ParallelError(f"torchrun started {world_size()} processes but {torch.cuda.device_count()} "
                                "GPU(s) are visible: use --nproc-per-node at most the number of GPUs")
        torch.cuda.set_device(torch.device(device))
    import torch.distributed as dist
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    _orders = dist.new_group(backend="gloo", timeout=ORDER_TIMEOUT)


def _send(order: tuple) -> None:
    import torch.distributed as dist
    dist.broadcast_object_list([order], src=0, group=_orders)


def _receive() -> tuple:
    import torch.distributed as dist
    box = [None]
    dist.broadcast_object_list(box, src=0, group=_orders)
    return box[0]


def _gather(status: str | None) -> list:
    """Every rank's status (None: fine, else its error) on rank 0; None on the followers."""
    import torch.distributed as dist
    statuses = [None] * world_size() if rank() == 0 else None
    dist.gather_object(status, statuses, dst=0, group=_orders)
    return statuses


def _check(statuses: list, what: str) -> None:
    failed = [f"rank {r}: {s}" for r, s in enumerate(statuses) if s is not None]
    if failed:
        raise ParallelError(f"{what} failed on " + "; ".join(failed))


def check_params(params: dict) -> None:
    if params["cp_mode"] not in MODES:
        raise ValueError(f"cp_mode must be one of {', '.join(MODES)}, got {params['cp_mode']!r}")
    if params["cp_degree"] < 2:
        raise ValueError(f"cp_degree must be at least 2, got {params['cp_degree']}")


def _shard(pipe, params: dict, device: str) -> None:
    """Give every rank rank 0's weights, then split the transformer's attention across the ranks."""
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    # Identical weights on every rank: a local checkpoint is, but a randomly initialised one need not be.
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)
    degree = {f"{params['cp_mode']}_degree": params["cp_degree"]}
    if params["cp_mode"] == "ring":
        # Ring attention merges partial results by their log-sum-exp, which plain SDPA doesn't return.
        pipe.transformer.set_attention_backend("_native_flash")
    if device.startswith("cuda"):
        pipe.transformer.enable_parallelism(config=ContextParallelConfig(**degree))
        return
    # diffusers places rank r on accelerator r % count, a division by zero without one; on CPU every rank is cpu.
    from unittest import mock
    with mock.patch.object(torch.accelerator, "device_count", lambda: 1):
        pipe.transformer.enable_parallelism(config=ContextParallelConfig(**degree))


def _to(kwargs: dict, device: str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}


class ParallelPipeline:
    """Rank 0's pipeline: each call is sent to the followers first, then made here, so all ranks run it together."""

    def __init__(self, pipe):
        self.pipe = pipe

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        _send(("call", _to(kwargs, "cpu")))
        return self.pipe(**kwargs)

    def close(self) -> None:
        """Let the followers free their pipelines."""
        if self.pipe is not None:
            self.pipe = None
            _send(("release",))


def lead(pipe, scenario, params: dict) -> ParallelPipeline:
    """Rank 0's side of the context_parallel build: the followers build the same pipeline, then all shard it."""
    _send(("build", scenario, params))
    with progress.step(f"{world_size() - 1} follower(s) building the pipeline on their GPUs"):
        _check(_gather(None), "building the pipeline")
    with progress.step(f"{params['cp_mode']} attention over {params['cp_degree']} GPUs"):
        error = None
        try:
            _shard(pipe, params, scenario.device)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        _check(_gather(error), "sharding the transformer")
    return ParallelPipeline(pipe)


def follow(device: str) -> int:
    """A follower's whole life: carry out rank 0's orders until it says exit. Returns the exit code."""
    me = rank()
    progress.set_sink(lambda line: print(line.replace("[fluxperf]", f"[fluxperf rank {me}]"), flush=True))
    pipe, calls = None, 0
    while True:
        order = _receive()
        kind = order[0]
        if kind == "exit":
            print(f"[fluxperf rank {me}] done: {calls} calls made", flush=True)
            return 0
        if kind == "release":
            pipe = None
            timing.release(device)
        elif kind == "build":
            scenario, params = dataclasses.replace(order[1], device=device), order[2]
            pipe = None
            timing.release(device)
            progress.begin("context_parallel")
            error = None
            try:
                with progress.step(f"building the {scenario.model} pipeline on {device}"):
                    pipe = build_pipeline(scenario, progress.say)
            except Exception as exc:
                pipe, error = None, f"{type(exc).__name__}: {exc}"
                timing.release(device)
            _gather(error)
            if error is not None:
                continue
            error = None
            try:
                _shard(pipe, params, device)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            _gather(error)
        elif kind == "call":
            try:
                pipe(**_to(order[1], device))
                calls += 1
            except Exception:
                # Rank 0 is inside the same call's collectives and can't be told: end the job, and torchrun
                # stops rank 0 too. Its reports were written after every variant it finished.
                print(f"[fluxperf rank {me}] a context-parallel call failed:\n{traceback.format_exc()}",
                      file=sys.stderr, flush=True)
                os._exit(1)


def finish() -> None:
    """Rank 0, at the end of the session: dismiss the followers and leave the process group."""
    import torch.distributed as dist
    if _orders is not None and dist.is_initialized():
        with contextlib.suppress(Exception):
            _send(("exit",))
        dist.destroy_process_group()
