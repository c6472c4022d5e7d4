"""Stacked variants on the tiny model: caches plus compile, fp8 recipes, best_exact and best_cached; CUDA-only pieces
skip off the GPU."""

from __future__ import annotations

import copy
import importlib
import sys

import pytest
import torch

from fluxperf import pipelines, quality
from fluxperf.models import TINY, build_pipeline
from fluxperf.pipelines import share_modules
from fluxperf.scenario import Scenario
from fluxperf.variants import MissingDependency, Unavailable, get

SCENARIO = Scenario(model="tiny", height=64, width=64, steps=6, dtype="float32", device="cpu", prompts=("a cat",))
CACHES = ["fbcache_compile", "taylorseer_compile", "magcache_compile"]

# The published settings are for FLUX.1-dev's 28 steps and real weights. On 6 steps of random weights First Block
# Cache at 0.08 never skips (its first-block residual changes by 32-43% a step) and TaylorSeer computes its first 10
# steps, so these make them skip; MagCache's fixed schedule skips 5 of 6 steps as published. First Block Cache at
# 2.0 also skips the first step of an image whose residual is within 200% of the last one cached, another image's
# (about 100% apart), if the cache were not reset between images.
ON_TINY = {
    "fbcache_compile": {"fbcache_threshold": 2.0},
    "taylorseer_compile": {"taylorseer_disable_cache_before_step": 2},
    "magcache_compile": {},
}

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
        "taylorseer_compile": lambda: TaylorSeerCacheConfig(
            cache_interval=5, disable_cache_before_step=2, max_order=1, taylor_factors_dtype=torch.bfloat16
        ),
        "magcache_compile": lambda: MagCacheConfig(
            threshold=0.24,
            max_skip_steps=5,
            retention_ratio=0.1,
            num_inference_steps=SCENARIO.steps,
            mag_ratios=FLUX_MAG_RATIOS,
        ),
    }[name]()


def _params(name, tmp_path, **overrides):
    return {**get(name).params, "cache_dir": tmp_path, **overrides}


def _render(pipe, scenario=SCENARIO, seed=0):
    """The bench's call, from fixed latents: two calls differ only if the pipeline keeps state between them. 64x64 gives
    8x8 latents of 4 channels, packed into 16 tokens of 16 values (the thresholds below were measured on this noise)."""
    latents = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(seed))
    return pipelines.render(pipe, scenario, 0, latents, text_tokens=32)


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
    assert torch.equal(first, again), (
        f"{name}: max |diff| {(first - again).abs().max().item():.3g}: the cache "
        "state carried over from the previous image"
    )
    assert torch.equal(other, alone), (
        f"{name}: max |diff| {(other - alone).abs().max().item():.3g}: the cache "
        "state carried over from the previous image"
    )


@pytest.mark.parametrize("name", CACHES)
def test_cache_changes_the_image_but_stays_close(name, eager, built):
    image, (eager_pipe, eager_image) = built(name)[1][0], eager
    psnr_db = quality.psnr_db(image, eager_image)
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
        "taylorseer_compile": (
            {"taylorseer_cache_interval": 5, "taylorseer_disable_cache_before_step": 10, "taylorseer_max_order": 1},
            False,
        ),
        "magcache_compile": (
            {"magcache_threshold": 0.24, "magcache_max_skip_steps": 5, "magcache_retention_ratio": 0.1},
            False,
        ),
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

    scenario = Scenario(model="tiny", height=64, width=64, steps=12, dtype="float32", device="cpu", prompts=("a cat",))
    pipe = build_pipeline(scenario)
    patterns = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the tiny model's transformer shapes, other random weights
        pipe.transformer = FluxTransformer2DModel(**TINY["transformer"]).eval()
        calls = []
        # The last block's output projection runs only on computed steps (no compile here, so a hook can count).
        pipe.transformer.single_transformer_blocks[-1].proj_out.register_forward_pre_hook(
            lambda module, args, calls=calls: calls.append(None)
        )
        pipe.transformer.enable_cache(config(scenario, get("magcache_compile").params))
        per_step = []
        latents = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
        pipe(
            prompt="a cat",
            height=64,
            width=64,
            num_inference_steps=scenario.steps,
            latents=latents,
            output_type="pt",
            max_sequence_length=32,
            callback_on_step_end=lambda p, i, t, kw, calls=calls, per_step=per_step: per_step.append(len(calls)) or {},
        )
        patterns.append([b - a for a, b in zip([0, *per_step], per_step)])
    assert patterns[0] == patterns[1], patterns
    assert 0 < sum(patterns[0]) < scenario.steps, patterns  # some steps computed, some skipped


