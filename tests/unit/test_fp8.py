"""FP8 quantization with Model Optimizer on the tiny model, on CPU: quantizers, the ONNX graph, the images."""

import re
import sys

import pytest
import torch

INSTALL = 'pip install "nvidia-modelopt==0.47.*" onnx'
pytest.importorskip("modelopt.torch.quantization", reason=f"needs NVIDIA Model Optimizer: {INSTALL}")
onnx = pytest.importorskip("onnx", reason=f"needs onnx: {INSTALL}")

from diffusers.models.transformers.transformer_flux import FluxAttention  # noqa: E402

from fluxperf import fp8, pipelines, trt, variants  # noqa: E402
from fluxperf.models import build_pipeline  # noqa: E402
from fluxperf.progress import Progress  # noqa: E402
from fluxperf.quality import psnr_db  # noqa: E402
from fluxperf.scenario import Scenario, shipped_prompts  # noqa: E402

# bfloat16, not float32: FP8 attention exports only with 16-bit Q/DQ (TensorRT's fusion pattern).
SCENARIO = Scenario(
    model="tiny",
    height=64,
    width=64,
    steps=4,
    dtype="bfloat16",
    device="cpu",
    prompts=shipped_prompts()[:2],
    seeds=(0,),
)
ATTENTION_QDQ = re.compile(r"/attn/TRT_FP8QuantizeLinear(_\d+)?$")


def render(pipe, scenario=SCENARIO):
    """Every prompt and seed as the bench renders them (its noise and call)."""
    return torch.cat(
        [pipelines.render(pipe, scenario, p, pipelines.latents(pipe, scenario, seed)) for p, seed in scenario.items]
    )


def under(name, module):
    return name == module or name.startswith(module + ".")


