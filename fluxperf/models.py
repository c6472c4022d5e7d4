"""Model sources: build the FluxPipeline a scenario names ("tiny", "synthetic", or a hub id / local path)."""

from __future__ import annotations

import os
import string
from typing import Callable

import torch

from fluxperf.scenario import Scenario

Progress = Callable[[str], None]


class ModelSourceError(RuntimeError):
    """The model can't be loaded; the message says what to do. Raised instead of a deep traceback."""


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def max_sequence_length(pipe) -> int:
    """T5 tokens per prompt: FLUX.1-dev's 512, or fewer where the pipeline's T5 tokenizer holds fewer (tiny: 32)."""
    return min(512, pipe.tokenizer_2.model_max_length)


def build_pipeline(scenario: Scenario, progress: Progress = lambda _msg: None):
    """Return a FluxPipeline on the scenario's device, every module in eval mode, progress bar off."""
    if scenario.model == "tiny":
        pipe = _tiny(scenario)
    elif scenario.model == "synthetic":
        pipe = _synthetic(scenario, progress)
    else:
        pipe = _pretrained(scenario, progress)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            # Models built from configs start in training mode; T5's dropout would make runs differ.
            module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_tokenizers(max_length: int):
    from transformers import CLIPTokenizer, T5TokenizerFast

    # Character-level vocab: no merges and no downloads, yet every prompt still tokenizes.
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    clip = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    # Without a vocab file T5TokenizerFast builds a minimal unigram model; model_max_length avoids an overflow.
    t5 = T5TokenizerFast(model_max_length=max_length)
    return clip, t5


# What every FLUX pipeline's components are, whatever their sizes.
FLUX = {
    "transformer": {"patch_size": 1, "guidance_embeds": True},
    "clip": {
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    },
    "t5": {"feed_forward_proj": "gated-gelu", "is_encoder_decoder": False, "decoder_start_token_id": 0},
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "act_fn": "silu",
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
    },
}
# Their sizes: toy ones (the text encoders' vocab sizes follow the tiny tokenizers; tests/unit/test_stacks.py builds
# the same transformer with other weights), and FLUX.1-dev's, whose transformer is FluxTransformer2DModel's default.
TINY_SIZES = {
    "transformer": {
        "in_channels": 16,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 32,
        "axes_dims_rope": (4, 6, 6),
    },
    "clip": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
    },
    "t5": {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4},
    "vae": {
        "latent_channels": 4,
        "block_out_channels": (8, 8, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "force_upcast": False,
    },
}
SYNTHETIC_SIZES = {
    "transformer": {},
    "clip": {
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "projection_dim": 768,
    },
    "t5": {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64},
    "vae": {
        "latent_channels": 16,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "force_upcast": True,
    },
}
TINY = {part: {**FLUX[part], **TINY_SIZES[part]} for part in FLUX}
FLUX_SCHEDULER = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
SYNTHETIC = {part: {**FLUX[part], **SYNTHETIC_SIZES[part]} for part in FLUX}


def _assemble(transformer, clip, clip_tok, t5, t5_tok, vae):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    parts = {"transformer": transformer, "text_encoder": clip, "tokenizer": clip_tok, "text_encoder_2": t5}
    return FluxPipeline(scheduler=scheduler, vae=vae, tokenizer_2=t5_tok, **parts)


def _tiny(scenario: Scenario):
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = _tiny_tokenizers(max_length=32)
    # Each module gets its own seed so that changing one size doesn't reshuffle the others' weights.
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(**TINY["transformer"])
    torch.manual_seed(1)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(clip_tok), **TINY["clip"]))
    torch.manual_seed(2)
    t5 = T5EncoderModel(T5Config(vocab_size=max(len(t5_tok), 128), **TINY["t5"]))
    torch.manual_seed(3)
    vae = AutoencoderKL(**TINY["vae"])
    pipe = _assemble(transformer, clip, clip_tok, t5, t5_tok, vae)
    return pipe.to(device=scenario.device, dtype=torch_dtype(scenario.dtype))


def _synthetic(scenario: Scenario, progress: Progress):
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if scenario.device == "cpu":
        raise ModelSourceError(
            "the synthetic model is 17 B parameters and is built on the GPU only; on CPU use --fluxperf-model tiny"
        )
    dtype = torch_dtype(scenario.dtype)
    clip_tok, t5_tok = _tiny_tokenizers(max_length=512)
    old_dtype = torch.get_default_dtype()
    # Created directly on the GPU in the target dtype: building fp32 on the CPU first takes minutes
    # and ~70 GB of RAM. A fixed seed makes every rebuild in a session identical.
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(scenario.device):
            progress("synthetic: FLUX.1-dev transformer (11.9 B parameters, random weights)")
            transformer = FluxTransformer2DModel(**SYNTHETIC["transformer"])
            progress("synthetic: T5-XXL encoder (4.76 B parameters)")
            t5 = T5EncoderModel(T5Config(**SYNTHETIC["t5"]))
            progress("synthetic: CLIP-L text encoder and FLUX VAE")
            clip = CLIPTextModel(CLIPTextConfig(**SYNTHETIC["clip"]))
            vae = AutoencoderKL(**SYNTHETIC["vae"])
    finally:
        torch.set_default_dtype(old_dtype)
    return _assemble(transformer, clip, clip_tok, t5, t5_tok, vae).to(device=scenario.device, dtype=dtype)


def _pretrained(scenario: Scenario, progress: Progress):
    from diffusers import FluxPipeline

    source = os.path.expanduser(scenario.model)
    where = "local directory" if os.path.isdir(source) else "Hugging Face repo"
    progress(f"loading {scenario.model} ({where}{', revision ' + scenario.revision if scenario.revision else ''})")
    try:
        pipe = FluxPipeline.from_pretrained(source, revision=scenario.revision, torch_dtype=torch_dtype(scenario.dtype))
    # huggingface_hub's errors are OSErrors: HfHubHTTPError through HTTPError, LocalEntryNotFoundError a
    # FileNotFoundError.
    except OSError as exc:
        raise ModelSourceError(_load_error(exc, scenario, source)) from None
    return pipe.to(scenario.device)


def _load_error(exc: OSError, scenario: Scenario, source: str) -> str:
    """What to do when the model can't be loaded, by what went wrong."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    model, fallback = scenario.model, "or run on random weights with --fluxperf-model synthetic"
    if isinstance(exc, GatedRepoError):
        return f"{model} is gated: accept its license on huggingface.co and export HF_TOKEN (a read token), {fallback}"
    if isinstance(exc, RevisionNotFoundError):
        return f"revision {scenario.revision!r} of {model} does not exist"
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{model} is neither a local directory nor a repo you can access; check the name, or if it is gated "
            f"accept its license and export HF_TOKEN, {fallback}"
        )
    if isinstance(exc, LocalEntryNotFoundError):
        return (
            f"{model} is not in the Hugging Face cache (HF_HOME) and can't be downloaded (offline, or "
            f"HF_HUB_OFFLINE=1): download it first with `hf download {model}`, {fallback}"
        )
    if constants.HF_HUB_OFFLINE and not os.path.isdir(source):
        # diffusers reports an uncached file in offline mode as a generic OSError.
        return (
            f"{model} is not (fully) in the Hugging Face cache (HF_HOME) and HF_HUB_OFFLINE is set: download it "
            f"first with `hf download {model}` (gated: accept the license and export HF_TOKEN), {fallback}"
        )
    # Otherwise diffusers wraps hub failures in OSError; its first line is the useful part.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"could not load {model}: {first}; {fallback}"
