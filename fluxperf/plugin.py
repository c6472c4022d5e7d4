"""pytest plugin: the hooks and fixtures that connect pytest to fluxperf, and nothing else.

Loaded in every pytest run of an environment where fluxperf is installed, so it imports only pytest and
fluxperf's light modules (options, torchrun, xdist). Torch, diffusers and the session object (fluxperf.bench)
load when the run has selected a fluxperf test. The bench measures and returns results; the plugin alone writes the
reports and the baseline from them. Where things are:
- options.py: every --fluxperf-* option, parsed and validated into Settings;
- bench.py: the session: building, timing and rendering each variant (result.py: what it returns);
- verdicts.py: the procedures the suite calls (rules.py decides, messages.py words it, stats.py estimates);
- checks.py: what the suite (fluxperf/suite) calls to turn a verdict into a test outcome;
- report.py and figures.py: the reports; summary.py: what the terminal shows;
- xdist.py and torchrun.py: running on several GPUs.
"""

from __future__ import annotations

import os
import traceback

import pytest

from fluxperf import options, torchrun, watchdog, xdist

SETTINGS = pytest.StashKey["options.Settings"]()
BENCH = pytest.StashKey["object"]()  # the session's fluxperf.bench.Bench, once a fluxperf test is selected
RESULTS = pytest.StashKey[dict]()  # the session's results dict, merged under xdist, for the summary
WRITTEN = pytest.StashKey[object]()  # the baseline file this session wrote, if it did
SIGTERM = pytest.StashKey[object]()  # the SIGTERM handler in place before fluxperf's
HISTORY = pytest.StashKey[str]()  # a line for the summary about the history this session appended to
CPU_HINT = "run the suite on CPU with the tiny model: pytest -m gpu --fluxperf-device cpu (or: make bench)"
FIXTURES = ("variant_run", "fluxperf_bench")


def pytest_addoption(parser):
    options.addoption(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Under torchrun, ranks above 0 run no tests: they serve rank 0's context_parallel calls until it is done."""
    if not torchrun.is_follower():
        return None
    from fluxperf import parallel

    device = torchrun.device_for(options.resolve(config).scenario.device)
    return parallel.follow(_join(config, device), device)


def _join(config, device: str):
    """Rank 0 or a follower joins torchrun's process group; a bad launch is a usage error."""
    from fluxperf import parallel

    try:
        return parallel.init(device)
    except parallel.ParallelError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: the FLUX performance suite (runs on CUDA, or on CPU with --fluxperf-device cpu)"
    )
    config.addinivalue_line(
        "markers",
        "fluxperf_variants(kind): which variants a test applies to: "
        "all | eager | optimized (not eager) | timed (optimized and judged on speed)",
    )
    settings = config.stash[SETTINGS] = options.resolve(config, xdist.worker_id(config))
    config.pluginmanager.register(Selection(), "fluxperf-selection")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(xdist.XdistPlugin(settings.variants), "fluxperf-xdist")
        if xdist.is_controller(config):
            config.stash[xdist.WORKER_RESULTS], config.stash[xdist.WORKERS_DOWN] = {}, {}
            if xdist.selects_gpu_suite(config):
                xdist.check_controller(config, settings.scenario.device)
                _load_baseline(session_of(config))
                _check_history(settings)
    if torchrun.launched():
        config.pluginmanager.register(torchrun.TorchrunPlugin(config), "fluxperf-torchrun")
        session_of(config)  # rank 0 joins the group now: the followers wait for it


def session_of(config):
    """The session object, made on first use: this is where torch and diffusers are imported."""
    if BENCH not in config.stash:
        import torch

        from fluxperf.bench import Bench
        from fluxperf.progress import Progress

        settings = config.stash[SETTINGS]
        # torch.compile's artifacts live with fluxperf's own, so the next session's builds reuse them.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(settings.cache_dir / "inductor"))
        device = settings.scenario.device
        if device == "cuda" and settings.worker is not None:
            device = xdist.pinned_device(device, settings.worker, torch.cuda.device_count())
        if device != settings.scenario.device:
            import dataclasses

            settings = dataclasses.replace(settings, scenario=dataclasses.replace(settings.scenario, device=device))
        group = None
        if torchrun.launched():
            group = config.stash[torchrun.GROUP] = _join(config, device)
        if device.startswith("cuda:"):
            # Libraries that allocate on "the" CUDA device (torch.compile's autotuning, TensorRT) follow this one.
            torch.cuda.set_device(torch.device(device))
        # Builds take minutes: show their steps live, even while pytest captures the tests' output.
        config.stash[BENCH] = Bench(settings, Progress(lambda line: _show(config, line)), group)
        # A CI time limit sends SIGTERM: end the session as Ctrl-C does, so that what finished is written.
        config.stash[SIGTERM] = watchdog.on_terminate()
    return config.stash[BENCH]


