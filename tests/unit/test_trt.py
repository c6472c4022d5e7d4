"""The TensorRT path up to TensorRT itself: cache key, shapes, ONNX I/O, and the drop-in transformer."""

import copy
import dataclasses
import sys
from types import SimpleNamespace

import pytest
import torch

from fluxperf import fp8, pipelines, trt, variants
from fluxperf.models import build_pipeline
from fluxperf.scenario import Scenario, shipped_prompts

SCENARIO = Scenario(
    model="tiny",
    height=64,
    width=64,
    steps=3,
    dtype="bfloat16",
    device="cpu",
    prompts=shipped_prompts()[:2],
    seeds=(0,),
)
# FLUX.1-dev's transformer config, as far as the engine's I/O depends on it.
FLUX_DEV = SimpleNamespace(
    in_channels=64, out_channels=None, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True
)
ONNX_DTYPES = {"bfloat16": 16, "float32": 1}  # onnx.TensorProto.BFLOAT16 / FLOAT


def render(pipe, scenario=SCENARIO):
    """Every prompt and seed as the bench renders them, with the 512 text tokens the engine's profile is built for."""
    noise = {seed: pipelines.latents(pipe, scenario, seed) for seed in scenario.seeds}
    return torch.cat(
        [pipelines.render(pipe, scenario, p, noise[seed], text_tokens=trt.TEXT_TOKENS) for p, seed in scenario.items]
    )


