"""Scenario: everything that defines one benchmark run's workload, frozen and hashable."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

DTYPES = ("bfloat16", "float16", "float32")
BUILTIN_MODELS = ("tiny", "synthetic")
DEFAULT_HUB_MODEL = "black-forest-labs/FLUX.1-dev"


def shipped_prompts() -> tuple[str, ...]:
    text = resources.files("fluxperf").joinpath("prompts.txt").read_text(encoding="utf-8")
    return parse_prompts(text)


def parse_prompts(text: str) -> tuple[str, ...]:
    """One prompt per line; blank lines and lines starting with '#' are ignored."""
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class Scenario:
    model: str = "tiny"
    revision: str | None = None
    height: int = 512
    width: int = 512
    steps: int = 28
    guidance: float = 3.5
    prompts: tuple[str, ...] = field(default_factory=shipped_prompts)
    seeds: tuple[int, ...] = (0,)
    dtype: str = "bfloat16"
    device: str = "cpu"
    # Only the first N prompts (with every seed) are rendered and judged for quality; None: all of them. Rendering
    # 56 prompts for every variant was most of a night (docs/stacks.md); timed rounds still cycle through all.
    quality_prompts: int | None = None

    def __post_init__(self):
        # Library-level checks; the plugin turns these into usage errors naming the option.
        if self.height % 16 or self.width % 16 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"resolution {self.height}x{self.width} must be positive multiples of 16")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not self.prompts:
            raise ValueError("the prompt set is empty")
        if not self.seeds:
            raise ValueError("no seeds given")
        if self.quality_prompts is not None and not 1 <= self.quality_prompts <= len(self.prompts):
            raise ValueError(f"quality_prompts {self.quality_prompts} must lie in 1..{len(self.prompts)} (the prompts)")

    @property
    def items(self) -> tuple[tuple[int, int], ...]:
        """(prompt index, seed) pairs in render order: every prompt with every seed."""
        return tuple((p, s) for s in self.seeds for p in range(len(self.prompts)))

    @property
    def quality_items(self) -> tuple[tuple[int, int], ...]:
        """The items rendered and judged for quality, in render order: those of the first quality_prompts prompts."""
        n = len(self.prompts) if self.quality_prompts is None else self.quality_prompts
        return tuple((p, s) for p, s in self.items if p < n)

    @property
    def prompts_sha(self) -> str:
        return hashlib.sha256("\n".join(self.prompts).encode()).hexdigest()

    @property
    def model_slug(self) -> str:
        name = self.model.rstrip("/")
        if name.startswith(("/", ".", "~")):  # a local directory: its folder name is what people recognise
            name = name.split("/")[-1]
        slug = slugify(name)
        return f"{slug}-{self.revision[:12]}" if self.revision else slug

    @property
    def slug(self) -> str:
        """File-name key: model, shape, steps, guidance, dtype, prompt set and seeds, and the prompts judged for quality
        when not all of them (so that the baselines recorded before that option keep their names)."""
        guidance = f"{self.guidance:g}".replace(".", "p")
        seeds = hashlib.sha256(",".join(map(str, self.seeds)).encode()).hexdigest()[:6]
        judged = "" if self.quality_prompts is None else f"-q{self.quality_prompts}"
        return (
            f"{self.model_slug}-{self.height}x{self.width}-{self.steps}steps-g{guidance}-{self.dtype}"
            f"-{len(self.prompts)}p{self.prompts_sha[:8]}-{len(self.seeds)}s{seeds}{judged}"
        )

    def key(self) -> dict:
        """What a baseline must match to be comparable (besides the GPU, which is in the path)."""
        given = {k: getattr(self, k) for k in ("model", "revision", "height", "width", "steps", "guidance", "dtype")}
        # Quality aggregates are comparable only over the same images; absent when all are judged, as in every
        # baseline recorded before the option existed.
        judged = {} if self.quality_prompts is None else {"quality_prompts": self.quality_prompts}
        return {
            **given,
            "prompts_sha256": self.prompts_sha,
            "num_prompts": len(self.prompts),
            "seeds": list(self.seeds),
            **judged,
        }
