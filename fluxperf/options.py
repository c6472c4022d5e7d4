"""Every --fluxperf-* option: declared with its parser, then validated once into Settings; nothing heavy imported.

A bad value is a usage error naming the option, told before torch is imported: single values by the `type=`
parsers below (argparse's message), combinations and lookups (variants, tunables, floors, the model folder) by
resolve().
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fluxperf import torchrun, variants
from fluxperf.metrics import METRICS
from fluxperf.scenario import BUILTIN_MODELS, DEFAULT_HUB_MODEL, DTYPES, Scenario, parse_prompts, shipped_prompts

DEVICES = ("cuda", "cpu", "auto")
# A cold compile of FLUX.1-dev's transformer took 77-112 s on an H100/H200 and a cold fp8 compile with autotuning
# over 530 s (docs/results.md); an L40S is several times slower. 20 minutes leaves room for that and no more. On CPU
# a cold inductor build of the tiny pipeline took 56 s (docs/fidelity.md) and about 90 s on a shared 2-core machine
# at a load of 5 (`make bench` ran 583 s at 6-7): the CPU limit is there for a hang, not a slow build. A call: an fp8
# fake-quantized image took 36 s on an L40S at 512².
BUILD_TIMEOUT_S = {"cuda": 1200.0, "cpu": 900.0}
CALL_TIMEOUT_S = {"cuda": 600.0, "cpu": 120.0}


@dataclass(frozen=True)
class Settings:
    """Everything the plugin resolved from options; plain values only."""

    scenario: Scenario
    variants: tuple[str, ...]
    params: dict[str, Any]
    rounds: int = 5
    max_rounds: int = 40
    cache_dir: Path = Path("~/.cache/fluxperf").expanduser()
    baseline_dir: Path = Path("baselines")
    report_dir: Path = Path("reports")
    repo_dir: Path = Path(".")
    update_baselines: bool = False
    require_baseline: bool = False
    lpips_random_backbone: bool = False
    floors: dict[str, dict[str, float]] = field(default_factory=dict)
    grid_images: int = 4
    # The pytest-xdist worker (gw0, gw1, ...) this session runs in; None in a single-process session.
    worker: str | None = None
    # The command that re-records this session's baseline (rebaseline_command); shown in messages.
    rebaseline: str = "pytest -m gpu --fluxperf-update-baselines"
    # Limits on a variant's build (with its warm-up call) and on any one pipeline call; None: no limit.
    build_timeout_s: float | None = None
    call_timeout_s: float | None = None
    # Where every session's results are kept (a SQLite file or a postgresql:// URL); None: not kept.
    history: str | None = None


def _positive_multiple_of_16(text: str) -> int:
    value = _integer(text)
    if value <= 0 or value % 16:
        raise argparse.ArgumentTypeError(f"{value} must be a positive multiple of 16")
    return value


def _typed(kind, what: str):
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    return parse


_integer = _typed(int, "an integer")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be 0 (no limit) or a number of seconds")
    return value


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


def _one_of(choices):
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def addoption(parser) -> None:
    g = parser.getgroup("fluxperf", "fluxperf: FLUX.1-dev performance regression suite")
    add = lambda name, **kw: g.addoption(f"--fluxperf-{name}", dest=f"fluxperf_{name.replace('-', '_')}", **kw)
    _scenario_options(add)
    _session_options(add)


def _scenario_options(add) -> None:
    """What the workload is: the model, the variants, the images and their prompts and seeds."""
    add(
        "model",
        default=None,
        help="tiny | synthetic | Hugging Face repo id | local directory "
        f"(env FLUXPERF_MODEL; default: {DEFAULT_HUB_MODEL} on CUDA, tiny on CPU)",
    )
    add("revision", default=None, help="pin the model's revision (commit sha or tag)")
    add(
        "device",
        default="cuda",
        type=_one_of(DEVICES),
        help="cuda | cpu | auto (cuda if available, else cpu); default cuda",
    )
    add("variants", default=None, help="comma-separated variants to run (default: all registered)")
    add("height", type=_positive_multiple_of_16, default=512, help="image height, a multiple of 16 (default 512)")
    add("width", type=_positive_multiple_of_16, default=512, help="image width, a multiple of 16 (default 512)")
    add("steps", type=_at_least(1), default=28, help="denoising steps (default 28)")
    add("guidance", type=_number, default=3.5, help="guidance scale (default 3.5)")
    add("prompts", default=None, help="prompt file, one per line (default: the shipped set)")
    add("num-prompts", type=_at_least(1), default=None, help="use only the first N prompts")
    add(
        "quality-prompts",
        type=_at_least(1),
        default=None,
        help="render and judge images for quality on only the first N prompts (x seeds); timed rounds still "
        "cycle through every prompt (default: all)",
    )
    add("seeds", type=_seeds, default=(0,), help="comma-separated seeds (default 0)")
    add(
        "dtype",
        type=_one_of(DTYPES),
        default=None,
        help=f"{' | '.join(DTYPES)} (default bfloat16; float32 on CPU, where bf16 is slow)",
    )


def _session_options(add) -> None:
    """How the session measures and judges it."""
    add("rounds", type=_at_least(2), default=5, help="timed rounds per variant, each one eager and one variant image")
    add("max-rounds", type=_at_least(2), default=40, help="cap on rounds when a speed verdict is inconclusive")
    add("param", action="append", default=[], metavar="NAME=VALUE", help="variant tunable, e.g. fora_interval=3")
    add(
        "floor",
        action="append",
        default=[],
        metavar="VARIANT.METRIC=VALUE",
        help=f"quality floor per image, e.g. pruna_cache.ssim=0.8 (metrics: {', '.join(METRICS)})",
    )
    add("baseline-dir", default=None, help="baseline folder (default: baselines/ at the rootdir)")
    add("update-baselines", action="store_true", help="write or refresh baselines from this session")
    add("require-baseline", action="store_true", help="fail, instead of skip, when no baseline exists")
    _place_and_limit_options(add)


def _place_and_limit_options(add) -> None:
    """Where the session keeps what it writes and reads, and how long a build or a call may take."""
    add("report-dir", default=None, help="report folder (default: reports/ at the rootdir)")
    add(
        "cache-dir",
        default=None,
        help="reference images and build artifacts, torch.compile's included "
        "(env FLUXPERF_CACHE_DIR; default ~/.cache/fluxperf)",
    )
    add(
        "build-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="a variant's build and warm-up call may take this long, then it fails and the session goes on "
        f"(default {BUILD_TIMEOUT_S['cuda']:g} s on CUDA, sized for a cold FLUX compile on the slowest "
        f"supported card; {BUILD_TIMEOUT_S['cpu']:g} s on CPU; 0: no limit)",
    )
    add(
        "call-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=f"any one pipeline call may take this long (default {CALL_TIMEOUT_S['cuda']:g} s on CUDA, "
        f"{CALL_TIMEOUT_S['cpu']:g} s on CPU; 0: no limit)",
    )
    add(
        "history",
        default=None,
        metavar="PATH_OR_URL",
        help="the results history every session appends to and test_history_holds reads: a SQLite file or a "
        "postgresql:// URL (env FLUXPERF_HISTORY; default history.sqlite in the cache dir; off: keep none)",
    )
    add(
        "lpips-random-backbone",
        action="store_true",
        help="LPIPS with a random AlexNet, for offline smoke runs only; reports label it",
    )


def usage(option: str, problem: str) -> pytest.UsageError:
    return pytest.UsageError(f"--fluxperf-{option}: {problem}")


def _parse_param(text: str, known: dict):
    name, sep, raw = text.partition("=")
    if not sep:
        raise usage("param", f"{text!r} is not NAME=VALUE")
    if name not in known:
        raise usage("param", f"unknown tunable {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    kind = type(known[name])
    try:
        value = (raw.lower() in ("1", "true", "yes")) if kind is bool else kind(raw)
    except ValueError:
        raise usage("param", f"{name} takes a {kind.__name__}, got {raw!r}") from None
    return name, value


def _parse_floor(text: str, names: list[str]):
    target, sep, raw = text.partition("=")
    name, dot, metric = target.rpartition(".")
    if not (sep and dot) or name not in names or metric not in METRICS:
        raise usage(
            "floor",
            f"{text!r} is not VARIANT.METRIC=VALUE with a variant in {', '.join(names)} "
            f"and a metric in {', '.join(METRICS)}",
        )
    try:
        value = float(raw)
    except ValueError:
        raise usage("floor", f"{raw!r} is not a number") from None
    low, high = METRICS[metric].bounds
    if not low <= value <= high or math.isnan(value):
        raise usage("floor", f"{text!r}: a {metric} floor must lie in [{low:g}, {high:g}]")
    return name, metric, value


def check_model_folder(model: str) -> None:
    """A local folder that isn't there or isn't a diffusers pipeline is told now, not after minutes of set-up.
    A hub id is only known to be missing when it is loaded (fluxperf.models)."""
    if model in BUILTIN_MODELS:
        return
    path = Path(os.path.expanduser(model))
    fix = "give a folder written by save_pretrained or `hf download`, a Hugging Face repo id, tiny or synthetic"
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise usage("model", f"{model} is a folder without model_index.json, not a diffusers pipeline: {fix}")
    elif model.startswith(("/", ".", "~")) or path.exists():
        raise usage("model", f"{model}: no such folder; {fix}")


def _device(config, opt, worker: str | None) -> str:
    device = opt("device")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torchrun.launched():
        if config.getoption("numprocesses", None) or worker is not None:
            raise pytest.UsageError(
                "torchrun and pytest-xdist don't mix: under torchrun rank 0 runs the tests and "
                "the other ranks serve context_parallel; drop -n"
            )
        device = torchrun.device_for(device)
    return device


def _prompts(opt) -> tuple[str, ...]:
    if opt("prompts"):
        try:
            prompts = parse_prompts(Path(opt("prompts")).read_text(encoding="utf-8"))
        except OSError as exc:
            raise usage("prompts", f"can't read {opt('prompts')}: {exc.strerror}") from None
    else:
        prompts = shipped_prompts()
    if opt("num_prompts") is not None:
        prompts = prompts[: opt("num_prompts")]
    if not prompts:
        raise usage("prompts", "the prompt file holds no prompts")
    return prompts


def _quality_prompts(opt, prompts: tuple[str, ...]) -> int | None:
    n = opt("quality_prompts")
    if n is not None and n > len(prompts):
        raise usage("quality-prompts", f"{n} is more than the session's {len(prompts)} prompts")
    # All of them is the default: the same images judged, so the same scenario key and baseline file.
    return None if n == len(prompts) else n


def _variants(opt) -> tuple[list[str], list[str]]:
    """(every registered variant, the chosen ones with eager first)."""
    try:
        available = variants.names()
    except variants.RegistryError as exc:
        raise usage("variants", str(exc)) from None
    chosen = [v.strip() for v in opt("variants").split(",") if v.strip()] if opt("variants") else available
    for name in chosen:
        if name not in available:
            raise usage("variants", f"unknown variant {name!r}; choose from: {', '.join(available)}")
    # Eager is the reference every other variant is timed and judged against.
    return available, [n for n in available if n in chosen or n == "eager"]


def _params(opt, chosen: list[str]) -> dict:
    params = dict(_parse_param(p, variants.all_params()) for p in opt("param"))
    if "context_parallel" in chosen:
        try:
            torchrun.check_params({**variants.get("context_parallel").params, **params})
        except ValueError as exc:
            raise usage("param", str(exc)) from None
    return params


def _floors(opt, available: list[str]) -> dict[str, dict[str, float]]:
    floors: dict = {}
    for text in opt("floor"):
        name, metric, value = _parse_floor(text, available)
        floors.setdefault(name, {})[metric] = value
    return floors


def resolve(config, worker: str | None = None) -> Settings:
    """Read and validate every option once. Only device=auto imports torch (to ask for CUDA)."""
    opt = lambda name: config.getoption(f"fluxperf_{name}")
    device = _device(config, opt, worker)
    model = opt("model") or os.environ.get("FLUXPERF_MODEL") or ("tiny" if device == "cpu" else DEFAULT_HUB_MODEL)
    check_model_folder(model)
    dtype = opt("dtype") or ("float32" if device == "cpu" else "bfloat16")
    if opt("max_rounds") < opt("rounds"):
        raise usage("max-rounds", f"{opt('max_rounds')} must be at least --fluxperf-rounds ({opt('rounds')})")
    prompts = _prompts(opt)
    quality_prompts = _quality_prompts(opt, prompts)
    available, chosen = _variants(opt)
    params = _params(opt, chosen)
    floors = _floors(opt, available)
    root = Path(config.rootpath)
    cache = cache_dir(opt("cache_dir"))
    as_given = lambda *names: {name: opt(name) for name in names}
    scenario = Scenario(
        model=model,
        prompts=prompts,
        dtype=dtype,
        device=device,
        quality_prompts=quality_prompts,
        **as_given("revision", "height", "width", "steps", "guidance", "seeds"),
    )
    return Settings(
        scenario=scenario,
        variants=tuple(chosen),
        params=params,
        cache_dir=Path(cache).expanduser(),
        baseline_dir=Path(opt("baseline_dir") or root / "baselines"),
        report_dir=Path(opt("report_dir") or root / "reports"),
        repo_dir=root,
        floors=floors,
        worker=worker,
        rebaseline=rebaseline_command(opt, model, dtype),
        build_timeout_s=_limit(opt("build_timeout"), BUILD_TIMEOUT_S, device),
        call_timeout_s=_limit(opt("call_timeout"), CALL_TIMEOUT_S, device),
        history=history_location(opt("history"), Path(cache).expanduser()),
        **as_given("rounds", "max_rounds", "update_baselines", "require_baseline", "lpips_random_backbone"),
    )


def cache_dir(given: str | None = None) -> str:
    """--fluxperf-cache-dir, else FLUXPERF_CACHE_DIR, else ~/.cache/fluxperf (not expanded)."""
    return given or os.environ.get("FLUXPERF_CACHE_DIR") or "~/.cache/fluxperf"


def history_location(given: str | None, cache: Path) -> str | None:
    """--fluxperf-history, else FLUXPERF_HISTORY, else history.sqlite in the cache dir; None where it is off."""
    where = given or os.environ.get("FLUXPERF_HISTORY") or str(cache / "history.sqlite")
    return None if where == "off" else where


def _limit(given: float | None, defaults: dict, device: str) -> float | None:
    value = defaults["cpu" if device == "cpu" else "cuda"] if given is None else given
    return value or None


def rebaseline_command(opt, model: str, dtype: str) -> str:
    """The command that records the baseline this session reads: every option that shapes the scenario, the
    baseline's key or its path, as this session was given them (paths made absolute)."""
    parts = ["pytest -m gpu --fluxperf-update-baselines", f"--fluxperf-model={model}"]
    if opt("revision"):
        parts.append(f"--fluxperf-revision={opt('revision')}")
    if opt("device") != "cuda":
        parts.append(f"--fluxperf-device={opt('device')}")
    parts += [
        f"--fluxperf-height={opt('height')}",
        f"--fluxperf-width={opt('width')}",
        f"--fluxperf-steps={opt('steps')}",
        f"--fluxperf-guidance={opt('guidance'):g}",
        f"--fluxperf-seeds={','.join(map(str, opt('seeds')))}",
        f"--fluxperf-dtype={dtype}",
    ]
    if opt("prompts"):
        parts.append(f"--fluxperf-prompts={Path(opt('prompts')).resolve()}")
    if opt("num_prompts") is not None:
        parts.append(f"--fluxperf-num-prompts={opt('num_prompts')}")
    if opt("quality_prompts") is not None:
        parts.append(f"--fluxperf-quality-prompts={opt('quality_prompts')}")
    if opt("baseline_dir"):
        parts.append(f"--fluxperf-baseline-dir={Path(opt('baseline_dir')).resolve()}")
    if opt("variants"):
        parts.append(f"--fluxperf-variants={opt('variants')}")
    parts += [f"--fluxperf-param={p}" for p in opt("param")]
    if opt("lpips_random_backbone"):
        parts.append("--fluxperf-lpips-random-backbone")
    return " ".join(parts)