def test_taylorseer_skips_a_run_too_short_to_use_its_cache(tmp_path):
    variant = get("taylorseer_compile")
    with pytest.raises(Unavailable, match="first 10 steps.*6-step run"):
        variant.check(SCENARIO, _params("taylorseer_compile", tmp_path))
    variant.check(SCENARIO, _params("taylorseer_compile", tmp_path, **ON_TINY["taylorseer_compile"]))


@pytest.mark.parametrize(
    "name, needs",
    [
        ("ao_fp8_compile", "compute capability 8.9"),
        ("ao_fp8_tensor_compile", "compute capability 8.9"),
        ("ao_fp8_static_compile", "compute capability 8.9"),
        ("compile_cudagraphs", "needs a CUDA device"),
        (
            "best_exact",
            r"need CUDA \(CUDA graphs, the _native_cudnn attention\).*--fluxperf-param=best_exact_cudagraphs="
            r"false --fluxperf-param=best_exact_attention=default$",
        ),
        ("best_cached", r"need CUDA \(the _native_cudnn attention\).*--fluxperf-param=best_cached_attention=default$"),
    ],
)
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


# ----- fp8 recipes, best_exact and best_cached ----------------------------------------------------------------------
# CPU inductor takes ~90 s to compile the tiny pipeline's transformer, VAE decoder and T5; aot_eager traces the same
# graphs (dynamo, fullgraph, AOT autograd: where graph breaks and tensor-subclass failures show) and runs them as
# traced, in seconds. What inductor itself does with them is the GPU sessions' part.
CPU_PIECES = {
    "best_exact": {"best_exact_cudagraphs": False, "best_exact_attention": "_native_math"},
    "best_cached": {"best_cached_attention": "_native_math"},
}
BF16 = Scenario(model="tiny", height=64, width=64, steps=6, dtype="bfloat16", device="cpu", prompts=("a cat",))


@pytest.fixture(scope="module")
def traced_compile():
    """torch.compile, and Module.compile through it, on aot_eager for the module's builds; records what was asked."""
    real, calls = torch.compile, []

    def compile(model=None, *, fullgraph=False, mode=None, options=None, **kwargs):
        calls.append({"target": model, "fullgraph": fullgraph, "mode": mode, "options": options})
        return real(model, fullgraph=fullgraph, backend="aot_eager", **kwargs)

    # Earlier tests compiled the same block code with inductor; a clean dynamo keeps these builds independent of
    # which tests ran before, and their recompiles away from dynamo's recompile limit.
    torch._dynamo.reset()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", compile)
        yield calls


