"""pytest plugin: options, markers, the session's variant fixtures, baseline handling and the summary.

Under pytest-xdist (-n N) each worker is a whole fluxperf session pinned to its own GPU: it builds its
own eager pipeline and measures the variants whose tests it was given. fluxperf's scheduler (for
--dist load and loadgroup) sends every test of one variant to one worker, so a variant is built, timed
and judged once. The workers send their results dicts to the controller, which merges them and writes
the one report, summary table and baseline update.
"""

from __future__ import annotations

import os
import traceback
import warnings
from pathlib import Path

import pytest

from fluxperf import baselines, parallel, report, variants
from fluxperf.scenario import DEFAULT_HUB_MODEL, DTYPES, Scenario, parse_prompts, shipped_prompts

BENCH = pytest.StashKey["object"]()
WORKER_RESULTS = pytest.StashKey[dict]()   # controller: {worker id: results dict}, from pytest_testnodedown
WORKERS_DOWN = pytest.StashKey[dict]()     # controller: {worker id: error or None}
RESULTS = pytest.StashKey[dict]()          # the session's results dict, merged under xdist, for the summary
CPU_HINT = "run the suite on CPU with the tiny model: pytest -m gpu --fluxperf-device cpu (or: make bench)"


class FluxperfWarning(UserWarning):
    """A verdict that is reported but doesn't fail: inconclusive speed, absolute latency drift."""


def pytest_addoption(parser):
    g = parser.getgroup("fluxperf", "fluxperf: FLUX.1-dev performance regression suite")
    add = lambda name, **kw: g.addoption(f"--fluxperf-{name}", dest=f"fluxperf_{name.replace('-', '_')}", **kw)
    add("model", default=None, help="tiny | synthetic | Hugging Face repo id | local directory "
        f"(env FLUXPERF_MODEL; default: {DEFAULT_HUB_MODEL} on CUDA, tiny on CPU)")
    add("revision", default=None, help="pin the model's revision (commit sha or tag)")
    add("device", default="cuda", help="cuda | cpu | auto (cuda if available, else cpu); default cuda")
    add("variants", default=None, help="comma-separated variants to run (default: all registered)")
    add("height", type=int, default=512, help="image height, a multiple of 16 (default 512)")
    add("width", type=int, default=512, help="image width, a multiple of 16 (default 512)")
    add("steps", type=int, default=28, help="denoising steps (default 28)")
    add("guidance", type=float, default=3.5, help="guidance scale (default 3.5)")
    add("prompts", default=None, help="prompt file, one per line (default: the shipped set)")
    add("num-prompts", type=int, default=None, help="use only the first N prompts")
    add("seeds", default="0", help="comma-separated seeds (default 0)")
    add("dtype", default=None, help=f"{' | '.join(DTYPES)} (default bfloat16; float32 on CPU, where bf16 is slow)")
    add("rounds", type=int, default=5, help="timed rounds per variant, each one eager and one variant image")
    add("max-rounds", type=int, default=40, help="cap on rounds when a speed verdict is inconclusive")
    add("param", action="append", default=[], metavar="NAME=VALUE", help="variant tunable, e.g. fora_interval=3")
    add("floor", action="append", default=[], metavar="VARIANT.METRIC=VALUE",
        help="quality floor per image, e.g. pruna_cache.ssim=0.8 (metrics: ssim, psnr_db, lpips)")
    add("baseline-dir", default=None, help="baseline folder (default: baselines/ at the rootdir)")
    add("update-baselines", action="store_true", help="write or refresh baselines from this session")
    add("require-baseline", action="store_true", help="fail, instead of skip, when no baseline exists")
    add("report-dir", default=None, help="report folder (default: reports/ at the rootdir)")
    add("cache-dir", default=None, help="reference images and build artifacts "
        "(env FLUXPERF_CACHE_DIR; default ~/.cache/fluxperf)")
    add("lpips-random-backbone", action="store_true",
        help="LPIPS with a random AlexNet, for offline smoke runs only; reports label it")


def _usage(option: str, problem: str) -> pytest.UsageError:
    return pytest.UsageError(f"--fluxperf-{option}: {problem}")