def test_io_spec_follows_the_scenario_at_flux_dev_shapes():
    scenario = Scenario(model="synthetic", height=512, width=768, dtype="bfloat16")
    spec = trt.io_spec(scenario, FLUX_DEV)
    tokens = (512 // 16) * (768 // 16)
    assert [(s.name, s.shape, s.dtype) for s in spec.inputs] == [
        ("hidden_states", (1, tokens, 64), "bfloat16"),
        ("encoder_hidden_states", (1, 512, 4096), "bfloat16"),
        ("pooled_projections", (1, 768), "bfloat16"),
        ("timestep", (1,), "bfloat16"),
        ("img_ids", (tokens, 3), "float32"),
        ("txt_ids", (512, 3), "float32"),
        ("guidance", (1,), "float32"),
    ]
    assert (spec.output.name, spec.output.shape, spec.output.dtype) == ("latent", (1, tokens, 64), "bfloat16")


def test_optimization_profile_pins_min_opt_and_max_to_the_scenario():
    spec = trt.io_spec(Scenario(model="synthetic", height=1024, width=1024), FLUX_DEV)
    profile = spec.profile()
    assert list(profile) == [s.name for s in spec.inputs]
    for s in spec.inputs:
        assert profile[s.name] == (s.shape, s.shape, s.shape)
    assert profile["hidden_states"][0] == (1, 4096, 64)


def test_a_model_without_guidance_embeds_takes_no_guidance_input():
    spec = trt.io_spec(SCENARIO, SimpleNamespace(**{**vars(FLUX_DEV), "guidance_embeds": False}))
    assert "guidance" not in [s.name for s in spec.inputs]


def _key(**changes):
    scenario = dataclasses.replace(Scenario(model="synthetic", height=512, width=512), **changes.pop("scenario", {}))
    args = {
        "spec": trt.io_spec(scenario, FLUX_DEV),
        "quant_config": {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"},
        "calib_prompts": ["a fox", "a lighthouse"],
        "versions": {"tensorrt": "10.13.0", "nvidia-modelopt": "0.47.0", "torch": "2.11.0"},
        "gpu": "NVIDIA H100 80GB HBM3",
    }
    for name, value in changes.items():
        args[name] = value
    return trt.cache_key(scenario, **args)


def test_cache_key_is_stable_and_changes_with_every_keyed_field():
    base = _key()
    assert _key() == base
    changed = {
        "model": _key(scenario={"model": "black-forest-labs/FLUX.1-dev"}),
        "revision": _key(scenario={"revision": "0ef5fff"}),
        "height": _key(scenario={"height": 1024}),
        "width": _key(scenario={"width": 1024}),
        "dtype": _key(scenario={"dtype": "float16"}),
        "steps": _key(scenario={"steps": 20}),
        "guidance": _key(scenario={"guidance": 4.0}),
        "text tokens": _key(spec=trt.io_spec(Scenario(model="synthetic"), FLUX_DEV, text_tokens=256)),
        "quant config": _key(quant_config={"quant_cfg": [], "algorithm": "max"}),
        "calibration prompts": _key(calib_prompts=["a fox"]),
        "tensorrt": _key(versions={"tensorrt": "10.14.0", "nvidia-modelopt": "0.47.0", "torch": "2.11.0"}),
        "modelopt": _key(versions={"tensorrt": "10.13.0", "nvidia-modelopt": "0.48.0", "torch": "2.11.0"}),
        "torch": _key(versions={"tensorrt": "10.13.0", "nvidia-modelopt": "0.47.0", "torch": "2.12.0"}),
        "gpu": _key(gpu="NVIDIA H200"),
    }
    same = [field for field, key in changed.items() if key == base]
    assert not same, f"the cache key ignores: {same}"
    assert len(set(changed.values())) == len(changed)


def test_cache_key_ignores_what_does_not_change_the_engine():
    # Seeds and the benchmark's prompt set beyond the calibration prompts only change what is rendered.
    assert _key(scenario={"seeds": (0, 1, 2)}) == _key()
    assert _key(scenario={"prompts": ("only this",)}) == _key()


def test_versions_names_tensorrt_modelopt_and_torch():
    found = trt.versions()
    assert {"tensorrt", "nvidia-modelopt", "torch"} <= set(found)
    assert found["torch"].startswith(torch.__version__.split("+")[0])


def test_check_io_accepts_the_spec_and_names_any_difference():
    spec = trt.io_spec(SCENARIO, FLUX_DEV)
    found = {s.name: ("input", s.dtype) for s in spec.inputs} | {"latent": ("output", "bfloat16")}
    trt.check_io(found, spec, "engine.plan")
    for broken in (
        {**found, "img_ids": ("input", "bfloat16")},
        {k: v for k, v in found.items() if k != "guidance"},
        {**found, "latent": ("input", "bfloat16")},
    ):
        with pytest.raises(RuntimeError, match="engine.plan"):
            trt.check_io(broken, spec, "engine.plan")


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(SCENARIO)


def test_rmsnorm_swap_is_what_makes_the_transformer_exportable(pipe, tmp_path):
    onnx = pytest.importorskip("onnx", reason='needs onnx: pip install "nvidia-modelopt==0.47.*" onnx')
    transformer = copy.deepcopy(pipe.transformer)
    spec = trt.io_spec(SCENARIO, transformer.config)
    with pytest.raises(Exception, match="rms_norm"):
        trt.export_onnx(transformer, spec, tmp_path / "before" / "model.onnx")
    feeds = trt.dummy_inputs(spec, "cpu")
    before = transformer(**feeds, return_dict=False)[0]
    config = transformer.config
    # q/k norms in every attention, plus the text stream's q/k norms in the joint blocks.
    assert fp8.swap_rmsnorm(transformer) == 4 * config.num_layers + 2 * config.num_single_layers
    assert not [m for m in transformer.modules() if type(m) is torch.nn.RMSNorm]
    torch.testing.assert_close(transformer(**feeds, return_dict=False)[0], before, rtol=0, atol=0)

    path = trt.export_onnx(transformer, spec, tmp_path / "after" / "model.onnx")
    graph = onnx.load(str(path)).graph
    onnx.checker.check_model(onnx.load(str(path)))
    # Names, order and element types are what the engine binds by; ranks and static dims must agree too.
    assert [i.name for i in graph.input] == [s.name for s in spec.inputs]
    assert [o.name for o in graph.output] == [spec.output.name]
    for tensor, s in zip([*graph.input, *graph.output], [*spec.inputs, spec.output]):
        assert tensor.type.tensor_type.elem_type == ONNX_DTYPES[s.dtype], s.name
        dims = [d.dim_value or d.dim_param for d in tensor.type.tensor_type.shape.dim]
        assert len(dims) == len(s.shape), s.name
        for got, want, axis in zip(dims, s.shape, range(len(dims))):
            assert got == (trt.DYNAMIC_AXES[s.name].get(axis) or want), (s.name, dims)


class FakeRunner:
    """Stands in for EngineRunner: the original transformer, fed exactly what the engine would get."""

    def __init__(self, transformer):
        self.transformer, self.calls = transformer, []

    def __call__(self, feeds):
        self.calls.append({name: (tuple(t.shape), t.dtype, t.is_contiguous()) for name, t in feeds.items()})
        return {"latent": self.transformer(**feeds, return_dict=False)[0]}


def test_wrapper_is_a_drop_in_transformer_with_identical_images(pipe):
    eager = render(pipe)
    original = pipe.transformer
    spec = trt.io_spec(SCENARIO, original.config)
    runner = FakeRunner(original)
    wrapper = trt.TRTTransformer(runner, original.config, spec, original.dtype, "cpu")
    pipe.transformer = wrapper
    try:
        assert pipe.transformer is wrapper
        assert (wrapper.dtype, wrapper.device) == (torch.bfloat16, torch.device("cpu"))
        assert pipe.device == torch.device("cpu")
        images = render(pipe)
    finally:
        pipe.transformer = original
    assert len(runner.calls) == SCENARIO.steps * len(SCENARIO.items)
    expected = {s.name: (s.shape, getattr(torch, s.dtype), True) for s in spec.inputs}
    assert runner.calls[0] == expected
    assert torch.equal(images, eager)


def test_wrapper_refuses_shapes_the_engine_was_not_built_for(pipe):
    spec = trt.io_spec(SCENARIO, pipe.transformer.config)
    wrapper = trt.TRTTransformer(FakeRunner(pipe.transformer), pipe.transformer.config, spec, torch.bfloat16, "cpu")
    feeds = trt.dummy_inputs(spec, "cpu")
    assert wrapper(**feeds, return_dict=True).sample.shape == spec.output.shape
    with wrapper.cache_context("cond"):
        assert isinstance(wrapper(**feeds, return_dict=False), tuple)
    feeds["hidden_states"] = torch.zeros(1, 4, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"hidden_states has shape \(1, 4, 16\) but the engine was built for"):
        wrapper(**feeds)


def test_trt_fp8_without_tensorrt_is_a_missing_dependency_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    variant = variants.get("trt_fp8")
    assert (variant.timed, variant.in_place) == (True, True)
    # A bare object as the pipeline: the check must come before any work on it.
    with pytest.raises(variants.MissingDependency) as info:
        variant.build(object(), SCENARIO, {"calib_size": 8, "cache_dir": None})
    assert info.value.package == "tensorrt"
    assert "pip install tensorrt-cu" in info.value.install and "https://pypi.nvidia.com" in info.value.install
