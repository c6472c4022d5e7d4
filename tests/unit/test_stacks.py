"""Stacked variants: diffusers' caches plus compile on the tiny model; torchao fp8 and CUDA graphs skip off the GPU."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from fluxperf.bench import share_modules
from fluxperf.models import build_pipeline
from fluxperf.scenario import Scenario
from fluxperf.variants import MissingDependency, Unavailable, get

SCENARIO = Scenario(model="tiny", height=64, width=64, steps=6, dtype="float32", device="cpu", prompts=("a cat",))
CACHES = ["fbcache_compile", "taylorseer_compile", "magcache_compile"]

# The published settings are for FLUX.1-dev's 28 steps and real weights. On 6 steps of random weights First Block
# Cache at 0.08 never skips (its first-block residual changes by 32-43% a step) and TaylorSeer computes its first 10
# steps, so these make them skip; MagCache's fixed schedule skips 5 of 6 steps as published. First Block Cache at
# 2.0 also skips the first step of an image whose residual is within 200% of the last one cached, another image's
# (about 100% apart), if the cache were not reset between images.
ON_TINY = {"fbcache_compile": {"fbcache_threshold": 2.0},
           "taylorseer_compile": {"taylorseer_disable_cache_before_step": 2},
           "magcache_compile": {}}

# What the tiny model gave (PSNR against eager, dB): fbcache 57.0, taylorseer 67.0, magcache 51.3. Compile alone
# gives 133 dB, so an image above MAX_DB means nothing was skipped.
MIN_DB = {"fbcache_compile": 50, "taylorseer_compile": 60, "magcache_compile": 45}
MAX_DB = 100


def _uncompiled_cache(name):
    """The diffusers cache each variant should apply with ON_TINY's settings, spelled out here independently."""
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

    return {
        "fbcache_compile": lambda: FirstBlockCacheConfig(threshold=2.0),
        "taylorseer_compile": lambda: TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=2, max_order=1,
                                                            taylor_factors_dtype=torch.bfloat16),
        "magcache_compile": lambda: MagCacheConfig(threshold=0.24, max_skip_steps=5, retention_ratio=0.1,
                                                   num_inference_steps=SCENARIO.steps, mag_ratios=FLUX_MAG_RATIOS),
    }[name]()


def _params(name, tmp_path, **overrides):
    return {**get(name).params, "cache_dir": tmp_path, **overrides}


def _render(pipe, scenario=SCENARIO, seed=0):
    # Fixed latents, as the harness passes them: two calls differ only if the pipeline keeps state between them.
    # 64x64 gives 8x8 latents of 4 channels, packed into 16 tokens of 16 values.
    latents = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(seed))
    return pipe(prompt=scenario.prompts[0], height=scenario.height, width=scenario.width,
                num_inference_steps=scenario.steps, guidance_scale=scenario.guidance, latents=latents,
                output_type="pt", max_sequence_length=32).images


def _psnr_db(a, b):
    return (10 * torch.log10(1 / torch.mean((a - b) ** 2))).item()


@pytest.fixture(scope="module")
def eager():
    pipe = build_pipeline(SCENARIO)
    return pipe, _render(pipe)


@pytest.fixture(scope="module", autouse=True)
def loud_recompile_limit():
    # Past torch._dynamo.config.recompile_limit (8 versions of one function) dynamo stops compiling that function and
    # runs it eager with only a warning; taylorseer_compile's attention resumes at 7. Here that is an error instead.
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield


def _build(name, eager_pipe, tmp_path_factory):
    params = _params(name, tmp_path_factory.mktemp(name), **ON_TINY[name])
    return get(name).build(share_modules(eager_pipe), SCENARIO, params)


@pytest.fixture(scope="module")
def built(eager, tmp_path_factory):
    """Each cache variant built on share_modules' copy of eager, as the harness builds it, and rendered: seed 0, seed 1,
    seed 0 again; then built a second time (reusing dynamo's compiled code) to render seed 1 first.

    All of it before the next variant is built, as the harness builds, warms up and times one variant at a time:
    dynamo's caches are per function, and another variant's compile of the same block code can move an earlier
    variant's images by a float rounding.
    """
    cache = {}

    def get_built(name):
        if name not in cache:
            pipe = _build(name, eager[0], tmp_path_factory)
            images = [_render(pipe, seed=seed) for seed in (0, 1, 0)]
            cache[name] = pipe, images, _render(_build(name, eager[0], tmp_path_factory), seed=1)
        return cache[name]

    return get_built


@pytest.mark.parametrize("name", CACHES)
def test_cache_builds_on_the_harness_copy_and_leaves_eager_as_it_was(name, eager, built):
    eager_pipe, eager_image = eager
    blocks = [*eager_pipe.transformer.transformer_blocks, *eager_pipe.transformer.single_transformer_blocks]
    forwards = {type(block): type(block).forward for block in blocks}
    pipe = built(name)[0]
    # Hooks and compiled forwards went on the copy's block instances, not on the classes eager's blocks share.
    assert {cls: cls.forward for cls in forwards} == forwards
    assert torch.equal(_render(eager_pipe), eager_image), f"{name}: eager renders another image after the build"
    # No second copy of the weights: the variant's transformer still holds eager's tensors.
    assert all(a is b for a, b in zip(eager_pipe.transformer.parameters(), pipe.transformer.parameters()))


