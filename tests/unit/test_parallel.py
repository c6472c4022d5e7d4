"""context_parallel in pieces: the variant's checks, each rank's device, a bad launch, and a failed call on rank 0
(tests/e2e/test_torchrun.py runs the suite under torchrun)."""

import pytest
import torch

from fluxperf import parallel
from fluxperf import torchrun as ranks
from fluxperf.scenario import Scenario
from fluxperf.variants import Unavailable, get

PARAMS = {"cp_mode": "ulysses", "cp_degree": 2}


def test_check_names_what_is_wrong(monkeypatch):
    check = get("context_parallel").check
    cpu = Scenario(device="cpu")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(Unavailable, match=r"under torchrun with 4 processes.*cp_degree=4\)"):
        check(cpu, PARAMS)
    check(cpu, {**PARAMS, "cp_degree": 4})
    with pytest.raises(ValueError, match="cp_mode must be one of ulysses, ring, got 'rings'"):
        check(cpu, {**PARAMS, "cp_mode": "rings"})
    with pytest.raises(ValueError, match="cp_degree must be at least 2"):
        check(cpu, {**PARAMS, "cp_degree": 1})
    with pytest.raises(Unavailable, match="cp_mode=ring needs CUDA"):
        check(cpu, {**PARAMS, "cp_mode": "ring", "cp_degree": 4})


def test_each_rank_works_on_its_own_gpu(monkeypatch):
    assert ranks.device_for("cuda") == "cuda"  # no torchrun: unchanged
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ranks.device_for("cuda") == "cuda:1"
    assert ranks.device_for("cpu") == "cpu"


def test_a_bad_launch_is_refused_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with pytest.raises(parallel.ParallelError, match="--nnodes 1"):
        parallel.init("cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(parallel.ParallelError, match="2 processes but 1 GPU"):
        parallel.init("cuda:0")


def test_a_failed_call_on_rank_0_stops_talking_to_the_followers(monkeypatch):
    group = parallel.Group(orders=object())  # as if joined: finish() would send exit
    sent = []
    monkeypatch.setattr(group, "send", sent.append)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: sent.append(("destroyed",)))

    def fails(**kwargs):
        raise torch.OutOfMemoryError("simulated")

    pipe = parallel.ParallelPipeline(fails, group)
    with pytest.raises(torch.OutOfMemoryError):
        pipe(prompt="p", latents=torch.zeros(2))
    assert sent[0][0] == "call" and sent[0][1]["latents"].device.type == "cpu"
    assert "OutOfMemoryError: simulated" in group.broken
    with pytest.raises(parallel.ParallelError):  # no further call reaches the followers...
        pipe(prompt="p")
    pipe.close()  # ...nor a release, nor an exit: they would wait on it forever
    group.finish()
    assert sent == [sent[0]]


def test_ring_attention_is_set_on_the_variants_processors_only(monkeypatch):
    """Rank 0 shards the harness's copy while eager keeps running beside it: the ring's flash backend must not become
    the process-wide default that eager's processors follow. The sharding itself needs 2 processes: this checks the
    backend choice, with the broadcast and diffusers' enable_parallelism recorded instead of run."""
    import torch.distributed as dist
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    from fluxperf.models import build_pipeline
    from fluxperf.pipelines import share_modules

    eager = build_pipeline(Scenario(model="tiny", height=64, width=64, steps=2, device="cpu"))
    copy = share_modules(eager)
    configs = []
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src: None)
    monkeypatch.setattr(type(copy.transformer), "enable_parallelism", lambda self, config: configs.append(config))
    # Put back whatever a wrong _shard sets, so that a failure here leaves later tests their default.
    monkeypatch.setattr(_AttentionBackendRegistry, "_active_backend", _AttentionBackendRegistry._active_backend)
    active = _AttentionBackendRegistry._active_backend
    parallel._shard(copy, {"cp_mode": "ring", "cp_degree": 2}, "cpu")
    assert [(c.ring_degree, c.ulysses_degree) for c in configs] == [(2, 1)]
    copied = copy.transformer.transformer_blocks[0].attn.processor._attention_backend
    assert copied == AttentionBackendName._NATIVE_FLASH
    assert eager.transformer.transformer_blocks[0].attn.processor._attention_backend is None
    assert _AttentionBackendRegistry._active_backend == active
