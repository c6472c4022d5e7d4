"""Context parallelism over the GPUs of one host, for the context_parallel variant.

Under torchrun (fluxperf.torchrun) rank 0 runs the suite as usual. The other ranks run no tests: each becomes a
follower that builds the same pipeline on its own GPU and makes every context-parallel call rank 0 makes, so
that the ranks meet in each attention layer's collectives (diffusers' ContextParallelConfig, Ulysses or ring
attention over NCCL).

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

from fluxperf import timing
from fluxperf.models import build_pipeline
from fluxperf.progress import Progress
from fluxperf.torchrun import rank, world_size

ORDER_TIMEOUT = timedelta(hours=24)


class ParallelError(RuntimeError):
    """torchrun's processes can't work together (a bad launch, or a follower that failed); the message says why."""


class Group:
    """The ranks' order channel (a gloo group), and why they can no longer work together, if they can't."""

    def __init__(self, orders):
        self.orders = orders
        # A call that failed on rank 0 leaves its followers inside its collectives: from then on no order is
        # sent again, since it would never be received.
        self.broken: str | None = None

    def send(self, order: tuple) -> None:
        import torch.distributed as dist

        dist.broadcast_object_list([order], src=0, group=self.orders)

    def receive(self) -> tuple:
        import torch.distributed as dist

        box = [None]
        dist.broadcast_object_list(box, src=0, group=self.orders)
        return box[0]

    def agree(self, error: str | None, what: str) -> str | None:
        """Every rank's outcome of one step (None: fine, else its error), combined on every rank, so that
        all of them go on to the next collective step, or none does."""
        import torch.distributed as dist

        statuses = [None] * world_size()
        dist.all_gather_object(statuses, error, group=self.orders)
        failed = [f"rank {r}: {s}" for r, s in enumerate(statuses) if s is not None]
        return f"{what} failed on " + "; ".join(failed) if failed else None

    def finish(self) -> None:
        """Rank 0, at the end of the session: dismiss the followers and leave the process group. After a broken
        call it leaves them be: rank 0 exits, and torchrun stops the followers stuck in that call."""
        import torch.distributed as dist

        if not dist.is_initialized() or self.broken:
            return
        with contextlib.suppress(Exception):
            self.send(("exit",))
        dist.destroy_process_group()


def init(device: str) -> Group:
    """Join torchrun's process group: NCCL for the GPUs' collectives, plus the gloo group for orders."""
    if int(os.environ.get("LOCAL_WORLD_SIZE", world_size())) != world_size():
        raise ParallelError("context_parallel runs on the GPUs of one host: start torchrun with --nnodes 1")
    if device.startswith("cuda"):
        if torch.cuda.device_count() < world_size():
            raise ParallelError(
                f"torchrun started {world_size()} processes but {torch.cuda.device_count()} "
                "GPU(s) are visible: use --nproc-per-node at most the number of GPUs "
                "(or --fluxperf-device cpu to run on CPU)"
            )
        torch.cuda.set_device(torch.device(device))
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Group(dist.new_group(backend="gloo", timeout=ORDER_TIMEOUT))


def _attempt(step) -> str | None:
    try:
        step()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


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
        from fluxperf.variants.best_exact import set_attention

        # Ring attention merges partial results by their log-sum-exp, which plain SDPA doesn't return. On this
        # pipeline's processors only: diffusers' set_attention_backend() also sets the process-wide default, which
        # eager's processors on rank 0 follow.
        set_attention(pipe.transformer, "_native_flash")
    # diffusers places rank r on accelerator r % count, a division by zero without one; on CPU every rank is cpu.
    from unittest import mock

    on_cpu = mock.patch.object(torch.accelerator, "device_count", lambda: 1)
    with contextlib.nullcontext() if device.startswith("cuda") else on_cpu:
        pipe.transformer.enable_parallelism(config=ContextParallelConfig(**degree))


def describe(pipe) -> str:
    """What diffusers set up on this rank's transformer, as seen from the transformer itself."""
    config = getattr(pipe.transformer, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    if cp is None:
        return "attention not split"
    return f"attention split: ulysses_degree={cp.ulysses_degree} ring_degree={cp.ring_degree}"


def _to(kwargs: dict, device: str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}


class ParallelPipeline:
    """Rank 0's pipeline: each call is sent to the followers first, then made here, so all ranks run it together."""

    def __init__(self, pipe, group: Group):
        self.pipe, self.group = pipe, group

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        if self.group.broken:
            raise ParallelError(self.group.broken)
        self.group.send(("call", _to(kwargs, "cpu")))
        try:
            return self.pipe(**kwargs)
        except BaseException as exc:
            # The followers are inside this call's collectives and won't come out: stop talking to them.
            self.group.broken = f"a context-parallel call failed on rank 0 ({type(exc).__name__}: {exc})"
            raise

    def close(self) -> None:
        """Let the followers free their pipelines."""
        if self.pipe is not None:
            self.pipe = None
            if not self.group.broken:
                self.group.send(("release",))


def lead(pipe, scenario, params: dict) -> ParallelPipeline:
    """Rank 0's side of the context_parallel build: the followers build the same pipeline, then all shard it.
    The harness passes the session's Group as params["parallel"] and its Progress as params["progress"]."""
    group, progress = params["parallel"], params["progress"]
    if group.broken:
        raise ParallelError(group.broken)
    tunables = {k: params[k] for k in ("cp_mode", "cp_degree")}
    group.send(("build", scenario, tunables))
    with progress.step(f"{world_size() - 1} follower(s) building the pipeline on their GPUs"):
        error = group.agree(None, "building the pipeline")
        if error:
            raise ParallelError(error)
    with progress.step(f"{params['cp_mode']} attention over {params['cp_degree']} GPUs"):
        error = group.agree(_attempt(lambda: _shard(pipe, tunables, scenario.device)), "sharding the transformer")
        if error:
            raise ParallelError(error)
    progress.say(describe(pipe))
    return ParallelPipeline(pipe, group)


def _follow_build(group: Group, order: tuple, device: str, progress: Progress):
    """A follower's side of a build order: the same pipeline, sharded with rank 0's; None if any rank failed."""
    scenario, params = dataclasses.replace(order[1], device=device), order[2]
    timing.release(device)
    progress.begin("context_parallel")
    pipe = None

    def build():
        nonlocal pipe
        with progress.step(f"building the {scenario.model} pipeline on {device}"):
            pipe = build_pipeline(scenario, progress.say)

    # Every rank learns every rank's outcome, so that they all shard together or none does.
    if group.agree(_attempt(build), "building the pipeline") or group.agree(
        _attempt(lambda: _shard(pipe, params, device)), "sharding the transformer"
    ):
        timing.release(device)
        return None
    progress.say(describe(pipe))
    return pipe


def follow(group: Group, device: str) -> int:
    """A follower's whole life: carry out rank 0's orders until it says exit. Returns the exit code."""
    me = rank()
    progress = Progress(lambda line: print(line.replace("[fluxperf]", f"[fluxperf rank {me}]"), flush=True))
    pipe, calls = None, 0
    while True:
        order = group.receive()
        kind = order[0]
        if kind == "exit":
            print(f"[fluxperf rank {me}] done: {calls} calls made", flush=True)
            import torch.distributed as dist

            dist.destroy_process_group()
            return 0
        if kind == "release":
            pipe = None
            timing.release(device)
        elif kind == "build":
            pipe = None
            pipe = _follow_build(group, order, device, progress)
        elif kind == "call":
            try:
                pipe(**_to(order[1], device))
                calls += 1
            except Exception:
                # Rank 0 is inside the same call's collectives and can't be told: end the job, and torchrun
                # stops rank 0 too. Its reports were written after every variant it finished.
                print(
                    f"[fluxperf rank {me}] a context-parallel call failed:\n{traceback.format_exc()}",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(1)
