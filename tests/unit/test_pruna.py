"""pruna variants: skipped with the install command without pruna, and naming the conflict when it can't be imported;
deterministic, caching and offline with it."""

from __future__ import annotations

import importlib.util
import socket
import sys

import pytest
import torch

from fluxperf import envcheck, pipelines, quality
from fluxperf.models import build_pipeline
from fluxperf.progress import Progress
from fluxperf.scenario import Scenario
from fluxperf.variants import MissingDependency, Unavailable, get
from fluxperf.variants.pruna_cache import INSTALL

SCENARIO = Scenario(
    model="tiny", height=64, width=64, steps=6, dtype="float32", device="cpu", prompts=("a red cube on a table",)
)
VARIANTS = ["pruna_cache", pytest.param("pruna_cache_compile", marks=pytest.mark.slow)]

# find_spec, not importorskip: importing pruna here would run its import-time telemetry set-up before the
# variant gets to switch it off, which is the very thing these tests check.
needs_pruna = pytest.mark.skipif(importlib.util.find_spec("pruna") is None, reason="pruna is not installed: make pruna")


def _params(name, tmp_path, **overrides):
    # What the harness adds to a variant's tunables.
    return {**get(name).params, "cache_dir": tmp_path, "progress": Progress(), **overrides}


def _render(obj):
    """The bench's call, from fixed latents: two calls differ only if the pipeline keeps state between them. 64x64 gives
    8x8 latents of 4 channels, packed into 16 tokens of 16 values."""
    latents = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    return pipelines.render(obj, SCENARIO, 0, latents, text_tokens=32)


@pytest.fixture(scope="module")
def eager_image():
    return _render(build_pipeline(SCENARIO))


@pytest.fixture(scope="module")
def smashed(tmp_path_factory):
    """Each variant built once per module on its own tiny pipeline (smash changes the pipeline in place)."""
    built = {}

    def get_built(name):
        if name not in built:
            pipe = build_pipeline(SCENARIO)
            built[name] = (pipe, get(name).build(pipe, SCENARIO, _params(name, tmp_path_factory.mktemp(name))))
        return built[name]

    return get_built


