"""Model sources: the tiny pipeline builds offline and deterministically; unreachable models fail in one line."""

from __future__ import annotations

import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from fluxperf.models import ModelSourceError, build_pipeline, max_sequence_length
from fluxperf.scenario import Scenario

SMALL = Scenario(height=64, width=64, steps=2, dtype="float32", device="cpu", prompts=("a", "b"))


@pytest.fixture
def offline(monkeypatch):
    """No network: HF_HUB_OFFLINE (read by huggingface_hub at import, so patched in its constants too) and every
    socket connection refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(self, *args, **kwargs):
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _image(pipe) -> torch.Tensor:
    return pipe(
        prompt="a red fox",
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=3.5,
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="pt",
        max_sequence_length=max_sequence_length(pipe),
    ).images


@pytest.fixture(scope="module")
def two_builds():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("network blocked")))
        return build_pipeline(SMALL), build_pipeline(SMALL)


def test_the_tiny_pipeline_builds_offline_with_every_module_in_eval_mode(two_builds):
    pipe = two_builds[0]
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert len(modules) == 4
    training = [type(sub).__name__ for m in modules for sub in m.modules() if sub.training]
    assert not training, f"modules left in training mode: {sorted(set(training))}"


def test_the_same_seed_gives_bit_identical_images_from_two_separate_builds(two_builds):
    a, b = (_image(p) for p in two_builds)
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)


def test_an_uncached_hub_model_offline_fails_in_one_line_saying_what_to_do(offline):
    scenario = Scenario(
        model="fluxperf-tests/model-that-is-not-cached",
        height=64,
        width=64,
        steps=2,
        dtype="float32",
        device="cpu",
        prompts=("a",),
    )
    with pytest.raises(ModelSourceError) as info:
        build_pipeline(scenario)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert "--fluxperf-model synthetic" in message, message
    assert "HF_TOKEN" in message or "hf download" in message, message


def test_the_synthetic_model_on_cpu_is_refused_with_the_tiny_alternative():
    with pytest.raises(ModelSourceError, match="on CPU use --fluxperf-model tiny"):
        build_pipeline(
            Scenario(model="synthetic", height=64, width=64, steps=2, dtype="float32", device="cpu", prompts=("a",))
        )


def test_eager_s_cached_images_are_keyed_by_every_version_and_the_code_that_renders_them(tmp_path, monkeypatch):
    from fluxperf import bench, pipelines

    env = {"gpu_slug": "cpu", "driver": None, "cuda": None, "versions": {"torch": "2.14.1", "tokenizers": "0.22.1"}}
    key = {"model": "tiny"}
    path = bench.reference_cache(tmp_path, key, env, "slug")
    assert bench.reference_cache(tmp_path, key, env, "slug") == path
    other = {**env, "versions": {**env["versions"], "tokenizers": "0.23.0"}}
    assert bench.reference_cache(tmp_path, key, other, "slug") != path
    # A branch whose render differs (here: pipelines.py with one more line) gets images of its own.
    changed = tmp_path / "pipelines.py"
    changed.write_bytes(Path(pipelines.__file__).read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(pipelines, "__file__", str(changed))
    assert bench.reference_cache(tmp_path, key, env, "slug") != path