@pytest.fixture(scope="module")
def eager():
    """Eager's images, and every transformer call it made: (kwargs, output)."""
    pipe = build_pipeline(SCENARIO)
    calls = []
    hook = pipe.transformer.register_forward_hook(
        lambda module, args, kwargs, out: calls.append((dict(kwargs), out[0].clone())), with_kwargs=True
    )
    images = render(pipe)
    hook.remove()
    return images, calls


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """The pipeline after the modelopt_fp8 variant, and the transformer's Linear names from before it."""
    pipe = build_pipeline(SCENARIO)
    linears = [n for n, m in pipe.transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    params = {"calib_size": 2, "cache_dir": tmp_path_factory.mktemp("cache"), "progress": Progress()}
    pipe = variants.get("modelopt_fp8").build(pipe, SCENARIO, params)
    return pipe, linears


@pytest.fixture(scope="module")
def graph(quantized, tmp_path_factory):
    pipe, _ = quantized
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    trt.export_onnx(pipe.transformer, trt.io_spec(SCENARIO, pipe.transformer.config), path)
    return onnx.load(str(path))


def quantize_nodes(model):
    return [n for n in model.graph.node if n.op_type == "TRT_FP8QuantizeLinear"]


def test_variant_is_untimed_and_paired_with_eager():
    v = variants.get("modelopt_fp8")
    # Quantizers are swapped into the harness's copy of the transformer; eager's weights are only read.
    assert (v.timed, v.in_place) == (False, False)
    assert v.params == {"calib_size": fp8.DEFAULT_CALIB_SIZE}


def test_every_attention_module_quantizes_q_k_v_and_softmax(quantized):
    pipe, _ = quantized
    attention = [n for n, m in pipe.transformer.named_modules() if isinstance(m, FluxAttention)]
    config = pipe.transformer.config
    assert len(attention) == config.num_layers + config.num_single_layers
    enabled = fp8.enabled_quantizers(pipe.transformer)
    for name in attention:
        for q in ("q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "softmax_quantizer"):
            assert f"{name}.{q}" in enabled, f"{name}.{q} is not enabled"
        for q in ("q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer"):
            assert enabled[f"{name}.{q}"].amax is not None, f"{name}.{q} was not calibrated"


def test_excluded_layers_carry_no_enabled_quantizer(quantized):
    pipe, _ = quantized
    every = fp8.quantizers(pipe.transformer)
    for module in fp8.EXCLUDED_MODULES:
        inside = {n: q for n, q in every.items() if under(n, module)}
        assert inside, f"modelopt inserted no quantizers under {module}: the check below would be vacuous"
        assert not [n for n, q in inside.items() if q.is_enabled], f"{module} is quantized"
    # The exclusion is the top-level proj_out only: the single blocks' proj_out stays FP8, as in the recipe.
    assert every["single_transformer_blocks.0.proj_out.weight_quantizer"].is_enabled


def test_every_other_linear_has_calibrated_fp8_weight_and_input(quantized):
    pipe, linears = quantized
    enabled = fp8.enabled_quantizers(pipe.transformer)
    kept = [n for n in linears if not any(under(n, m) for m in fp8.EXCLUDED_MODULES)]
    assert kept
    for name in kept:
        for q in ("weight_quantizer", "input_quantizer"):
            quantizer = enabled.get(f"{name}.{q}")
            assert quantizer is not None, f"{name}.{q} is not enabled"
            assert quantizer.num_bits == (4, 3) and quantizer.amax is not None and quantizer.amax.numel() == 1


def test_check_quantized_refuses_a_model_without_attention_quantizers(quantized):
    pipe, _ = quantized
    mtq = sys.modules["modelopt.torch.quantization"]
    mtq.disable_quantizer(pipe.transformer, "*[qkv]_bmm_quantizer")
    try:
        with pytest.raises(RuntimeError, match="no attention quantizers"):
            fp8.check_quantized(pipe.transformer)
    finally:
        mtq.enable_quantizer(pipe.transformer, "*[qkv]_bmm_quantizer")
    fp8.check_quantized(pipe.transformer)


def test_onnx_graph_passes_the_checker_with_one_fp8_qdq_pair_per_enabled_quantizer(quantized, graph):
    pipe, _ = quantized
    onnx.checker.check_model(graph)
    dequantize = [n for n in graph.graph.node if n.op_type == "TRT_FP8DequantizeLinear"]
    enabled = fp8.enabled_quantizers(pipe.transformer)
    assert len(quantize_nodes(graph)) == len(dequantize) == len(enabled)


def test_onnx_graph_quantizes_the_weight_of_every_linear_outside_the_exclusions(quantized, graph):
    _, linears = quantized
    weights = {i.name for i in graph.graph.initializer}
    quantized_weights = {n.input[0] for n in quantize_nodes(graph) if n.input[0] in weights}
    expected = {f"{n}.weight" for n in linears if not any(under(n, m) for m in fp8.EXCLUDED_MODULES)}
    assert quantized_weights == expected


def test_onnx_graph_quantizes_q_k_v_and_softmax_of_every_attention(quantized, graph):
    pipe, _ = quantized
    config = pipe.transformer.config
    attention_qdq = [n.name for n in quantize_nodes(graph) if ATTENTION_QDQ.search(n.name)]
    assert len(attention_qdq) == 4 * (config.num_layers + config.num_single_layers), attention_qdq


def test_onnx_graph_has_no_qdq_in_excluded_layers(graph):
    names = [n.name for n in quantize_nodes(graph)]
    assert names
    for module in fp8.EXCLUDED_MODULES:
        assert not [n for n in names if n.startswith(f"/{module}/")], module


def test_fp8_transformer_stays_within_3_percent_of_eager_on_eager_inputs(quantized, eager):
    pipe, _ = quantized
    _, calls = eager
    errors = []
    with torch.no_grad():
        for kwargs, reference in calls:
            out = pipe.transformer(**kwargs)[0].float()
            errors.append(float((out - reference.float()).norm() / reference.float().norm()))
    # Measured 0.9% on the tiny model; halving every calibrated amax (clipping) gives 6.7%.
    assert 0 < max(errors) < 0.03, f"relative error per call: {errors}"


def test_fp8_images_differ_from_eager_but_stay_close(quantized, eager):
    pipe, _ = quantized
    eager_images, _ = eager
    images = render(pipe)
    assert images.shape == eager_images.shape
    assert not torch.equal(images, eager_images), "FP8 images are identical to eager: nothing was quantized"
    psnr = psnr_db(images, eager_images)
    # On the tiny model FP8 measured 50 dB against eager; eager against eager with another seed, 14 dB.
    assert psnr > 30, f"FP8 images are {psnr:.1f} dB from eager"


def test_calib_size_must_be_positive():
    with pytest.raises(ValueError, match="calib_size"):
        fp8.calibration_prompts(SCENARIO, 0)
    assert fp8.calibration_prompts(SCENARIO, 2) == list(SCENARIO.prompts[:2])


def test_missing_onnx_is_a_missing_dependency_not_a_silent_skip_of_attention(monkeypatch):
    # Without onnx modelopt quietly inserts no attention quantizers; we refuse instead.
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(variants.MissingDependency, match=re.escape(INSTALL)):
        fp8.require_modelopt()
