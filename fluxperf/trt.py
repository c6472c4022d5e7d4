"""TensorRT engine for the FLUX transformer: I/O spec, ONNX export, engine build and cache, drop-in module.

The engine is built for one scenario's static shapes (the optimization profile has min = opt = max), so it
is cached on disk under a key that covers everything that changes its bytes: see `cache_key`.

Memory with FLUX.1-dev on a 48 GB card (bf16, batch 1, 512 text tokens):
- calibration: the whole pipeline on the GPU, ~34 GiB at 1024² (see fluxperf/fp8.py);
- export: only the transformer stays on the GPU. The text encoders and VAE (9.3 GiB) go to the CPU first,
  so the GPU holds the 22.2 GiB transformer plus one traced forward's activations (a few GiB at 1024²).
  The host holds the ONNX graph while it is written (about the model's size again: ~23 GiB of initializers,
  written as external data next to model.onnx; the ONNX folder is deleted once the engine exists);
- engine build: the quantized PyTorch transformer moves to the CPU (the variant is in_place, so the harness
  rebuilds eager afterwards anyway) and the GPU only holds what TensorRT's builder needs: its FP8 weights
  (~12 GiB) and tactic workspace;
- running: the engine (~12 GiB) plus the text encoders and VAE back on the GPU, ~22 GiB plus activations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fluxperf.optional import require

ONNX_OPSET = 20  # the legacy TorchScript exporter's FP8 custom ops are known to export at this opset
TEXT_TOKENS = 512  # FluxPipeline's default max_sequence_length: T5 pads every prompt to it
CACHE_FORMAT = 1  # bump when this module changes what it writes


def tensorrt_install() -> str:
    """The documented pip command for TensorRT, for the CUDA major version this torch was built with."""
    cuda = (torch.version.cuda or "13").split(".")[0]
    return f"pip install tensorrt-cu{cuda} --extra-index-url https://pypi.nvidia.com"


def require_tensorrt():
    return require("tensorrt", tensorrt_install())


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # a torch dtype name: "bfloat16", "float32", ...


@dataclass(frozen=True)
class IOSpec:
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """Per input (min, opt, max): all three the scenario's shape, so TensorRT tunes for exactly it."""
        return {spec.name: (spec.shape, spec.shape, spec.shape) for spec in self.inputs}