def pytest_unconfigure(config):
    watchdog.restore(config.stash.get(SIGTERM, None))


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


def pytest_generate_tests(metafunc):
    if "variant_run" in metafunc.fixturenames:
        names = list(metafunc.config.stash[SETTINGS].variants)
        # One list for every test keeps pytest's grouping by variant: each variant is built once,
        # its tests run, it is released, then the next is built.
        metafunc.parametrize("variant_run", names, indirect=True, scope="session", ids=names)


def _variant_of(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("variant_run") if callspec is not None else None


def _applies(item) -> bool:
    marker = item.get_closest_marker("fluxperf_variants")
    name = _variant_of(item)
    if marker is None or name is None:
        return True
    from fluxperf import variants

    kind = marker.args[0]
    if kind == "eager":
        return name == "eager"
    if kind == "optimized":
        return name != "eager"
    if kind == "timed":
        return name != "eager" and variants.get(name).timed
    return True


def _check_history(settings) -> None:
    """Open the history once before anything is measured, creating it if need be: a damaged one, or one written by
    a newer fluxperf, is a usage error naming it now, not after an hour of measuring. Workers and followers only
    read it."""
    if settings.history is None or settings.worker is not None or torchrun.is_follower():
        return
    from fluxperf import history

    try:
        history.open_store(settings.history).close()
    except history.HistoryError as exc:
        raise pytest.UsageError(f"--fluxperf-history: {exc}") from None


def _load_baseline(bench) -> None:
    from fluxperf import baselines

    try:
        bench.load_baseline()
    except baselines.BaselineError as exc:
        # A setup problem, not a regression: pytest exits with its usage-error code (4).
        raise pytest.UsageError(
            f"{exc}. Fix or delete the file, or rerun with --fluxperf-update-baselines to rewrite it."
        ) from None
    s = bench.settings
    if bench.baseline is None and s.require_baseline and not s.update_baselines:
        # Said now rather than after a night of measuring that nothing could be judged against.
        raise pytest.UsageError(
            f"no baseline at {bench.baseline_path} (--fluxperf-require-baseline); record one with: {s.rebaseline}"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Each test runs only for the variants its fluxperf_variants mark names."""
    dropped = [i for i in items if not _applies(i)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if _applies(i)]


class Selection:
    """After every other plugin (-m, -k) has deselected: set up fluxperf only if its tests are still selected."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        if not any(f in getattr(i, "fixturenames", ()) for i in items for f in FIXTURES):
            return  # no fluxperf test selected: nothing more is loaded, checked or changed
        settings = config.stash[SETTINGS]
        if settings.worker is not None and any(_variant_of(i) for i in items):
            xdist.check_worker(config, settings.scenario.device)
            for item in items:
                if _variant_of(item):
                    # States the grouping on the test; fluxperf's scheduler groups by the variant in the node id.
                    item.add_marker(pytest.mark.xdist_group(_variant_of(item)))
        if settings.scenario.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                skip = pytest.mark.skip(reason=f"no CUDA device; {CPU_HINT}")
                for item in items:
                    if item.get_closest_marker("gpu"):
                        item.add_marker(skip)
                return
        _load_baseline(session_of(config))
        _check_history(settings)


def pytest_report_collectionfinish(config, start_path, items):
    if BENCH not in config.stash:
        return None
    from fluxperf import summary

    return summary.session_header(config.stash[BENCH])


@pytest.fixture(scope="session")
def fluxperf_bench(request):
    """The session's measurements (fluxperf.bench.Bench)."""
    return session_of(request.config)


@pytest.fixture(scope="session")
def fluxperf_history(request):
    """The results history, open for reading (fluxperf.history.Store); a test using it skips, saying why, where it is
    off or can't be opened. The session's own results are appended at its end, after every test has read it."""
    from fluxperf import history

    where = request.config.stash[SETTINGS].history
    if where is None:
        pytest.skip("no history is kept (--fluxperf-history=off)")
    try:
        store = history.open_store(where, create=False)
    except history.HistoryError as exc:
        # Not created yet (a worker, before the first session's end) or unreadable; the controller, which opens it
        # before measuring, stops the session on a damaged one.
        pytest.skip(f"no history to judge against: {exc}")
    yield store
    store.close()


@pytest.fixture(scope="session")
def variant_run(request, fluxperf_bench):
    """A variant built, warmed up, timed and rendered once per session (a fluxperf.bench.Live); released after its
    tests. Its reports are written after it is measured and again once its verdicts are in, so that whatever
    finished is on disk if the session is stopped."""
    from fluxperf import timing, variants
    from fluxperf.models import ModelSourceError

    name = request.param
    failure = None
    try:
        live = fluxperf_bench.measure(name)
    except variants.Unavailable as exc:
        pytest.skip(f"{name}: {exc}")
    except ModelSourceError as exc:
        # Every variant needs the model: stop the session now, with the one line that says what to do. What was
        # measured before is in the reports (pytest_sessionfinish writes them); exit code 4, a setup problem.
        pytest.exit(f"fluxperf: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    except Exception as exc:
        timeout = watchdog.timeout_in(exc)
        # Past its time limit (also when torch.compile wrapped the limit's exception): the phase and the time, no
        # traceback; anything else fails with its traceback.
        failure = f"{name}: {timeout}" if timeout else f"{name} failed to build or run:\n{traceback.format_exc()}"
    finally:
        _write_reports(fluxperf_bench, name)
    if failure is not None:
        # Outside the except block the traceback (and the GPU tensors its frames hold) is gone.
        timing.release(fluxperf_bench.device)
        pytest.fail(failure, pytrace=False)
    yield live
    fluxperf_bench.release(live)
    _write_reports(fluxperf_bench)


def _document(bench) -> dict:
    from fluxperf import report

    return report.document(
        bench.scenario, bench.env, bench.baseline_path, bench.baseline, bench.determinism, bench.results
    )


def _write_reports(bench, measured: str | None = None) -> None:
    """The reports of what is measured so far, and the images of the variant just `measured`. An xdist worker
    writes only the images: the controller writes results.json and report.md once, from every worker's results."""
    from fluxperf import figures, report

    s, result = bench.settings, bench.results.get(measured)
    if result is not None:
        pair = figures.write_images(s.report_dir, bench.scenario, result, bench.reference_images, s.grid_images)
        result.quality.worst_pair_png = pair or result.quality.worst_pair_png
    if bench.worker is None and bench.results:
        report.write_summary(_document(bench), s.report_dir)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if torchrun.is_follower():
        return
    controller = xdist.is_controller(config)
    if controller and config.stash[xdist.WORKER_RESULTS]:
        session_of(config)  # the workers measured; the controller merges and writes
    bench = config.stash.get(BENCH, None)
    if bench is None:
        return
    from fluxperf import baselines, report

    if bench.worker is not None:
        # pytest-benchmark can't run under xdist, and the report must be one file: the worker hands its
        # results to the controller (pytest_testnodedown) instead of writing results.json and report.md.
        if bench.results:
            config.workeroutput["fluxperf"] = _document(bench)
        return
    if controller:
        parts = config.stash[xdist.WORKER_RESULTS]
        if not parts:
            return
        results = report.merge(parts, list(bench.settings.variants), bench.device)
    elif bench.results:
        results = _document(bench)
    else:
        return
    report.write_summary(results, bench.settings.report_dir)
    config.stash[RESULTS] = results
    _append_history(config, bench.settings, results)
    if bench.settings.update_baselines:
        # Keyed on the GPU the results were measured on (the workers', under xdist).
        env = results["environment"]
        path = baselines.write_session(bench.locate_baseline(env), bench.baseline_key(env), results, report.utc_now())
        if path:
            config.stash[WRITTEN] = path


def _append_history(config, settings, results: dict) -> None:
    """Keep this session in the history: one transaction, by this process alone (the xdist controller, torchrun's
    rank 0). A history that can't take it is said in the summary; the reports are written already."""
    if settings.history is None:
        return
    from fluxperf import history

    kind = "recording" if settings.update_baselines else "judged"
    try:
        with history.open_store(settings.history) as store:
            added = store.append(history.session_record(results, kind))
        config.stash[HISTORY] = f"history: {history.display(settings.history)} ({added} variant result(s) added)"
    except history.HistoryError as exc:
        config.stash[HISTORY] = f"WARNING: this session was not added to the history: {exc}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(RESULTS, None)
    if results is None:
        return
    from fluxperf import summary

    summary.write(
        terminalreporter,
        results,
        config.stash[BENCH].settings.report_dir,
        config.stash.get(WRITTEN, None),
        config.stash.get(xdist.WORKERS_DOWN, {}),
    )
    if HISTORY in config.stash:
        terminalreporter.write_line(config.stash[HISTORY], red=config.stash[HISTORY].startswith("WARNING"))