@pytest.mark.parametrize("name", VARIANTS)
def test_missing_pruna_is_a_skip_naming_the_install_command(name, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pruna", None)  # `import pruna` now fails as if it were not installed
    with pytest.raises(MissingDependency) as info:
        get(name).build(object(), SCENARIO, _params(name, tmp_path))
    assert info.value.package == "pruna"
    assert "make pruna" in str(info.value)
    assert "pip install --no-deps pruna==0.3.4" in str(info.value)


# What fluxperf's metadata says with the pruna-deps extra (shortened), and what `import pruna` 0.3.4 raises next to
# huggingface_hub 2 (pruna.engine.save imports upload_large_folder).
REQUIRES = [
    "torch>=2.4",
    'aenum; extra == "pruna-deps"',
    'huggingface_hub<2,>=1.32; extra == "pruna-deps"',
    'zizmor<2,>=1.32; python_version >= "3.11" and extra == "test"',
]
HUB_2 = ImportError("cannot import name 'upload_large_folder' from 'huggingface_hub'", name="huggingface_hub")


class _FailingImport:
    """A meta path finder under which `import pruna` raises `error`, as an installed but broken pruna would."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "pruna":
            raise self.error
        return None


def _installed(monkeypatch, error, versions):
    monkeypatch.delitem(sys.modules, "pruna", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_FailingImport(error), *sys.meta_path])
    monkeypatch.setattr(envcheck, "installed_version", versions.get)
    monkeypatch.setattr(envcheck, "fluxperf_requires", lambda: REQUIRES)


def _skip_reason(name, tmp_path, step="check"):
    with pytest.raises(Unavailable) as info:
        if step == "check":
            get(name).check(SCENARIO, _params(name, tmp_path))
        else:
            get(name).build(object(), SCENARIO, _params(name, tmp_path))
    assert not isinstance(info.value, MissingDependency), "pruna is installed: the reason must not say it isn't"
    return str(info.value)


@pytest.mark.parametrize("step", ["check", "build"])
@pytest.mark.parametrize("name", VARIANTS)
def test_a_version_conflict_is_a_skip_naming_both_packages(name, step, monkeypatch, tmp_path):
    _installed(monkeypatch, HUB_2, {"pruna": "0.3.4", "huggingface_hub": "2.4.0", "aenum": "3.1.17"})
    assert _skip_reason(name, tmp_path, step) == (
        "pruna 0.3.4 can't be imported with huggingface_hub 2.4.0 installed (pruna needs huggingface_hub<2,>=1.32); "
        f"install a working set with: {INSTALL}"
    )
    assert "make pruna" in INSTALL and "pip install 'fluxperf[pruna-deps]' && pip install --no-deps pruna==" in INSTALL


def test_a_missing_requirement_is_named_too(monkeypatch, tmp_path):
    error = ModuleNotFoundError("No module named 'aenum'", name="aenum")
    _installed(monkeypatch, error, {"pruna": "0.3.4", "huggingface_hub": "1.33.0"})
    assert _skip_reason("pruna_cache", tmp_path).startswith(
        "pruna 0.3.4 can't be imported with aenum not installed (pruna needs aenum); install a working set with: "
    )


def test_every_conflict_is_named(monkeypatch, tmp_path):
    # What transformers 5.25 brought along into a locked .venv: huggingface_hub 2.4.0, and kernels 0.19.1 with it.
    requires = [*REQUIRES, 'kernels<0.15,>=0.12; extra == "pruna-deps"']
    _installed(monkeypatch, HUB_2, {"pruna": "0.3.4", "huggingface_hub": "2.4.0", "kernels": "0.19.1"})
    monkeypatch.setattr(envcheck, "fluxperf_requires", lambda: requires)
    assert _skip_reason("pruna_cache", tmp_path).startswith(
        "pruna 0.3.4 can't be imported with huggingface_hub 2.4.0 and kernels 0.19.1 installed and aenum not installed "
        "(pruna needs aenum, huggingface_hub<2,>=1.32, kernels<0.15,>=0.12); install a working set with: "
    )


def test_without_a_known_conflict_the_reason_carries_the_error(monkeypatch, tmp_path):
    # Any exception during pruna's import, with every listed requirement in range.
    error = RuntimeError("operator torchvision::nms does not exist\nmore lines")
    _installed(monkeypatch, error, {"pruna": "0.3.4", "huggingface_hub": "1.33.0", "aenum": "3.1.17"})
    assert _skip_reason("pruna_cache", tmp_path) == (
        "pruna 0.3.4 can't be imported: RuntimeError: operator torchvision::nms does not exist (the versions of what "
        f"it needs, fluxperf's pruna-deps extra, are in range); install a working set with: {INSTALL}"
    )


def test_prunas_requirements_are_the_extras_lines_only():
    assert [str(r) for r in envcheck.pruna_requirements(REQUIRES)] == ["aenum", "huggingface_hub<2,>=1.32"]


@needs_pruna
@pytest.mark.parametrize("name", VARIANTS)
def test_smash_wraps_the_pipeline_it_is_given_without_copying_it(name, smashed):
    pipe, obj = smashed(name)
    # A copy would double GPU memory: smash changes the pipeline it is handed, which is why the harness hands it
    # share_modules' copy (the next test), and the variants can be paired with eager (not in_place).
    assert obj.model is pipe
    assert not get(name).in_place


@needs_pruna
def test_built_on_the_harness_copy_fora_leaves_eager_as_it_was(tmp_path, eager_image):
    from fluxperf.pipelines import share_modules

    eager = build_pipeline(SCENARIO)
    forwards = [block.forward for block in eager.transformer.transformer_blocks]
    obj = get("pruna_cache").build(share_modules(eager), SCENARIO, _params("pruna_cache", tmp_path))
    assert not torch.equal(_render(obj), eager_image)  # the copy caches
    assert [block.forward for block in eager.transformer.transformer_blocks] == forwards
    assert torch.equal(_render(eager), eager_image)  # eager still renders eager's image
    # No second copy of the weights: the copy's parameters are eager's tensors.
    copy_params = obj.model.transformer.parameters()
    assert all(a is b for a, b in zip(eager.transformer.parameters(), copy_params))


@needs_pruna
@pytest.mark.parametrize("name", VARIANTS)
def test_repeated_calls_give_identical_images(name, smashed):
    _, obj = smashed(name)
    first, second = _render(obj), _render(obj)
    assert torch.equal(first, second), f"{name}: max |diff| {(first - second).abs().max().item():.3g}"


@needs_pruna
def test_cache_changes_the_image_but_stays_close(smashed, eager_image):
    image = _render(smashed("pruna_cache")[1])
    assert not torch.equal(image, eager_image), "FORA with interval 2 reproduced eager exactly: caching is off"
    psnr_db = quality.psnr_db(image, eager_image)
    # Defaults give 45 dB on the tiny model; interval 5 drops to 32-35 dB.
    assert psnr_db > 40, f"pruna_cache: PSNR {psnr_db:.1f} dB vs eager"


@needs_pruna
def test_interval_one_is_eager(tmp_path, eager_image):
    # Recomputing every step must reproduce eager bit for bit: proves the params reach pruna's FORA.
    pipe = build_pipeline(SCENARIO)
    obj = get("pruna_cache").build(pipe, SCENARIO, _params("pruna_cache", tmp_path, fora_interval=1))
    assert torch.equal(_render(obj), eager_image)


@needs_pruna
@pytest.mark.slow
def test_compiled_cache_matches_uncompiled_cache(smashed, eager_image):
    compiled, cached = _render(smashed("pruna_cache_compile")[1]), _render(smashed("pruna_cache")[1])
    # Inductor reorders float sums, so "close" not "equal"; eager is ~1e-2 away, so closeness means FORA is on.
    assert (compiled - cached).abs().max().item() < 1e-4
    assert (compiled - eager_image).abs().max().item() > 1e-3


@needs_pruna
@pytest.mark.parametrize("name", VARIANTS)
def test_no_network_even_if_the_user_enabled_telemetry(name, monkeypatch, tmp_path):
    attempts = []

    def refuse(what):
        def blocked(*args, **kwargs):
            attempts.append((what, args[:2]))
            raise OSError(f"network blocked by test ({what})")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setenv("PRUNA_METRICS_ENABLED", "true")

    pipe = build_pipeline(SCENARIO)
    image = _render(get(name).build(pipe, SCENARIO, _params(name, tmp_path)))
    # pruna's exporter sends every 60 s and at exit; flushing now sends whatever it would have sent then.
    from pruna.telemetry.metrics import provider

    provider.force_flush()
    if attempts:
        # Recorded metrics would be sent again at exit, unblocked: shut the exporter while the network is blocked.
        provider.shutdown()

    assert image.shape == (1, 3, SCENARIO.height, SCENARIO.width)
    assert attempts == [], f"{name} tried to reach the network: {attempts}"