def io_spec(scenario, config, text_tokens: int = TEXT_TOKENS) -> IOSpec:
    """The transformer's forward inputs as FluxPipeline passes them for this scenario, at batch 1.

    Latents are packed 2×2 after the VAE's 8× downsampling, hence (H/16)·(W/16) image tokens. Position ids
    and guidance travel in float32, as the pipeline makes guidance and as the RoPE computes anyway.
    """
    dtype = scenario.dtype
    image_tokens = (scenario.height // 16) * (scenario.width // 16)
    inputs = [
        TensorSpec("hidden_states", (1, image_tokens, config.in_channels), dtype),
        TensorSpec("encoder_hidden_states", (1, text_tokens, config.joint_attention_dim), dtype),
        TensorSpec("pooled_projections", (1, config.pooled_projection_dim), dtype),
        TensorSpec("timestep", (1,), dtype),
        TensorSpec("img_ids", (image_tokens, 3), "float32"),
        TensorSpec("txt_ids", (text_tokens, 3), "float32"),
    ]
    if config.guidance_embeds:
        inputs.append(TensorSpec("guidance", (1,), "float32"))
    out_channels = config.out_channels or config.in_channels
    return IOSpec(tuple(inputs), TensorSpec("latent", (1, image_tokens, out_channels), dtype))


def versions() -> dict[str, str]:
    """Library versions that change an engine's bytes; a missing one is recorded as absent, not guessed."""
    from importlib import metadata

    found = {}
    for dist in ("tensorrt", "nvidia-modelopt", "torch", "diffusers", "onnx"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def cache_key(scenario, spec: IOSpec, quant_config: dict, calib_prompts, versions: dict, gpu: str) -> str:
    """Hash of everything that changes the engine. Calibration inputs are in it because they set the scales."""
    fields = {
        "format": CACHE_FORMAT,
        "model": scenario.model,
        "revision": scenario.revision,
        "dtype": scenario.dtype,
        "io": asdict(spec),
        "quant_config": quant_config,
        # The resolution, not only the token count: 512x1024 and 1024x512 share shapes but not calibration.
        "calibration": {
            "prompts": list(calib_prompts),
            "height": scenario.height,
            "width": scenario.width,
            "steps": scenario.steps,
            "guidance": scenario.guidance,
        },
        "onnx_opset": ONNX_OPSET,
        "versions": versions,
        "gpu": gpu,
    }
    blob = json.dumps(fields, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def dummy_inputs(spec: IOSpec, device, guidance: float = 3.5) -> dict:
    values = {"timestep": 1.0, "guidance": guidance, "img_ids": 0.0, "txt_ids": 0.0}
    feeds = {}
    generator = torch.Generator().manual_seed(0)
    for s in spec.inputs:
        dtype = getattr(torch, s.dtype)
        if s.name in values:
            feeds[s.name] = torch.full(s.shape, values[s.name], dtype=dtype, device=device)
        else:
            feeds[s.name] = torch.randn(s.shape, generator=generator).to(device=device, dtype=dtype)
    return feeds


# Batch and token axes stay symbolic in the ONNX graph, as in Model Optimizer's FLUX export; the engine's
# optimization profile then pins them to the scenario (min = opt = max).
DYNAMIC_AXES = {
    "hidden_states": {0: "batch", 1: "image_tokens"},
    "encoder_hidden_states": {0: "batch", 1: "text_tokens"},
    "pooled_projections": {0: "batch"},
    "timestep": {0: "batch"},
    "img_ids": {0: "image_tokens"},
    "txt_ids": {0: "text_tokens"},
    "guidance": {0: "batch"},
    "latent": {0: "batch", 1: "image_tokens"},
}


def export_onnx(transformer, spec: IOSpec, path: Path, guidance: float = 3.5) -> Path:
    """Export the (quantized) transformer alone to ONNX at `path`, weights as external data beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    feeds = dummy_inputs(spec, transformer.device, guidance)
    with torch.inference_mode():
        # The legacy TorchScript exporter (dynamo=False) is the one modelopt's FP8 symbolics target.
        torch.onnx.export(
            transformer,
            (),
            str(path),
            kwargs={**feeds, "return_dict": False},
            input_names=[s.name for s in spec.inputs],
            output_names=[spec.output.name],
            dynamic_axes={name: DYNAMIC_AXES[name] for name in [*feeds, spec.output.name]},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def torch_dtype_of(trt, trt_dtype):
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }
    return table[trt_dtype]


def check_io(found: dict[str, tuple[str, str]], spec: IOSpec, where: str) -> None:
    """`found` maps tensor name -> ("input"|"output", torch dtype name); it must be exactly `spec`."""
    expected = {s.name: ("input", s.dtype) for s in spec.inputs}
    expected[spec.output.name] = ("output", spec.output.dtype)
    if found != expected:
        raise RuntimeError(f"{where}: I/O tensors {found} differ from the expected {expected}")


def build_engine(onnx_path: Path, spec: IOSpec, engine_path: Path) -> Path:
    """Parse the ONNX file into a strongly typed network and serialize an engine for the spec's shapes."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: precisions come from the graph's Q/DQ and casts, not from builder flags (TensorRT 10+;
    # in 11 the flag is the default and kept only for compatibility).
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file, not parse(bytes): it resolves the external weight files next to model.onnx.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    found = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        found[t.name] = ("input", str(torch_dtype_of(trt, t.dtype)).removeprefix("torch."))
    for i in range(network.num_outputs):
        t = network.get_output(i)
        found[t.name] = ("output", str(torch_dtype_of(trt, t.dtype)).removeprefix("torch."))
    check_io(found, spec, str(onnx_path))

    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in spec.profile().items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    tmp = engine_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, engine_path)  # atomic: an interrupted build never leaves a truncated engine in the cache
    return engine_path


class EngineRunner:
    """Runs a deserialized engine on torch CUDA tensors, on torch's current stream."""

    def __init__(self, engine_path: Path, spec: IOSpec):
        trt = require_tensorrt()
        self.trt, self.spec = trt, spec
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {engine_path}; delete it to rebuild")
        found = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = "input" if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
            found[name] = (mode, str(torch_dtype_of(trt, self.engine.get_tensor_dtype(name))).removeprefix("torch."))
        check_io(found, spec, str(engine_path))
        self.context = self.engine.create_execution_context()

    def __call__(self, feeds: dict) -> dict:
        for name, tensor in feeds.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        out_spec = self.spec.output
        shape = tuple(self.context.get_tensor_shape(out_spec.name))
        out = torch.empty(shape, dtype=getattr(torch, out_spec.dtype), device=next(iter(feeds.values())).device)
        self.context.set_tensor_address(out_spec.name, out.data_ptr())
        # torch's current stream: later torch ops are ordered after the engine without a host sync.
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log above)")
        return {out_spec.name: out}


class TRTTransformer(torch.nn.Module):
    """Stands in for FluxTransformer2DModel inside FluxPipeline, backed by an engine runner.

    `runner(feeds: {name: tensor}) -> {output name: tensor}` is an EngineRunner, or anything that behaves
    like one (the unit tests use the original transformer). It keeps what FluxPipeline reads: `config`,
    `dtype`, `device`, `cache_context`, and the forward signature with `return_dict`.
    """

    def __init__(self, runner, config, spec: IOSpec, dtype, device):
        super().__init__()
        self.runner, self.config, self.spec = runner, config, spec
        self._dtype, self._device = dtype, torch.device(device)

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @contextlib.contextmanager
    def cache_context(self, name):
        # diffusers' cache hooks key their state by this name; an engine holds no cache to switch.
        yield

    def forward(self, hidden_states, return_dict=True, **inputs):
        """The transformer's call as the pipeline makes it (keyword arguments); the engine takes its own inputs only."""
        if inputs.get("joint_attention_kwargs") or any(
            inputs.get(k) is not None for k in ("controlnet_block_samples", "controlnet_single_block_samples")
        ):
            raise ValueError("the TensorRT transformer takes no joint_attention_kwargs or controlnet inputs")
        sample = self.runner(self._feeds({"hidden_states": hidden_states, **inputs}))[self.spec.output.name]
        if not return_dict:
            return (sample,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=sample)

    def _feeds(self, given: dict) -> dict:
        """The engine's inputs, in its dtypes, on its device, checked against the shapes it was built for."""
        feeds = {}
        for s in self.spec.inputs:
            tensor = given.get(s.name)
            if tensor is None:
                raise ValueError(f"{s.name} is required by the engine")
            if tuple(tensor.shape) != s.shape:
                raise ValueError(
                    f"{s.name} has shape {tuple(tensor.shape)} but the engine was built for "
                    f"{s.shape}; an engine only serves the scenario it was built for"
                )
            feeds[s.name] = tensor.to(device=self._device, dtype=getattr(torch, s.dtype)).contiguous()
        return feeds


def engine_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "trt_fp8" / key


def discard_onnx(onnx_dir: Path) -> None:
    # The ONNX copy of FLUX.1-dev is ~23 GB; once the engine exists nothing reads it again.
    shutil.rmtree(onnx_dir, ignore_errors=False)