def _parse_param(text: str, known: dict):
    name, sep, raw = text.partition("=")
    if not sep:
        raise _usage("param", f"{text!r} is not NAME=VALUE")
    if name not in known:
        raise _usage("param", f"unknown tunable {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    kind = type(known[name])
    try:
        value = (raw.lower() in ("1", "true", "yes")) if kind is bool else kind(raw)
    except ValueError:
        raise _usage("param", f"{name} takes a {kind.__name__}, got {raw!r}") from None
    return name, value


def _parse_floor(text: str, names: list[str]):
    target, sep, raw = text.partition("=")
    name, dot, metric = target.rpartition(".")
    if not (sep and dot) or name not in names or metric not in ("ssim", "psnr_db", "lpips"):
        raise _usage("floor", f"{text!r} is not VARIANT.METRIC=VALUE with a variant in {', '.join(names)} "
                              "and a metric in ssim, psnr_db, lpips")
    try:
        return name, metric, float(raw)
    except ValueError:
        raise _usage("floor", f"{raw!r} is not a number") from None


def worker_id(config) -> str | None:
    """This process's pytest-xdist worker id (gw0, gw1, ...), or None outside xdist and in its controller."""
    # Not PYTEST_XDIST_WORKER: a pytest started from inside a worker (pytester) inherits it.
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput is not None else None


def is_xdist_controller(config) -> bool:
    """The process that hands tests to xdist workers: it runs none itself, and merges their results."""
    # xdist's own test (xdist.plugin._is_distribution_mode), which holds from pytest_cmdline_main on.
    return (worker_id(config) is None and config.pluginmanager.hasplugin("xdist")
            and config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None)))


def pinned_device(device: str, worker: str | None, gpu_count: int) -> str:
    """The device an xdist worker uses: worker gwN gets GPU N (mod the number visible), so that variants
    timed on different workers never share a GPU. One GPU, CPU, or no xdist: the device unchanged."""
    if device != "cuda" or worker is None or gpu_count < 2:
        return device
    return f"cuda:{int(worker.removeprefix('gw')) % gpu_count}"


