"""The plugin's options, through pytester: bad values are usage errors naming the option; gpu tests skip without CUDA.

The plugin is found through the installed entry point (fluxperf is pip-installed -e), as a user's pytest finds it.
Most runs are in-process (milliseconds each); the end-to-end ones run in a fresh interpreter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fluxperf import options, variants
from fluxperf.scenario import DEFAULT_HUB_MODEL

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
PERF = REPO / "fluxperf" / "suite"


def _choices() -> str:
    return ", ".join(variants.names())


BAD_OPTIONS = [
    (["--fluxperf-height=500"], "--fluxperf-height", "500 must be a positive multiple of 16"),
    (["--fluxperf-width=0"], "--fluxperf-width", "0 must be a positive multiple of 16"),
    (["--fluxperf-steps=0"], "--fluxperf-steps", "0 must be at least 1"),
    (["--fluxperf-variants=eager,nope"], "--fluxperf-variants", "unknown variant 'nope'; choose from: {choices}"),
    (["--fluxperf-param=calib_size"], "--fluxperf-param", "'calib_size' is not NAME=VALUE"),
    (["--fluxperf-param=nope=3"], "--fluxperf-param", "unknown tunable 'nope'; known: {known}"),
    (["--fluxperf-param=calib_size=big"], "--fluxperf-param", "calib_size takes a int, got 'big'"),
    (["--fluxperf-floor=compile.ssim"], "--fluxperf-floor", "'compile.ssim' is not VARIANT.METRIC=VALUE"),
    (["--fluxperf-floor=nope.ssim=0.9"], "--fluxperf-floor", "'nope.ssim=0.9' is not VARIANT.METRIC=VALUE"),
    (["--fluxperf-floor=compile.fid=0.9"], "--fluxperf-floor", "'compile.fid=0.9' is not VARIANT.METRIC=VALUE"),
    (["--fluxperf-floor=compile.ssim=high"], "--fluxperf-floor", "'high' is not a number"),
    (["--fluxperf-floor=compile.ssim=2"], "--fluxperf-floor", "'compile.ssim=2': a ssim floor must lie in [-1, 1]"),
    (
        ["--fluxperf-floor=compile.lpips=-0.1"],
        "--fluxperf-floor",
        "'compile.lpips=-0.1': a lpips floor must lie in [0, inf]",
    ),
    (
        ["--fluxperf-floor=compile.psnr_db=nan"],
        "--fluxperf-floor",
        "'compile.psnr_db=nan': a psnr_db floor must lie in [0, inf]",
    ),
    (["--fluxperf-guidance=nan"], "--fluxperf-guidance", "'nan' is not a finite number"),
    (["--fluxperf-guidance=inf"], "--fluxperf-guidance", "'inf' is not a finite number"),
    (["--fluxperf-build-timeout=-5"], "--fluxperf-build-timeout", "-5 must be 0 (no limit) or a number of seconds"),
    (["--fluxperf-call-timeout=soon"], "--fluxperf-call-timeout", "'soon' is not a number"),
    (["--fluxperf-dtype=float64"], "--fluxperf-dtype", "'float64' is not one of bfloat16, float16, float32"),
    (["--fluxperf-seeds=1,x"], "--fluxperf-seeds", "'1,x' is not a comma-separated list of integers"),
    (["--fluxperf-seeds=,"], "--fluxperf-seeds", "give at least one seed"),
    (["--fluxperf-device=tpu"], "--fluxperf-device", "'tpu' is not one of cuda, cpu, auto"),
    (["--fluxperf-rounds=1"], "--fluxperf-rounds", "1 must be at least 2"),
    (
        ["--fluxperf-rounds=8", "--fluxperf-max-rounds=6"],
        "--fluxperf-max-rounds",
        "6 must be at least --fluxperf-rounds (8)",
    ),
    (["--fluxperf-height=tall"], "--fluxperf-height", "'tall' is not an integer"),
    (["--fluxperf-guidance=strong"], "--fluxperf-guidance", "'strong' is not a number"),
    (["--fluxperf-model=./no/such/folder"], "--fluxperf-model", "./no/such/folder: no such folder"),
    (["--fluxperf-quality-prompts=0"], "--fluxperf-quality-prompts", "0 must be at least 1"),
    (
        ["--fluxperf-num-prompts=3", "--fluxperf-quality-prompts=4"],
        "--fluxperf-quality-prompts",
        "4 is more than the session's 3 prompts",
    ),
]


@pytest.mark.parametrize("args, option, problem", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_a_bad_option_value_is_a_usage_error_naming_the_option(pytester, args, option, problem):
    result = pytester.runpytest_inprocess("--fluxperf-device=cpu", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    problem = problem.format(choices=_choices(), known=", ".join(sorted(variants.all_params())))
    # Single values are refused by the option's parser (argparse: "argument --fluxperf-x: ..."), combinations
    # and lookups by fluxperf ("ERROR: --fluxperf-x: ..."): either way the option and the problem, exit code 4.
    assert f"{option}: {problem}" in result.stderr.str(), result.stderr.str()


def test_a_bad_option_is_a_usage_error_in_a_fresh_interpreter_through_the_entry_point(pytester):
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fluxperf-device=cpu", "--fluxperf-steps=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --fluxperf-steps: 0 must be at least 1"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip on a machine without CUDA")
def test_gpu_tests_skip_without_cuda_and_say_how_to_run_on_cpu(pytester):
    for path in sorted(PERF.glob("test_*.py")):
        pytester.makepyfile(**{path.stem: path.read_text(encoding="utf-8")})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "gpu", "-rs")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) > 0 and set(outcomes) <= {"skipped", "deselected", "warnings"}, outcomes
    result.stdout.fnmatch_lines(["SKIPPED *no CUDA device; *--fluxperf-device cpu*"])


# ----- the resolved settings ------------------------------------------------------------------------------------


@pytest.fixture
def settings(pytester, monkeypatch):
    monkeypatch.delenv("FLUXPERF_MODEL", raising=False)
    monkeypatch.delenv("FLUXPERF_CACHE_DIR", raising=False)
    return lambda *args: options.resolve(pytester.parseconfig(*args))


def test_the_model_comes_from_the_fluxperf_model_environment_variable(settings, monkeypatch):
    monkeypatch.setenv("FLUXPERF_MODEL", "someone/flux-finetune")
    assert settings("--fluxperf-device=cpu").scenario.model == "someone/flux-finetune"


def test_the_model_option_wins_over_the_environment_variable(settings, monkeypatch):
    monkeypatch.setenv("FLUXPERF_MODEL", "someone/flux-finetune")
    assert settings("--fluxperf-device=cpu", "--fluxperf-model=tiny").scenario.model == "tiny"


def test_without_option_or_environment_the_model_is_tiny_on_cpu_and_flux_dev_on_cuda(settings):
    cpu, cuda = settings("--fluxperf-device=cpu"), settings("--fluxperf-device=cuda")
    assert (cpu.scenario.model, cpu.scenario.dtype) == ("tiny", "float32")
    assert (cuda.scenario.model, cuda.scenario.dtype) == (DEFAULT_HUB_MODEL, "bfloat16")


def test_eager_is_always_run_and_variants_keep_registry_order(settings):
    names = variants.names()
    last = names[-1]
    chosen = settings("--fluxperf-device=cpu", f"--fluxperf-variants={last},compile").variants
    assert chosen == ("eager", "compile", last)


def test_good_params_floors_and_seeds_are_parsed(settings):
    s = settings(
        "--fluxperf-device=cpu",
        "--fluxperf-param=calib_size=4",
        "--fluxperf-floor=compile.ssim=0.9",
        "--fluxperf-floor=compile.psnr_db=30",
        "--fluxperf-seeds=3, 1",
        "--fluxperf-num-prompts=2",
    )
    assert s.params == {"calib_size": 4}
    assert s.floors == {"compile": {"ssim": 0.9, "psnr_db": 30.0}}
    assert s.scenario.seeds == (3, 1) and len(s.scenario.prompts) == 2


def test_quality_prompts_change_the_baseline_key_and_file_only_when_fewer_than_all_are_judged(settings):
    shipped = next((REPO / "baselines" / "nvidia-h200").glob("*.json"))
    args = ("--fluxperf-device=cuda", "--fluxperf-model=synthetic", "--fluxperf-num-prompts=4")
    unset = settings(*args)
    # A baseline recorded before the option existed is still found under its name, and its key still matches.
    assert unset.scenario.slug == shipped.stem
    assert {"gpu": "NVIDIA H200", **unset.scenario.key()} == json.loads(shipped.read_text())["key"]
    assert "--fluxperf-quality-prompts" not in unset.rebaseline
    # All 4 of 4 judges the same images as the default: the same baseline.
    every = settings(*args, "--fluxperf-quality-prompts=4").scenario
    assert (every.slug, every.key()) == (unset.scenario.slug, unset.scenario.key())
    two = settings(*args, "--fluxperf-quality-prompts=2")
    assert two.scenario.slug != unset.scenario.slug
    assert two.scenario.key() == {**unset.scenario.key(), "quality_prompts": 2}
    assert two.scenario.items == unset.scenario.items and two.scenario.quality_items == ((0, 0), (1, 0))
    assert "--fluxperf-num-prompts=4 --fluxperf-quality-prompts=2" in two.rebaseline


def test_time_limits_default_by_device_and_zero_turns_them_off(settings):
    cpu, cuda = settings("--fluxperf-device=cpu"), settings("--fluxperf-device=cuda")
    assert (cpu.build_timeout_s, cpu.call_timeout_s) == (options.BUILD_TIMEOUT_S["cpu"], options.CALL_TIMEOUT_S["cpu"])
    assert (cuda.build_timeout_s, cuda.call_timeout_s) == (
        options.BUILD_TIMEOUT_S["cuda"],
        options.CALL_TIMEOUT_S["cuda"],
    )
    off = settings("--fluxperf-device=cpu", "--fluxperf-build-timeout=0", "--fluxperf-call-timeout=2.5")
    assert (off.build_timeout_s, off.call_timeout_s) == (None, 2.5)


def test_the_readme_states_the_time_limits_defaults():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for option, default in (("build", options.BUILD_TIMEOUT_S), ("call", options.CALL_TIMEOUT_S)):
        row = f"| `--fluxperf-{option}-timeout` | {default['cuda']:g} s on CUDA, {default['cpu']:g} s on CPU |"
        assert row in readme, row
