"""The plugin stays out of the way: nothing heavy in runs that don't use it, bad input told at once, a model that
can't be loaded stops the session, a header up front, and variants from the user's own project."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest

from tests.sessions import PERF, RECORDED, REPO, SMALL

pytest_plugins = ["pytester"]

UNRELATED = "def test_one():\n    assert 1 + 1 == 2\n"
PROBE_IMPORTS = """
import sys
def pytest_sessionfinish(session):
    heavy = sorted(m for m in ("torch", "diffusers", "numpy", "scipy", "transformers") if m in sys.modules)
    open("imported.txt", "w").write(",".join(heavy))
"""


def _timed(pytester, *args) -> tuple[float, pytest.RunResult]:
    """The CPU seconds (user and system) a pytest run in a fresh interpreter took: what fluxperf adds to it, such as
    importing torch (about 2 s), and not the wall clock, which on a shared machine measures the neighbours too."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result


# ----- nothing heavy until it is used ------------------------------------------------------------------------------


def test_an_unrelated_project_imports_nothing_heavy_and_pays_under_half_a_cpu_second(pytester):
    pytester.makepyfile(test_unrelated=UNRELATED)
    pytester.makeconftest(PROBE_IMPORTS)
    with_plugin, without = [], []
    for _ in range(3):  # best of three: this is a shared 2-core machine
        seconds, result = _timed(pytester, "-p", "no:fluxperf.plugin")
        result.assert_outcomes(passed=1)
        without.append(seconds)
        # Other installed plugins may import some of these (jaxtyping's imports numpy): fluxperf adds none.
        baseline = set(filter(None, (pytester.path / "imported.txt").read_text().split(",")))
        seconds, result = _timed(pytester)
        result.assert_outcomes(passed=1)
        with_plugin.append(seconds)
        heavy = set(filter(None, (pytester.path / "imported.txt").read_text().split(",")))
        assert heavy == baseline and "torch" not in heavy, f"with fluxperf: {heavy}; without: {baseline}"
    assert min(with_plugin) - min(without) < 0.5, (with_plugin, without)


def test_importing_the_plugin_imports_no_torch():
    code = (
        "import sys, fluxperf.plugin, fluxperf.variants as v; v.names(); "
        "print(sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_xdist_in_a_run_that_deselects_the_suite_is_xdist_s_own(pytester):
    pytester.makepyfile(
        test_a=UNRELATED,
        test_b=UNRELATED.replace("one", "two"),
        **{path.stem: path.read_text() for path in PERF.glob("test_*.py")},
    )
    # -m "not gpu" deselects the suite: --dist loadfile, which the suite itself refuses, is not fluxperf's business.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "not gpu", "-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize(
    "expr, selects",
    [
        ("gpu", True),
        ("gpu and not slow", True),
        ("not gpu", False),
        ("slow", False),
        ("", False),
        ("gpu or slow", True),
    ],
)
def test_only_a_marker_expression_that_selects_the_gpu_suite_lets_fluxperf_schedule(pytester, expr, selects):
    from fluxperf import xdist

    config = pytester.parseconfig(*(["-m", expr] if expr else []))
    assert xdist.selects_gpu_suite(config) is selects