@pytest.mark.parametrize("name", CACHES)
def test_an_image_does_not_depend_on_the_one_rendered_before(name, built):
    # The harness renders prompts and seeds one after another: a cache that kept the last image's state would give
    # the same item another image depending on what came before it.
    _, (first, other, again), alone = built(name)
    assert torch.equal(first, again), (f"{name}: max |diff| {(first - again).abs().max().item():.3g}: the cache "
                                       "state carried over from the previous image")
    assert torch.equal(other, alone), (f"{name}: max |diff| {(other - alone).abs().max().item():.3g}: the cache "
                                       "state carried over from the previous image")


@pytest.mark.parametrize("name", CACHES)
def test_cache_changes_the_image_but_stays_close(name, eager, built):
    image, (eager_pipe, eager_image) = built(name)[1][0], eager
    psnr_db = _psnr_db(image, eager_image)
    assert psnr_db < MAX_DB, f"{name}: PSNR {psnr_db:.1f} dB vs eager, as close as compile alone: nothing was cached"
    # Compile must not change what the cache does: the same cache without compile gives the same image, up to
    # inductor's float reordering (~1e-6; the cache moves the image ~1e-2 from eager's).
    reference = share_modules(eager_pipe)
    reference.transformer.enable_cache(_uncompiled_cache(name))
    diff = (image - _render(reference)).abs().max().item()
    assert diff < 1e-4, f"{name}: max |diff| {diff:.3g} from the same cache without compile"
    assert psnr_db > MIN_DB[name], f"{name}: PSNR {psnr_db:.1f} dB vs eager"


def test_registry_flags_and_published_defaults():
    expected = {
        "fbcache_compile": ({"fbcache_threshold": 0.08}, True),
        "taylorseer_compile": ({"taylorseer_cache_interval": 5, "taylorseer_disable_cache_before_step": 10,
                                "taylorseer_max_order": 1}, False),
        "magcache_compile": ({"magcache_threshold": 0.24, "magcache_max_skip_steps": 5,
                              "magcache_retention_ratio": 0.1}, False),
    }
    for name, (params, adaptive) in expected.items():
        variant = get(name)
        assert (variant.params, variant.adaptive) == (params, adaptive), name
        assert not variant.lossless and not variant.in_place and variant.timed and variant.libraries == (), name
    fp8, graphs = get("ao_fp8_compile"), get("compile_cudagraphs")
    assert not fp8.lossless and not fp8.in_place and not fp8.adaptive and fp8.libraries == ("torchao",)
    assert graphs.lossless and not graphs.in_place and not graphs.adaptive and graphs.libraries == ()


def test_magcache_skips_the_same_steps_whatever_the_weights():
    """Why magcache_compile is not adaptive: its decisions come from the FLUX ratio table, not the activations."""
    from diffusers import FluxTransformer2DModel

    from fluxperf.variants.magcache_compile import config

    scenario = Scenario(model="tiny", height=64, width=64, steps=12, dtype="float32", device="cpu",
                        prompts=("a cat",))
    pipe = build_pipeline(scenario)
    patterns = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the tiny model's transformer shapes, other random weights
        pipe.transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6)).eval()
        calls = []
        # The last block's output projection runs only on computed steps (no compile here, so a hook can count).
        pipe.transformer.single_transformer_blocks[-1].proj_out.register_forward_pre_hook(
            lambda module, args: calls.append(None))
        pipe.transformer.enable_cache(config(scenario, get("magcache_compile").params))
        per_step = []
        latents = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
        pipe(prompt="a cat", height=64, width=64, num_inference_steps=scenario.steps, latents=latents,
             output_type="pt", max_sequence_length=32,
             callback_on_step_end=lambda p, i, t, kw: per_step.append(len(calls)) or {})
        patterns.append([b - a for a, b in zip([0, *per_step], per_step)])
    assert patterns[0] == patterns[1], patterns
    assert 0 < sum(patterns[0]) < scenario.steps, patterns  # some steps computed, some skipped


def test_taylorseer_skips_a_run_too_short_to_use_its_cache(tmp_path):
    variant = get("taylorseer_compile")
    with pytest.raises(Unavailable, match="first 10 steps.*6-step run"):
        variant.check(SCENARIO, _params("taylorseer_compile", tmp_path))
    variant.check(SCENARIO, _params("taylorseer_compile", tmp_path, **ON_TINY["taylorseer_compile"]))


@pytest.mark.parametrize("name, needs", [("ao_fp8_compile", "compute capability 8.9"),
                                         ("compile_cudagraphs", "needs a CUDA device")])
