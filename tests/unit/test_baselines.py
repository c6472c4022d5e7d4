"""Baseline files: parsing and validation from small fixtures (version 2, read through its migration, and version 3),
key checks, atomic writes, updates and merging."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fluxperf import baselines
from fluxperf.baselines import BaselineError

DATA = Path(__file__).resolve().parents[1] / "data"
VALID = DATA / "baseline_valid.json"
RELATIVE = Path("nvidia-h100-80gb-hbm3") / "flux-512x512.json"


def valid() -> dict:
    return json.loads(VALID.read_text())


# ----- parsing --------------------------------------------------------------------------------------------------


def test_a_valid_file_loads_with_every_variant():
    data = baselines.load(VALID)  # a version-2 file, read in today's layout
    assert set(data["variants"]) == {"eager", "compile"}
    assert data["variants"]["compile"]["timings"]["speedup"] == 1.31


def test_a_missing_file_loads_as_none(tmp_path):
    assert baselines.load(tmp_path / "absent.json") is None


@pytest.mark.parametrize(
    "name, field, problem",
    [
        ("baseline_malformed.json", "(file)", "not valid JSON"),
        ("baseline_missing_field.json", "variants.compile.latency_s", "missing"),
        ("baseline_nan.json", "variants.compile.speedup", "must be finite"),
        ("baseline_negative.json", "variants.compile.peak_mem_gb", "must be non-negative"),
        ("baseline_unknown_schema.json", "schema_version", "unknown schema version 99"),
    ],
)
def test_a_broken_file_raises_baseline_error_naming_the_file_and_the_field(name, field, problem):
    path = DATA / name
    with pytest.raises(BaselineError) as info:
        baselines.load(path)
    assert info.value.path == path and info.value.field == field
    message = str(info.value)
    assert str(path) in message and f"field '{field}'" in message and problem in message, message


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["variants"]["compile"].__setitem__("speedup", 0), "variants.compile.speedup"),
        (lambda d: d["variants"]["compile"].__setitem__("eager_latency_s", True), "variants.compile.eager_latency_s"),
        (lambda d: d["variants"]["compile"]["tolerance"].pop("lpips"), "variants.compile.tolerance.lpips"),
        (lambda d: d["variants"]["compile"]["tolerance"].__setitem__("speed", 5), "variants.compile.tolerance.speed"),
        (
            lambda d: d["variants"]["compile"]["quality"].__setitem__("ssim_mean", "high"),
            "variants.compile.quality.ssim_mean",
        ),
        (lambda d: d.pop("variants"), "variants"),
        (lambda d: d["variants"]["compile"].__setitem__("samples_s", [0.9]), "variants.compile.samples_s"),
        (
            lambda d: d["variants"]["compile"]["eager_samples_s"].__setitem__(1, -2.0),
            "variants.compile.eager_samples_s[1]",
        ),
        (lambda d: d["variants"]["compile"]["probe"].pop("launch_s"), "variants.compile.probe.launch_s"),
        (lambda d: d["variants"]["compile"].pop("eager_probe"), "variants.compile.eager_probe"),
        (lambda d: d["variants"]["compile"].__setitem__("bound", "cpu"), "variants.compile.bound"),
        # A mistyped tolerance (speedup for speed) is refused, not kept doing nothing.
        (
            lambda d: d["variants"]["compile"]["tolerance"].__setitem__("speedup", 0.07),
            "variants.compile.tolerance.speedup",
        ),
        (
            lambda d: d["variants"]["compile"].__setitem__("contention", {"gpu_busy": [0.1]}),
            "variants.compile.contention.gpu_busy",
        ),
    ],
)
def test_other_invalid_values_name_their_field(tmp_path, mutate, field):
    data = valid()
    mutate(data)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError) as info:
        baselines.load(path)
    assert info.value.field == field, str(info.value)


def test_null_quality_means_not_measured_and_is_valid():
    data = valid()
    assert data["variants"]["compile"]["quality"]["psnr_db_mean"] is None
    baselines.validate(data, VALID)


# ----- comparison keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, other", [("gpu", "NVIDIA A100-SXM4-80GB"), ("steps", 4), ("seeds", [0, 1])])
def test_a_baseline_recorded_for_another_gpu_or_scenario_is_refused(field, other):
    data = valid()
    expected = {**data["key"], field: other}
    with pytest.raises(BaselineError) as info:
        baselines.check_key(data, expected, VALID)
    assert info.value.field == f"key.{field}" and "another GPU, model or scenario" in str(info.value)


def test_a_matching_key_is_accepted():
    data = valid()
    baselines.check_key(data, dict(data["key"]), VALID)


# ----- writing ------------------------------------------------------------------------------------------------


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt("killed mid-write")


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch, target):
    path = tmp_path / "gpu" / "b.json"
    path.parent.mkdir()
    path.write_text("old contents\n")
    monkeypatch.setattr(baselines.os, target, _interrupt)
    with pytest.raises(KeyboardInterrupt):
        baselines.write_atomic(path, "new contents\n")
    assert path.read_text() == "old contents\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]


def test_a_write_replaces_the_file_and_creates_its_folder(tmp_path):
    path = tmp_path / "new" / "gpu" / "b.json"
    baselines.write_atomic(path, "hello\n")
    assert path.read_text() == "hello\n" and sorted(p.name for p in path.parent.iterdir()) == ["b.json"]


def test_dumps_sorts_keys_and_refuses_nan():
    text = baselines.dumps({"b": 1, "a": {"d": 2, "c": 3}})
    assert list(json.loads(text)) == ["a", "b"] and text.index('"c"') < text.index('"d"') and text.endswith("\n")
    with pytest.raises(ValueError):
        baselines.dumps({"speedup": math.nan})


def test_an_update_keeps_hand_edited_tolerances_and_variants_not_measured_this_session():
    old = baselines.validate(valid(), VALID)
    old["variants"]["compile"]["tolerance"]["speed"] = 0.08  # edited by hand
    old["variants"]["trt_fp8"] = copy.deepcopy(old["variants"]["compile"])  # not measured this session
    timings = old["variants"]["compile"]["timings"]
    samples = {k: timings[k] for k in ("samples_s", "eager_samples_s", "probe", "eager_probe")}
    measured = {
        "compile": {"timings": {"speedup": 1.40, "latency_s": 0.85, "eager_latency_s": 1.19, **samples}},
        "new_variant": {"timings": {"speedup": 2.0, "latency_s": 0.6, "eager_latency_s": 1.2, **samples}},
    }
    new = baselines.updated(old, old["key"], {"commit": "abc"}, "2025-02-02T00:00:00Z", measured)
    assert new["variants"]["compile"]["timings"]["speedup"] == 1.40
    assert new["variants"]["compile"]["tolerance"]["speed"] == 0.08
    assert new["variants"]["compile"]["tolerance"]["stack"] == baselines.DEFAULT_TOLERANCE["stack"]
    assert new["variants"]["trt_fp8"] == old["variants"]["trt_fp8"]
    assert new["variants"]["new_variant"]["tolerance"] == baselines.DEFAULT_TOLERANCE
    assert new["commit"] == "abc" and new["recorded_utc"] == "2025-02-02T00:00:00Z"
    baselines.validate(new, VALID)


# ----- merging several runs ---------------------------------------------------------------------------------


def _recording(speedup: float, latency: float, ssim: float) -> dict:
    data = valid()
    entry = data["variants"]["compile"]
    entry.update(speedup=speedup, latency_s=latency, speedup_ci=[speedup - 0.1, speedup + 0.1])
    entry["quality"]["ssim_mean"] = ssim
    return baselines.validate(data, VALID)


def test_merging_recordings_takes_the_median_of_each_metric_and_pools_the_samples():
    recordings = [_recording(1.30, 0.92, 0.990), _recording(1.50, 0.80, 0.999), _recording(1.31, 0.91, 0.995)]
    merged = baselines.merge_recordings(recordings)
    entry = merged["variants"]["compile"]
    timings = lambda r: r["variants"]["compile"]["timings"]
    assert entry["timings"]["speedup"] == 1.31 and entry["timings"]["latency_s"] == 0.91
    # Pooled, the samples carry the spread between the sessions.
    assert entry["timings"]["samples_s"] == [x for r in recordings for x in timings(r)["samples_s"]]
    assert len(entry["timings"]["probe"]["launch_s"]) == 3 * len(timings(recordings[0])["probe"]["launch_s"])
    assert entry["timings"]["speedup_ci"] == pytest.approx([1.21, 1.41])
    assert entry["quality"]["scores"]["ssim"]["mean"] == 0.995
    assert entry["recordings"] == 3


def test_merging_keeps_a_variant_that_only_some_recordings_measured():
    partial = _recording(1.30, 0.92, 0.99)
    del partial["variants"]["compile"]  # say compile failed to build in the last recording
    merged = baselines.merge_recordings([_recording(1.30, 0.92, 0.99), _recording(1.32, 0.90, 0.99), partial])
    assert "compile" in merged["variants"], sorted(merged["variants"])
    assert merged["variants"]["compile"]["recordings"] == 2


def test_merging_recordings_of_different_scenarios_is_refused():
    other = _recording(1.3, 0.9, 0.99)
    other["key"]["steps"] = 4
    with pytest.raises(ValueError, match="different scenarios"):
        baselines.merge_recordings([_recording(1.3, 0.9, 0.99), other])


def _write_runs(tmp_path: Path, speedups=(1.30, 1.50, 1.31)) -> list[Path]:
    dirs = []
    for i, sp in enumerate(speedups):
        run = tmp_path / f"run-{i}"
        baselines.write_atomic(run / RELATIVE, baselines.dumps(_recording(sp, 1.2 / sp, 0.99)))
        dirs.append(run)
    return dirs


def _merge_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fluxperf", "merge-baselines", *args], capture_output=True, text=True, timeout=120
    )


def test_merge_baselines_command_writes_the_merged_file_and_the_table(tmp_path):
    runs = _write_runs(tmp_path)
    out, table = tmp_path / "baselines", tmp_path / "table.md"
    old = valid()
    old["variants"]["compile"]["tolerance"]["speed"] = 0.07  # the committed file's hand edit
    baselines.write_atomic(out / RELATIVE, baselines.dumps(old))
    done = _merge_cli("--out", str(out), "--table", str(table), *map(str, runs))
    assert done.returncode == 0, done.stderr
    merged = baselines.load(out / RELATIVE)
    compile_ = merged["variants"]["compile"]
    assert compile_["timings"]["speedup"] == 1.31 and compile_["recordings"] == 3
    assert compile_["tolerance"]["speed"] == 0.07
    text = table.read_text()
    assert f"### {RELATIVE}" in text and "| compile | speedup | 1.310 | 1.310 | +0.0% |" in text
    assert "| compile | latency_s | 0.916 | 0.916 |" in text
    assert text.strip() in done.stdout


def test_merge_baselines_command_returns_2_with_a_clear_message_on_a_broken_run_file(tmp_path):
    runs = _write_runs(tmp_path)
    broken = runs[1] / RELATIVE
    broken.write_text("{ not json")
    done = _merge_cli("--out", str(tmp_path / "baselines"), *map(str, runs))
    assert done.returncode == 2
    assert done.stderr.startswith("error: baseline ") and str(broken) in done.stderr
    assert "field '(file)': not valid JSON" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "baselines" / RELATIVE).exists()


def test_merge_baselines_in_process_reports_folders_without_baselines(tmp_path, capsys):
    from fluxperf.__main__ import main

    assert main(["merge-baselines", "--out", str(tmp_path / "out"), str(tmp_path)]) == 2
    assert "no baseline files under" in capsys.readouterr().err


def test_a_version_1_file_is_refused_with_the_reason(tmp_path):
    data = valid()
    data["schema_version"] = 1
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match="version 1 was recorded without the machine probe"):
        baselines.load(path)


def test_a_host_bound_variant_gets_the_wider_speed_and_stack_tolerance():
    measured = {"eager": {"timings": {"bound": "host"}}, "compile": {"timings": {"bound": "gpu"}}}
    new = baselines.updated(None, {}, {}, "2025-02-02T00:00:00Z", measured)["variants"]
    assert (
        new["eager"]["tolerance"]["speed"]
        == baselines.HOST_BOUND_TOLERANCE["speed"]
        > new["compile"]["tolerance"]["speed"]
        == baselines.DEFAULT_TOLERANCE["speed"]
    )
    assert new["eager"]["tolerance"]["stack"] > new["compile"]["tolerance"]["stack"]


# ----- today's version, and reading version 2 -----------------------------------------------------------------------


def test_a_version_2_file_reads_as_today_s_layout_field_by_field():
    shipped = next((DATA.parents[1] / "baselines" / "nvidia-h200").glob("*.json"))
    old, new = json.loads(shipped.read_text())["variants"]["compile"], baselines.load(shipped)["variants"]["compile"]
    assert (
        new["timings"]["cpu_samples_s"] == old["cpu_s"] and new["timings"]["eager_latency_s"] == old["eager_latency_s"]
    )
    old = valid()["variants"]["compile"]
    new = baselines.load(VALID)["variants"]["compile"]
    assert new["timings"]["samples_s"] == old["samples_s"] and new["timings"]["design"] == old["design"]
    assert new["timings"]["probe"] == old["probe"] and new["timings"]["bound"] == old["bound"]
    assert new["quality"]["scores"]["lpips"] == {
        "mean": old["quality"]["lpips_mean"],
        "backbone": old["quality"]["lpips_backbone"],
    }
    assert new["tolerance"] == old["tolerance"] and new["params"] == old["params"]
    # The recorded numbers are the rules' inputs as the file holds them: a null PSNR mean is identical images.
    entry = baselines.entry(baselines.load(VALID), "compile")
    assert entry.result.timings.speedup().value == 1.31 and entry.result.timings.gpu_busy == old.get("gpu_busy")
    assert math.isinf(entry.result.quality.scores["psnr_db"].mean)


def test_a_file_written_today_reads_back_the_same_and_names_today_s_fields(tmp_path):
    data = baselines.load(VALID)
    path = tmp_path / "b.json"
    path.write_text(baselines.dumps(data))
    again = baselines.load(path)
    assert again == data and again["schema_version"] == 3
    again["variants"]["compile"]["timings"]["samples_s"][1] = -1.0
    path.write_text(json.dumps(again))
    with pytest.raises(BaselineError) as info:
        baselines.load(path)
    assert info.value.field == "variants.compile.timings.samples_s[1]", str(info.value)