# ----- bad input, told at once -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fluxperf-height=500"], "--fluxperf-height: 500 must be a positive multiple of 16"),
        (["--fluxperf-dtype=int8"], "--fluxperf-dtype: 'int8' is not one of bfloat16, float16, float32"),
        (["--fluxperf-variants=nope"], "--fluxperf-variants: unknown variant 'nope'"),
        (["--fluxperf-model=/no/such/flux"], "--fluxperf-model: /no/such/flux: no such folder"),
        (
            ["--fluxperf-num-prompts=3", "--fluxperf-quality-prompts=4"],
            "--fluxperf-quality-prompts: 4 is more than the session's 3 prompts",
        ),
    ],
)
def test_a_bad_option_value_is_told_within_3_cpu_seconds(pytester, args, message):
    pytester.makepyfile(**{path.stem: path.read_text() for path in PERF.glob("test_*.py")})
    seconds, result = _timed(pytester, "-m", "gpu", "--fluxperf-device=cpu", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str(), result.stderr.str()
    assert seconds < 3, f"{seconds:.1f} s to refuse {args}"


def test_a_folder_that_is_not_a_pipeline_is_refused_at_once(pytester):
    (pytester.path / "not-a-model").mkdir()
    (pytester.path / "not-a-model" / "weights.bin").write_bytes(b"")
    seconds, result = _timed(pytester, "-m", "gpu", "--fluxperf-device=cpu", "--fluxperf-model=./not-a-model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "./not-a-model is a folder without model_index.json, not a diffusers pipeline" in result.stderr.str()
    assert seconds < 3


def test_a_hub_model_that_can_t_be_loaded_stops_the_session_at_the_first_attempt(suite, pytester):
    seconds_start = time.perf_counter()
    # In a fresh interpreter: huggingface_hub reads HF_HUB_OFFLINE when it is first imported.
    result = suite("--fluxperf-model=some-org/does-not-exist", "--fluxperf-variants=compile")
    seconds = time.perf_counter() - seconds_start
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    out = result.stdout.str() + result.stderr.str()
    line = "some-org/does-not-exist is not (fully) in the Hugging Face cache"
    assert out.count(line) == 1, out  # one line, tried once: compile is never built
    assert "hf download some-org/does-not-exist" in out
    report = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert report["variants"]["eager"]["status"] == "failed" and "compile" not in report["variants"]
    assert seconds < 60, seconds


def test_a_pipeline_saved_with_save_pretrained_runs_through_the_real_model_path(suite, pytester):
    from fluxperf.models import build_pipeline
    from fluxperf.scenario import Scenario

    folder = pytester.path / "my-flux"
    build_pipeline(Scenario(model="tiny", device="cpu", dtype="float32")).save_pretrained(folder)
    result = suite(f"--fluxperf-model={folder}", "--fluxperf-variants=eager", "-rs", inprocess=True)
    result.assert_outcomes(passed=3, skipped=3)  # eager's benchmark, steps, determinism; no baseline or history yet
    assert (
        "no baseline for eager in" in result.stdout.str() and "; record one with: pytest -m gpu" in result.stdout.str()
    )
    report = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert report["model_source"] == str(folder) and report["variants"]["eager"]["status"] == "measured"
    assert "real model: " in report["model_note"]


# ----- a header up front --------------------------------------------------------------------------------------------


def test_a_fluxperf_session_starts_with_a_header_naming_model_device_scenario_baseline_variants_and_cache(
    suite, pytester
):
    result = suite("--fluxperf-variants=twin", "--collect-only", inprocess=True)
    out = result.stdout.str()
    base = pytester.path / "baselines" / "cpu"
    for line in (
        "fluxperf model: tiny — TINY toy model",
        "fluxperf device: cpu; GPU: none (CPU)",
        "fluxperf scenario: tiny-64x64-4steps",
        f"fluxperf baseline: none ({base}",
        "fluxperf variants: eager, twin",
        f"fluxperf cache: {pytester.path / 'cache'}",
    ):
        assert line in out, line


def test_an_unrelated_run_has_no_fluxperf_header(pytester):
    pytester.makepyfile(test_unrelated=UNRELATED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert "fluxperf model:" not in result.stdout.str() and "fluxperf summary" not in result.stdout.str()


# ----- variants from the user's own project --------------------------------------------------------------------------

README = (REPO / "README.md").read_text(encoding="utf-8")


def _readme_example(title: str) -> str:
    """The first ```python block after `title` in the README: the example the README promises works."""
    start = README.index(title)
    block = README.index("```python", start) + len("```python")
    return README[block : README.index("```", block)]


def test_the_readme_conftest_variant_is_timed_and_judged_from_the_user_s_project(
    pytester, monkeypatch, in_this_process
):
    """The README's complete example: a project's conftest.py registers a variant, and the suite that ships with
    fluxperf runs from that project with --pyargs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester.makeconftest(_readme_example("### From your own project"))
    common = [a for a in SMALL if a != "-m" and a != "gpu"]
    paths = [
        f"--fluxperf-cache-dir={pytester.path / 'cache'}",
        f"--fluxperf-baseline-dir={pytester.path / 'b'}",
        f"--fluxperf-report-dir={pytester.path / 'r'}",
        "--fluxperf-variants=fused_qkv",
    ]
    # In this process; each session imports the project's conftest.py afresh, as a fresh interpreter would.
    run = lambda *args: in_this_process("-m", "gpu", "--pyargs", "fluxperf.suite", *common, *paths, *args)
    run("--fluxperf-update-baselines").assert_outcomes(**RECORDED)
    judged = run("--fluxperf-require-baseline", "-v")
    out = judged.stdout.str()
    for test in ("test_speedup_holds", "test_stack_speed_holds", "test_ssim_matches_eager"):
        assert f"{test}[fused_qkv]" in out and f"{test}[fused_qkv] SKIPPED" not in out, test
    results = json.loads((pytester.path / "r" / "results.json").read_text())
    assert results["variants"]["fused_qkv"]["status"] == "measured"
    assert {"speedup", "stack", "ssim"} <= results["variants"]["fused_qkv"]["verdicts"].keys()


def test_an_installed_package_registers_variants_through_the_entry_point_group(pytester, monkeypatch):
    package = pytester.path / "teamvariants"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fast.py").write_text(_readme_example("### From your own project"))
    dist = pytester.path / "teamvariants-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: teamvariants\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fluxperf.variants]\nfused_qkv = teamvariants.fast\n")
    monkeypatch.setenv("PYTHONPATH", f"{pytester.path}:{REPO}")
    code = "from fluxperf import variants; print(variants.get('fused_qkv').lossless, 'fused_qkv' in variants.names())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=pytester.path, check=True)
    assert out.stdout.split() == ["True", "True"], out

    (package / "fast.py").write_text("raise RuntimeError('broken on purpose')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fluxperf-device=cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "the fluxperf.variants entry point fused_qkv = teamvariants.fast failed to import: RuntimeError: broken "
        "on purpose"
    ) in result.stderr.str()
