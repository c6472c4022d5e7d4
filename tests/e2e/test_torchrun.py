"""context_parallel end to end: the real suite under torchrun on CPU over gloo, and without torchrun."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.sessions import REPO, SMALL

pytest_plugins = ["pytester"]

PARAMS = {"cp_mode": "ulysses", "cp_degree": 2}


def torchrun(tmp_path, *args, nproc=2):
    """The real suite under torchrun on the tiny model on CPU; returns the process and results.json."""
    # Not this process's torchrun or pytest-xdist variables: under `pytest -n`, pytest-benchmark in the inner session
    # would read PYTEST_XDIST_WORKER, turn itself off, and test_benchmark would make no calls.
    ranks = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in ranks and not k.startswith("PYTEST_XDIST")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    # SMALL's scenario, with 2 rounds and no more: every call is one the follower joins, counted below.
    runner = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--standalone"]
    places = [
        f"--fluxperf-{d}-dir={p}"
        for d, p in (("report", tmp_path), ("cache", tmp_path / "cache"), ("baseline", tmp_path / "baselines"))
    ]
    cmd = [
        *runner,
        "-m",
        "pytest",
        "fluxperf/suite",
        *SMALL,
        "--fluxperf-rounds=2",
        "--fluxperf-max-rounds=2",
        *places,
        "-rs",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    results = tmp_path / "results.json"
    return proc, json.loads(results.read_text()) if results.exists() else None


def test_context_parallel_under_torchrun_matches_eager(tmp_path):
    proc, results = torchrun(tmp_path, "--fluxperf-variants=context_parallel")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    run = results["variants"]["context_parallel"]
    assert run["status"] == "measured" and run["params"] == PARAMS
    # The attention of each image was split over two processes: rank 1 made every call with rank 0
    # (a rank that skipped one would leave the other waiting in its collectives).
    calls = int(re.search(r"\[fluxperf rank 1\] done: (\d+) calls made", out).group(1))
    # warm-up call, warm-up rounds, timed rounds, the counted call (roofline), quality images, benchmark
    assert calls == 1 + 2 + 2 + 1 + 2 + 3
    # Both ranks' transformers were split, as diffusers itself reports it.
    for me in ("[fluxperf] context_parallel", "[fluxperf rank 1] context_parallel"):
        assert f"{me}: attention split: ulysses_degree=2 ring_degree=1" in out, me
    # Ulysses attention computes the same attention, head by head: in float32 the image is eager's.
    assert run["quality"]["scores"]["psnr_db"]["worst"] > 60
    assert run["quality"]["scores"]["ssim"]["worst"] > 0.9999
    # The split transformer is the harness's copy: eager keeps its own modules, and the two alternate round by round.
    timings = run["timings"]
    assert timings["design"] == "paired" and len(timings["eager_samples_s"]) == len(timings["samples_s"]) >= 2


def test_without_torchrun_context_parallel_skips_before_timing_anything(suite, pytester):
    result = suite("--fluxperf-variants=context_parallel", "-rs", inprocess=True)
    result.assert_outcomes(passed=3, skipped=14)  # eager runs; its stack, memory and history checks and every
    # context_parallel test skip (11 of them, test_fidelity_holds and test_history_holds included)
    assert "run torchrun --nproc-per-node 2 -m pytest -m gpu" in result.stdout.str()
    run = json.loads((pytester.path / "reports" / "results.json").read_text())["variants"]["context_parallel"]
    assert run["status"] == "skipped" and run["timings"]["eager_samples_s"] == []


def test_torchrun_and_xdist_together_are_a_usage_error(suite, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = suite("-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "torchrun and pytest-xdist don't mix" in result.stderr.str()


def test_a_bad_cp_param_is_a_usage_error(suite):
    result = suite("--fluxperf-variants=context_parallel", "--fluxperf-param=cp_mode=rings", inprocess=True)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--fluxperf-param: cp_mode must be one of ulysses, ring, got 'rings'" in result.stderr.str()