def _compiled(module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


@pytest.fixture(scope="module")
def best(eager, traced_compile, tmp_path_factory):
    """best_exact and best_cached built with their CUDA pieces off, as the harness builds them, each rendered twice."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    out = {}
    for name in ("best_exact", "best_cached"):
        params = _params(name, tmp_path_factory.mktemp(name), **CPU_PIECES[name])
        get(name).check(SCENARIO, params)
        pipe = get(name).build(share_modules(eager[0]), SCENARIO, params)
        out[name] = pipe, [_render(pipe, seed=seed) for seed in (0, 1, 0)]
    return out, active


def _fp8_patch(monkeypatch):
    # torchao refuses to quantize off an fp8-capable GPU; quantizing needs no fp8 kernel, and torch's CPU _scaled_mm
    # runs the quantized tiny model, so the CPU can show what each recipe does (not how fast).
    quant_api = importlib.import_module("torchao.quantization.quant_api")
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)


@pytest.fixture(scope="module")
def eager_bf16(eager):
    # The tiny pipeline as build_pipeline(BF16) makes it (same seeds, cast), from a full copy of the float32 one:
    # a copy takes milliseconds where building takes seconds.
    pipe = copy.deepcopy(eager[0])
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.to(torch.bfloat16)
    return pipe, _render(pipe, BF16).float()


def _eager_params_unchanged(eager_pipe, snapshot):
    for name, param in eager_pipe.transformer.named_parameters():
        assert param is snapshot[name][0] and torch.equal(param, snapshot[name][1]), name


def test_stack_registry_flags_and_cheap_defaults():
    for name in ("ao_fp8_compile", "ao_fp8_tensor_compile", "ao_fp8_static_compile"):
        variant = get(name)
        assert not variant.lossless and not variant.in_place and not variant.adaptive, name
        assert variant.libraries == ("torchao",), name
        # A cold build without coordinate-descent tuning: the setting whose cost the issue could not bound.
        assert variant.params["ao_fp8_tuning"] == "off" and variant.params["ao_fp8_min_features"] == 0, name
    assert get("ao_fp8_static_compile").params["ao_fp8_calib_size"] == 2
    exact, cached = get("best_exact"), get("best_cached")
    assert exact.lossless and not exact.in_place and not exact.adaptive and exact.timed
    assert not cached.lossless and not cached.in_place and not cached.adaptive and cached.timed
    assert exact.params["best_exact_fp8"] == "off" and exact.params["best_exact_cudagraphs"] is True
    # The published MagCache setting, under the names magcache_compile declares, so one --fluxperf-param sets both.
    assert {k: cached.params[k] for k in get("magcache_compile").params} == get("magcache_compile").params


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("best_exact", "best_exact_vae", "fast"),
        ("best_exact", "best_exact_text_encoder", "tensorrt"),
        ("best_cached", "best_cached_attention", "warp"),
        ("best_cached", "best_cached_fp8", "int4"),
    ],
)
def test_best_stacks_refuse_an_unknown_setting_naming_it(name, key, value, tmp_path):
    params = _params(name, tmp_path, **{**CPU_PIECES[name], key: value})
    with pytest.raises(ValueError, match=f"{key} must be one of .*; got '{value}'"):
        get(name).check(SCENARIO, params)


def test_ao_fp8_tuning_is_off_by_default_and_reaches_only_its_own_compile(monkeypatch, tmp_path, eager_bf16):
    from fluxperf.variants import ao_fp8_compile

    _fp8_patch(monkeypatch)
    asked = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: asked.append(kwargs) or model)
    for tuning in ("off", "all_directions"):
        get("ao_fp8_compile").build(
            share_modules(eager_bf16[0]), BF16, _params("ao_fp8_compile", tmp_path, ao_fp8_tuning=tuning)
        )
    # Off: compiled exactly as `compile` is, so the two share inductor's caches; tuned: what torchao recommends.
    assert asked == [{"fullgraph": True}, {"fullgraph": True, "options": ao_fp8_compile.TUNING["all_directions"]}]
    assert ao_fp8_compile.TUNING["all_directions"] == {
        "coordinate_descent_tuning": True,
        "coordinate_descent_check_all_directions": True,
    }
    _pretend_gpu(monkeypatch, (9, 0))
    gpu = Scenario(model="tiny", height=64, width=64, steps=6, dtype="bfloat16", device="cuda", prompts=("a cat",))
    with pytest.raises(ValueError, match="ao_fp8_tuning must be one of off, coordinate_descent, all_directions"):
        get("ao_fp8_compile").check(gpu, _params("ao_fp8_compile", tmp_path, ao_fp8_tuning="max"))


# What the tiny model gave (PSNR of the uncompiled fp8 image against eager's, bf16): row 45.4, tensor 44.8, static
# 44.0 dB. Above MAX_DB nothing was quantized; below 35 dB (9 dB under the worst recipe, far above the suite's 12 dB
# floor, which must allow the real model's chaos) a recipe would be broken on this model.
@pytest.mark.parametrize("recipe", ["row", "tensor", "static"])
def test_fp8_recipe_quantizes_the_copy_and_stays_close_to_eager(recipe, monkeypatch, tmp_path, eager_bf16):
    from torchao.utils import TorchAOBaseTensor

    from fluxperf import fp8 as modelopt_recipe
    from fluxperf.variants import ao_fp8_compile

    _fp8_patch(monkeypatch)
    eager_pipe, eager_image = eager_bf16
    snapshot = {n: (p, p.detach().clone()) for n, p in eager_pipe.transformer.named_parameters()}
    pipe = share_modules(eager_pipe)
    names = ao_fp8_compile.quantize(pipe, BF16, _params("ao_fp8_static_compile", tmp_path, ao_fp8_calib_size=1), recipe)

    assert "transformer_blocks.0.attn.to_q" in names and "single_transformer_blocks.0.proj_out" in names, names
    kept = {
        n.split(".")[0]
        for n, m in pipe.transformer.named_modules()
        if isinstance(m, torch.nn.Linear) and not isinstance(m.weight, TorchAOBaseTensor)
    }
    if recipe == "static":
        # Model Optimizer's FLUX exclusions stay bf16; every other linear got a calibrated, finite input scale.
        assert kept == set(modelopt_recipe.EXCLUDED_MODULES), kept
        scales = [dict(pipe.transformer.named_modules())[n].weight.act_quant_scale for n in names]
        assert all(torch.isfinite(s).all() and (s > 0).all() for s in scales)
    else:
        assert not kept, kept  # flux-fast's scope: every linear whose dimensions suit _scaled_mm
    image = _render(pipe, BF16).float()
    psnr_db = quality.psnr_db(image, eager_image)
    assert 35 < psnr_db < MAX_DB, f"{recipe}: PSNR {psnr_db:.1f} dB vs eager"
    _eager_params_unchanged(eager_pipe, snapshot)
    assert torch.equal(_render(eager_pipe, BF16).float(), eager_image), f"{recipe}: eager renders another image"


def test_ao_fp8_min_features_keeps_the_small_linears_in_bf16(monkeypatch, tmp_path, eager_bf16):
    from fluxperf.variants import ao_fp8_compile

    _fp8_patch(monkeypatch)
    # The tiny model's linears are 16 to 192 wide: 32 drops the latent embedder (16 → 32) and the final projection
    # (32 → 16), as 3072 drops FLUX.1-dev's small ones.
    names = ao_fp8_compile.quantize(
        share_modules(eager_bf16[0]), BF16, _params("ao_fp8_compile", tmp_path, ao_fp8_min_features=32), "row"
    )
    assert "x_embedder" not in names and "proj_out" not in names and "transformer_blocks.0.attn.to_q" in names
    with pytest.raises(RuntimeError, match="ao_fp8_min_features=33 excludes them all"):
        ao_fp8_compile.quantize(
            share_modules(eager_bf16[0]), BF16, _params("ao_fp8_compile", tmp_path, ao_fp8_min_features=33), "row"
        )


def test_best_exact_builds_on_the_copy_and_leaves_eager_as_it_was(eager, best, traced_compile):
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    (built, active), (eager_pipe, eager_image) = best, eager
    pipe = built["best_exact"][0]
    # The pieces are on the copy: fused projections, the math attention, compiled transformer, decoder and T5.
    attn = pipe.transformer._orig_mod.transformer_blocks[0].attn
    assert attn.fused_projections and attn.processor._attention_backend == AttentionBackendName._NATIVE_MATH
    assert _compiled(pipe.vae.decoder) and _compiled(pipe.text_encoder_2)
    assert pipe.vae.decoder.mid_block.attentions[0].fused_projections
    # With CUDA graphs off the transformer is compiled as `compile` compiles it: fullgraph, default mode, no options.
    asked = [c for c in traced_compile if c["target"] is pipe.transformer._orig_mod]
    assert [(c["fullgraph"], c["mode"], c["options"]) for c in asked] == [(True, None, None)]
    # ... and not on eager's modules, nor process-wide.
    eager_attn = eager_pipe.transformer.transformer_blocks[0].attn
    assert not eager_attn.fused_projections and not hasattr(eager_attn, "to_qkv")
    assert eager_attn.processor._attention_backend is None and _AttentionBackendRegistry._active_backend == active
    assert not _compiled(eager_pipe.vae.decoder) and not _compiled(eager_pipe.text_encoder_2)
    assert not eager_pipe.vae.decoder.mid_block.attentions[0].fused_projections
    assert attn.to_q.weight is eager_attn.to_q.weight  # no second copy of the weights beyond the fused ones
    assert torch.equal(_render(eager_pipe), eager_image), "eager renders another image after best_exact's build"


def test_best_exact_asks_for_cuda_graphs_and_cudnn_attention_by_default(eager, monkeypatch, tmp_path):
    from diffusers.models.attention_dispatch import AttentionBackendName

    # What the build asks of torch.compile on a GPU, recorded instead of compiled (the CPU can't run either piece).
    asked = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: asked.append((model, kwargs)) or model)
    pipe = get("best_exact").build(share_modules(eager[0]), SCENARIO, _params("best_exact", tmp_path))
    assert [kw for model, kw in asked if model is pipe.transformer] == [
        {"fullgraph": True, "options": {"triton.cudagraphs": True}}
    ]  # what mode="reduce-overhead" sets
    assert (
        pipe.transformer.transformer_blocks[0].attn.processor._attention_backend == AttentionBackendName._NATIVE_CUDNN
    )


def test_best_exact_is_lossless_and_deterministic(eager, best):
    first, other, again = best[0]["best_exact"][1]
    assert torch.equal(first, again) and not torch.equal(first, other)
    # Compile alone gives ~133 dB here; fused projections move the image by float rounding, no more.
    psnr_db = quality.psnr_db(first, eager[1])
    assert psnr_db > MAX_DB, f"best_exact: PSNR {psnr_db:.1f} dB vs eager: it is not exact"


def test_channels_last_vae_restrides_only_the_copy(eager):
    from fluxperf.variants.best_exact import channels_last

    eager_pipe, eager_image = eager
    convs = {
        n: (m.weight, m.weight.stride()) for n, m in eager_pipe.vae.named_modules() if isinstance(m, torch.nn.Conv2d)
    }
    pipe = share_modules(eager_pipe)
    assert channels_last(pipe.vae) == len(convs)
    conv = pipe.vae.decoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for name, module in eager_pipe.vae.named_modules():
        if name in convs:
            assert module.weight is convs[name][0] and module.weight.stride() == convs[name][1], name
    assert quality.psnr_db(_render(pipe), eager_image) > MAX_DB
    assert torch.equal(_render(eager_pipe), eager_image)


def test_best_cached_is_magcache_on_exact_pieces(eager, best):
    from fluxperf import roofline

    (built, _), (eager_pipe, eager_image) = best, eager
    pipe, (first, other, again) = built["best_cached"]
    assert torch.equal(first, again) and torch.equal(_render(eager_pipe), eager_image)
    # The same cache without compile or fused projections: the same image up to float rounding.
    reference = share_modules(eager_pipe)
    reference.transformer.enable_cache(_uncompiled_cache("magcache_compile"))
    diff = (first - _render(reference)).abs().max().item()
    assert diff < 1e-4, f"best_cached: max |diff| {diff:.3g} from MagCache alone"
    assert quality.psnr_db(first, eager_image) < MAX_DB, "best_cached: as close as compile alone: nothing was cached"
    work = roofline.count(lambda: _render(pipe), pipe, SCENARIO.steps)
    assert 0 < work.blocks_ran < work.blocks_total


def test_best_cached_quantizes_the_fused_projections_and_traces_fp8_beneath_its_hooks(
    monkeypatch, tmp_path, eager_bf16, traced_compile
):
    from torchao.utils import TorchAOBaseTensor

    _fp8_patch(monkeypatch)
    eager_pipe, eager_image = eager_bf16
    params = _params(
        "best_cached",
        tmp_path,
        best_cached_attention="default",
        best_cached_fp8="static",
        best_cached_vae="eager",
        best_cached_text_encoder="eager",
        ao_fp8_calib_size=1,
    )
    pipe = get("best_cached").build(share_modules(eager_pipe), BF16, params)
    attn = pipe.transformer.transformer_blocks[0].attn
    # Fused first, quantized second: the projections the attention calls are the fp8 ones, and the separate ones it
    # no longer calls stay eager's (an observer on them would never see an input).
    assert attn.fused_projections and isinstance(attn.to_qkv.weight, TorchAOBaseTensor)
    assert attn.to_q.weight is eager_pipe.transformer.transformer_blocks[0].attn.to_q.weight
    image = _render(pipe, BF16).float()
    assert torch.equal(image, _render(pipe, BF16).float())
    assert 15 < quality.psnr_db(image, eager_image) < MAX_DB
    assert torch.equal(_render(eager_pipe, BF16).float(), eager_image)