def resolve(config) -> "object":
    """Read and validate every option once; a bad value is a usage error naming the option."""
    from fluxperf.bench import Settings

    opt = lambda name: config.getoption(f"fluxperf_{name}")
    device = opt("device")
    if device not in ("cuda", "cpu", "auto"):
        raise _usage("device", f"{device!r} is not one of cuda, cpu, auto")
    if device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    worker = worker_id(config)
    if parallel.launched():
        if config.getoption("numprocesses", None) or worker is not None:
            raise pytest.UsageError("torchrun and pytest-xdist don't mix: under torchrun rank 0 runs the tests and "
                                    "the other ranks serve context_parallel; drop -n")
        device = parallel.device_for(device)
    if device == "cuda" and worker is not None:
        import torch
        device = pinned_device(device, worker, torch.cuda.device_count())
    model = opt("model") or os.environ.get("FLUXPERF_MODEL") or ("tiny" if device == "cpu" else DEFAULT_HUB_MODEL)
    dtype = opt("dtype") or ("float32" if device == "cpu" else "bfloat16")
    for name in ("height", "width"):
        if opt(name) <= 0 or opt(name) % 16:
            raise _usage(name, f"{opt(name)} must be a positive multiple of 16")
    if opt("steps") < 1:
        raise _usage("steps", f"{opt('steps')} must be at least 1")
    if dtype not in DTYPES:
        raise _usage("dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
    if opt("rounds") < 2 or opt("max_rounds") < opt("rounds"):
        raise _usage("rounds", f"need rounds >= 2 and max-rounds >= rounds, got {opt('rounds')} and {opt('max_rounds')}")
    try:
        seeds = tuple(int(s) for s in opt("seeds").split(",") if s.strip())
    except ValueError:
        raise _usage("seeds", f"{opt('seeds')!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise _usage("seeds", "give at least one seed")
    if opt("prompts"):
        try:
            prompts = parse_prompts(Path(opt("prompts")).read_text(encoding="utf-8"))
        except OSError as exc:
            raise _usage("prompts", f"can't read {opt('prompts')}: {exc.strerror}") from None
    else:
        prompts = shipped_prompts()
    if opt("num_prompts") is not None:
        if opt("num_prompts") < 1:
            raise _usage("num-prompts", f"{opt('num_prompts')} must be at least 1")
        prompts = prompts[:opt("num_prompts")]
    if not prompts:
        raise _usage("prompts", "the prompt file holds no prompts")
    available = variants.names()
    chosen = [v.strip() for v in opt("variants").split(",") if v.strip()] if opt("variants") else available
    for name in chosen:
        if name not in available:
            raise _usage("variants", f"unknown variant {name!r}; choose from: {', '.join(available)}")
    # Eager is the reference every other variant is timed and judged against.
    chosen = [n for n in available if n in chosen or n == "eager"]
    params = dict(_parse_param(p, variants.all_params()) for p in opt("param"))
    if "context_parallel" in chosen:
        try:
            parallel.check_params({**variants.get("context_parallel").params, **params})
        except ValueError as exc:
            raise _usage("param", str(exc)) from None
    floors: dict = {}
    for text in opt("floor"):
        name, metric, value = _parse_floor(text, available)
        floors.setdefault(name, {})[metric] = value
    root = Path(config.rootpath)
    cache = opt("cache_dir") or os.environ.get("FLUXPERF_CACHE_DIR") or "~/.cache/fluxperf"
    again = rebaseline_command(opt, model, dtype, device)
    scenario = Scenario(model=model, revision=opt("revision"), height=opt("height"), width=opt("width"),
                        steps=opt("steps"), guidance=opt("guidance"), prompts=prompts, seeds=seeds,
                        dtype=dtype, device=device)
    return Settings(scenario=scenario, variants=tuple(chosen), params=params, rounds=opt("rounds"),
                    max_rounds=opt("max_rounds"), cache_dir=Path(cache).expanduser(),
                    baseline_dir=Path(opt("baseline_dir") or root / "baselines"),
                    report_dir=Path(opt("report_dir") or root / "reports"), repo_dir=root,
                    update_baselines=opt("update_baselines"), require_baseline=opt("require_baseline"),
                    lpips_random_backbone=opt("lpips_random_backbone"), floors=floors, worker=worker,
                    rebaseline=again)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: the FLUX performance suite (runs on CUDA, or on CPU with "
                                       "--fluxperf-device cpu)")
    config.addinivalue_line("markers", "fluxperf_variants(kind): which variants a test applies to: "
                                       "all | eager | optimized (not eager) | timed (optimized and judged on speed)")
    from fluxperf import progress
    from fluxperf.bench import Bench

    bench = config.stash[BENCH] = Bench(resolve(config))
    if parallel.launched():
        _join(bench.device)
    if bench.device.startswith("cuda:"):
        import torch
        # Libraries that allocate on "the" CUDA device (torch.compile's autotuning, TensorRT) follow this one.
        torch.cuda.set_device(torch.device(bench.device))
    if is_xdist_controller(config):
        config.stash[WORKER_RESULTS], config.stash[WORKERS_DOWN] = {}, {}
        if "gpu" in (config.option.markexpr or ""):
            _check_xdist_controller(config, bench)
    # Builds take minutes: show their steps live, even while pytest captures the tests' output.
    progress.set_sink(lambda line: _show(config, line))


def _join(device: str) -> None:
    try:
        parallel.init(device)
    except parallel.ParallelError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Under torchrun, ranks above 0 run no tests: they serve rank 0's context_parallel calls until it is done."""
    if not parallel.is_follower():
        return None
    device = resolve(config).scenario.device
    _join(device)
    return parallel.follow(device)


def pytest_runtest_teardown(item, nextitem):
    if parallel.launched() and parallel.broken:
        # The other ranks are stuck in a call that failed here: nothing more can run on them. Stop after
        # this test; the reports of what was measured are still written.
        item.session.shouldstop = f"{parallel.broken}; the other ranks can't take more work"


def pytest_unconfigure(config):
    if parallel.launched() and not parallel.is_follower():
        parallel.finish()


def _show(config, line: str) -> None:
    writer = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if writer is None:  # e.g. -p no:terminal
        return
    if capture is None:
        writer.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        writer.ensure_newline()
        writer.write_line(line)


def _bench(config):
    return config.stash[BENCH]


def pytest_generate_tests(metafunc):
    if "variant_run" in metafunc.fixturenames:
        names = list(_bench(metafunc.config).settings.variants)
        # One list for every test keeps pytest's grouping by variant: each variant is built once,
        # its tests run, it is released, then the next is built.
        metafunc.parametrize("variant_run", names, indirect=True, scope="session", ids=names)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """-n auto: one worker per visible GPU when the suite runs on CUDA; xdist's CPU count otherwise."""
    if config.getoption("fluxperf_device") in ("cuda", "auto"):
        import torch
        if torch.cuda.device_count() > 0:
            return torch.cuda.device_count()
    return None


# Modes whose scheduler fluxperf replaces; the others (each, loadscope, loadfile, worksteal) would run
# one variant's tests on several workers, each building and timing it again.
VARIANT_DIST = ("load", "loadgroup")


def variant_of_nodeid(nodeid: str, names) -> str | None:
    """The variant a test belongs to, from its node id: `test_x.py::test_y[twin]`, with xdist's `@group`
    suffix when it adds one, and the variant as one `-`-joined part of the id when a test has more params."""
    head, at, group = nodeid.rpartition("@")
    if at and head.endswith("]") and group in names:
        return group
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    return next((part for part in nodeid[nodeid.rindex("[") + 1:-1].split("-") if part in names), None)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Controller: every test of one variant goes to one worker, which builds the variant once.

    xdist's own loadgroup does this by appending `@group` to node ids on the workers, which stopped
    taking effect with pytest 9.2's structured node ids (pytest-xdist issue #1386): the tests of one
    variant were then scattered and each worker built and timed it again. Grouping by the variant in
    the node id works with every pytest, and also under plain -n N (--dist load).
    """
    if config.getoption("dist") not in VARIANT_DIST or BENCH not in config.stash:
        return None
    from xdist.scheduler import LoadScopeScheduling

    names = set(config.stash[BENCH].settings.variants)

    class VariantScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            # A test of no variant is its own scope: scheduled as --dist load would.
            return variant_of_nodeid(nodeid, names) or nodeid

    return VariantScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Controller: tell each worker the --dist mode, so that it can refuse one that splits a variant."""
    node.workerinput["fluxperf_dist"] = node.config.getoption("dist")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """Controller: keep what each worker measured (its results dict), for the one merged report."""
    config = node.config
    if BENCH not in config.stash or WORKER_RESULTS not in config.stash:
        return
    worker = node.workerinput["workerid"]
    config.stash[WORKERS_DOWN][worker] = error
    data = getattr(node, "workeroutput", {}).get("fluxperf")
    if data is not None:
        config.stash[WORKER_RESULTS][worker] = data


def _applies(item) -> bool:
    marker = item.get_closest_marker("fluxperf_variants")
    if marker is None or not hasattr(item, "callspec") or "variant_run" not in item.callspec.params:
        return True
    name = item.callspec.params["variant_run"]
    kind = marker.args[0]
    if kind == "eager":
        return name == "eager"
    if kind == "optimized":
        return name != "eager"
    if kind == "timed":
        return name != "eager" and variants.get(name).timed
    return True


def _load_baseline(bench) -> None:
    try:
        bench.load_baseline()
    except baselines.BaselineError as exc:
        # A setup problem, not a regression: pytest exits with its usage-error code (4).
        raise pytest.UsageError(f"{exc}. Fix or delete the file, or rerun with --fluxperf-update-baselines "
                                "to rewrite it.") from None


def _check_dist(dist) -> None:
    if dist not in VARIANT_DIST:
        raise pytest.UsageError(f"fluxperf under pytest-xdist needs --dist load or loadgroup, not {dist}: each "
                                "variant is built and timed on one worker, and its tests must run where it was built")


def _check_xdist_controller(config, bench) -> None:
    """-m gpu under xdist: refuse a bad setup here, with exit code 4. Raised on a worker, a usage error
    reaches the controller only as an xdist internal error that hides the message."""
    _check_dist(config.getoption("dist"))
    if bench.device != "cuda":
        _load_baseline(bench)
        return
    import torch
    if torch.cuda.device_count() == 0:
        return  # every GPU test skips, saying how to run on CPU
    _check_gpus(len(config.getoption("tx")))
    _load_baseline(bench)


def _check_gpus(workers: int) -> None:
    """One worker per GPU at most, and one GPU model: baselines key on the model, never on the index."""
    import torch
    count = torch.cuda.device_count()
    if 1 <= count < workers:
        raise pytest.UsageError(f"-n {workers} puts {workers} workers on {count} GPU(s): workers sharing a GPU "
                                "time each other's work. Use -n auto (one worker per visible GPU) or fewer")
    models = {torch.cuda.get_device_name(i) for i in range(count)}
    if len(models) > 1:
        raise pytest.UsageError(f"the visible GPUs are different models ({', '.join(sorted(models))}); baselines "
                                "key on the GPU model. Set CUDA_VISIBLE_DEVICES to GPUs of one model")


def _variant_of(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("variant_run") if callspec is not None else None


def _check_xdist_worker(config, bench, items) -> None:
    """The checks of _check_xdist_controller, for a run it didn't check (no -m gpu): a worker's variant tests
    must all run on it, and its GPU must be its own and the same model as the others'."""
    if not any(_variant_of(i) for i in items):
        return
    _check_dist(config.workerinput.get("fluxperf_dist"))
    if bench.device.startswith("cuda"):
        _check_gpus(int(config.workerinput["workercount"]))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks added here
def pytest_collection_modifyitems(session, config, items):
    keep = [i for i in items if _applies(i)]
    dropped = [i for i in items if not _applies(i)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    bench = _bench(config)
    if not any(i.get_closest_marker("gpu") for i in items):
        return
    if bench.worker is not None:
        _check_xdist_worker(config, bench, items)
        for item in items:
            if _variant_of(item):
                # States the grouping on the test; fluxperf's scheduler groups by the variant in the node id,
                # and reads xdist's `@group` suffix too where a pytest older than 9.2 still gets one.
                item.add_marker(pytest.mark.xdist_group(_variant_of(item)))
    if bench.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason=f"no CUDA device; {CPU_HINT}")
            for item in items:
                if item.get_closest_marker("gpu"):
                    item.add_marker(skip)
            return
    _load_baseline(bench)


@pytest.fixture(scope="session")
def fluxperf_bench(request):
    """The session's measurements (fluxperf.bench.Bench)."""
    return _bench(request.config)


@pytest.fixture(scope="session")
def variant_run(request, fluxperf_bench):
    """A variant built, warmed up, timed and rendered once per session; released after its tests."""
    from fluxperf import timing
    from fluxperf.models import ModelSourceError

    name = request.param
    failure = None
    try:
        live = fluxperf_bench.measure(name)
    except variants.Unavailable as exc:
        pytest.skip(f"{name}: {exc}")
    except ModelSourceError as exc:
        failure = str(exc)
    except Exception:
        failure = f"{name} failed to build or run:\n{traceback.format_exc()}"
    if failure is not None:
        # Outside the except block the traceback (and the GPU tensors its frames hold) is gone.
        timing.release(fluxperf_bench.device)
        pytest.fail(failure, pytrace=False)
    yield live
    fluxperf_bench.release(live)


def rebaseline_command(opt, model: str, dtype: str, device: str) -> str:
    """The command that records the baseline this session reads: every option that shapes the scenario, the
    baseline's key or its path, as this session was given them (paths made absolute)."""
    parts = ["pytest -m gpu --fluxperf-update-baselines", f"--fluxperf-model={model}"]
    if opt("revision"):
        parts.append(f"--fluxperf-revision={opt('revision')}")
    if opt("device") != "cuda":
        parts.append(f"--fluxperf-device={device}")
    parts += [f"--fluxperf-height={opt('height')}", f"--fluxperf-width={opt('width')}",
              f"--fluxperf-steps={opt('steps')}", f"--fluxperf-guidance={opt('guidance'):g}",
              f"--fluxperf-seeds={opt('seeds')}", f"--fluxperf-dtype={dtype}"]
    if opt("prompts"):
        parts.append(f"--fluxperf-prompts={Path(opt('prompts')).resolve()}")
    if opt("num_prompts") is not None:
        parts.append(f"--fluxperf-num-prompts={opt('num_prompts')}")
    if opt("baseline_dir"):
        parts.append(f"--fluxperf-baseline-dir={Path(opt('baseline_dir')).resolve()}")
    if opt("variants"):
        parts.append(f"--fluxperf-variants={opt('variants')}")
    parts += [f"--fluxperf-param={p}" for p in opt("param")]
    if opt("lpips_random_backbone"):
        parts.append("--fluxperf-lpips-random-backbone")
    return " ".join(parts)


def baseline_for(bench, name: str) -> dict:
    """This variant's baseline entry, or skip/fail (under --fluxperf-require-baseline) with the reason."""
    s = bench.settings
    if s.update_baselines:
        pytest.skip("--fluxperf-update-baselines: this session writes the baseline instead of judging against it")
    entry = bench.baseline_entry(name)
    if entry is None:
        what = f"no baseline for {name} in {bench.baseline_path}"
        if s.require_baseline:
            pytest.fail(f"{what} (--fluxperf-require-baseline); record one with: {s.rebaseline}", pytrace=False)
        pytest.skip(f"{what}; record one with: {s.rebaseline}")
    run = bench.results[name]
    if entry.get("params", {}) != run.params:
        pytest.skip(f"{name}: baseline recorded with {entry.get('params')}, this run uses {run.params}; "
                    "not comparable")
    return entry


def warn(message: str) -> None:
    warnings.warn(FluxperfWarning(message), stacklevel=2)


def conclude(bench, name: str, check: str, verdict) -> None:
    """Record a verdict for the report and turn it into the test's outcome: FAIL fails, WARN and INCONCLUSIVE
    warn, a PASS against a stale baseline warns too."""
    from fluxperf import stats

    bench.record(name, check, verdict)
    if verdict.status == stats.FAIL:
        pytest.fail(verdict.message, pytrace=False)
    if verdict.status == stats.INCONCLUSIVE:
        warn(f"INCONCLUSIVE: {verdict.message}")
    elif verdict.status == stats.WARN or verdict.stale:
        warn(verdict.message)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    bench = config.stash.get(BENCH, None)
    if bench is None:
        return
    if bench.worker is not None:
        # pytest-benchmark can't run under xdist, and the report must be one file: the worker hands its
        # results to the controller (pytest_testnodedown) instead of writing results.json and report.md.
        if bench.results:
            bench.write_reports()
            config.workeroutput["fluxperf"] = report.results_dict(bench)
        return
    if is_xdist_controller(config):
        parts = config.stash[WORKER_RESULTS]
        if not parts:
            return
        results = report.merge(parts, list(bench.settings.variants), bench.device)
        report.write_summary(results, bench.settings.report_dir)
    elif bench.results:
        results = report.write_all(bench)
    else:
        return
    config.stash[RESULTS] = results
    if bench.settings.update_baselines:
        path = bench.update_baseline(report.utc_now(), results)
        if path:
            config._fluxperf_written = path


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(RESULTS, None)
    if results is None:
        return
    tr = terminalreporter
    tr.write_sep("=", "fluxperf summary")
    for line in report.header_lines(results):
        tr.write_line(line)
    tr.write_line("")
    tr.write_line(report.table_text(report.SPEED_HEADER, report.speed_rows(results)))
    qrows = report.quality_rows(results)
    if qrows:
        tr.write_line("")
        tr.write_line(report.table_text(report.QUALITY_HEADER, qrows))
    d = results["determinism"]
    if d and not d["ok"]:
        tr.write_line("")
        tr.write_line(f"WARNING: eager re-rendered the same prompt and seed differently (worst PSNR "
                      f"{d['worst_psnr_db']:.1f} dB < {d['bound_psnr_db']} dB): quality verdicts are unreliable",
                      red=True, bold=True)
    for worker, error in config.stash.get(WORKERS_DOWN, {}).items():
        if error is not None:
            tr.write_line(f"WARNING: xdist worker {worker} went down ({error}); its variants may be missing above",
                          red=True, bold=True)
    tr.write_line("")
    tr.write_line(f"reports: {config.stash[BENCH].settings.report_dir}/ (results.json, report.md, latency.png, grid-*.png)")
    written = getattr(config, "_fluxperf_written", None)
    if written:
        tr.write_line(f"baseline written: {written}")