def test_cuda_only_variants_skip_on_the_cpu_naming_what_they_need(name, needs, tmp_path, monkeypatch):
    # Without torchao as well, the reason to give is still the hardware: installing torchao wouldn't make it run.
    monkeypatch.setitem(sys.modules, "torchao", None)
    with pytest.raises(Unavailable, match=needs) as info:
        get(name).check(SCENARIO, _params(name, tmp_path))
    assert "runs on cpu" in str(info.value)


def _pretend_gpu(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Pretend GPU")


def test_ao_fp8_check_names_an_old_gpu_and_a_non_bf16_dtype(monkeypatch, tmp_path):
    _pretend_gpu(monkeypatch, (8, 6))
    params = _params("ao_fp8_compile", tmp_path)
    gpu = Scenario(model="tiny", height=64, width=64, steps=6, dtype="bfloat16", device="cuda", prompts=("a cat",))
    with pytest.raises(Unavailable, match=r"compute capability 8\.9 or newer.*Pretend GPU has 8\.6"):
        get("ao_fp8_compile").check(gpu, params)
    _pretend_gpu(monkeypatch, (9, 0))
    fp32 = Scenario(model="tiny", height=64, width=64, steps=6, dtype="float32", device="cuda", prompts=("a cat",))
    with pytest.raises(Unavailable, match="bfloat16"):
        get("ao_fp8_compile").check(fp32, params)


def test_missing_torchao_is_a_skip_naming_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchao", None)  # `import torchao` now fails as if it were not installed
    params = _params("ao_fp8_compile", tmp_path)
    with pytest.raises(MissingDependency) as info:
        get("ao_fp8_compile").build(object(), SCENARIO, params)
    assert info.value.package == "torchao"
    assert "pip install 'torchao>=0.18,<0.19'" in str(info.value)
    # On a capable GPU, check() finds it missing before eager is timed.
    _pretend_gpu(monkeypatch, (9, 0))
    gpu = Scenario(model="tiny", height=64, width=64, steps=6, dtype="bfloat16", device="cuda", prompts=("a cat",))
    with pytest.raises(MissingDependency):
        get("ao_fp8_compile").check(gpu, params)


def test_ao_fp8_quantizes_the_copy_and_leaves_eagers_weights_and_inductor_config_alone(monkeypatch, tmp_path):
    pytest.importorskip("torchao")
    import torch._inductor.config

    quant_api = importlib.import_module("torchao.quantization.quant_api")
    from torchao.quantization import Float8Tensor

    # torchao refuses to quantize off an fp8-capable GPU; quantizing needs no fp8 kernel, so the CPU can show what
    # the build does to the modules (nothing here runs the quantized model).
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    scenario = Scenario(model="tiny", height=64, width=64, steps=6, dtype="bfloat16", device="cpu", prompts=("a cat",))
    eager_pipe = build_pipeline(scenario)
    before = {name: (p, p.detach().clone()) for name, p in eager_pipe.transformer.named_parameters()}
    inductor = torch._inductor.config.get_config_copy()

    pipe = get("ao_fp8_compile").build(share_modules(eager_pipe), scenario, _params("ao_fp8_compile", tmp_path))

    assert isinstance(pipe.transformer, torch._dynamo.eval_frame.OptimizedModule)
    quantized = {name for name, p in pipe.transformer._orig_mod.named_parameters() if isinstance(p, Float8Tensor)}
    assert "transformer_blocks.0.attn.to_q.weight" in quantized, sorted(quantized)
    for name, (param, snapshot) in before.items():
        now = dict(eager_pipe.transformer.named_parameters())[name]
        assert now is param and not isinstance(now, Float8Tensor) and torch.equal(now, snapshot), name
    changed = {k for k, v in torch._inductor.config.get_config_copy().items() if inductor.get(k) != v}
    assert not changed, f"the build changed inductor's process-wide config: {sorted(changed)}"


def test_roofline_counts_only_the_work_that_ran(eager, built):
    """fluxperf.roofline on one call: eager computes every block at every step; MagCache's skipped steps count
    neither as block computations nor as FLOPs."""
    from fluxperf import roofline

    eager_pipe = eager[0]
    full = roofline.count(lambda: _render(eager_pipe), eager_pipe, SCENARIO.steps)
    blocks = len(eager_pipe.transformer.transformer_blocks) + len(eager_pipe.transformer.single_transformer_blocks)
    assert full.blocks_total == full.blocks_ran == blocks * SCENARIO.steps and full.blocks_reused == 0
    assert full.transformer_flops > 0
    pipe = built("magcache_compile")[0]
    cached = roofline.count(lambda: _render(pipe), pipe, SCENARIO.steps)
    assert cached.blocks_total == full.blocks_total and 0 < cached.blocks_ran < full.blocks_ran
    # FLOPs fall with the blocks that ran (the embedders and the final projection run every step).
    assert cached.transformer_flops < full.transformer_flops * (cached.blocks_ran / full.blocks_ran + 0.2)
