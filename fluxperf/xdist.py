"""pytest-xdist support: one worker per GPU, every test of a variant on one worker, the workers' results merged.

Registered only when xdist is installed, and it changes xdist's worker count and scheduler only in a run whose
-m expression selects the gpu suite: any other run with -n is xdist's own. Each worker is a whole fluxperf
session pinned to its own GPU; the controller merges their results into one report, summary and baseline.
"""

from __future__ import annotations

import pytest

# Modes whose scheduler fluxperf replaces; the others (each, loadscope, loadfile, worksteal) would run
# one variant's tests on several workers, each building and timing it again.
VARIANT_DIST = ("load", "loadgroup")
WORKER_RESULTS = pytest.StashKey[dict]()  # controller: {worker id: results dict}, from pytest_testnodedown
WORKERS_DOWN = pytest.StashKey[dict]()  # controller: {worker id: error or None}


def worker_id(config) -> str | None:
    """This process's pytest-xdist worker id (gw0, gw1, ...), or None outside xdist and in its controller."""
    # Not PYTEST_XDIST_WORKER: a pytest started from inside a worker (pytester) inherits it.
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput is not None else None


def is_controller(config) -> bool:
    """The process that hands tests to xdist workers: it runs none itself, and merges their results."""
    # xdist's own test (xdist.plugin._is_distribution_mode), which holds from pytest_cmdline_main on.
    return (
        worker_id(config) is None
        and config.pluginmanager.hasplugin("xdist")
        and config.getoption("dist", "no") != "no"
        and bool(config.getoption("tx", None))
    )


def selects_gpu_suite(config) -> bool:
    """Whether the -m expression selects tests marked gpu (`-m gpu`, `-m "gpu and not slow"`; not `-m "not gpu"`)."""
    from _pytest.mark.expression import Expression

    expr = config.option.markexpr
    if not expr:
        return False
    try:
        return Expression.compile(expr).evaluate(lambda name, **kwargs: name == "gpu")
    except Exception:  # pytest itself reports a malformed -m expression
        return False


def pinned_device(device: str, worker: str | None, gpu_count: int) -> str:
    """The device an xdist worker uses: worker gwN gets GPU N (mod the number visible), so that variants
    timed on different workers never share a GPU. One GPU, CPU, or no xdist: the device unchanged."""
    if device != "cuda" or worker is None or gpu_count < 2:
        return device
    return f"cuda:{int(worker.removeprefix('gw')) % gpu_count}"


def variant_of_nodeid(nodeid: str, names) -> str | None:
    """The variant a test belongs to, from its node id: `test_x.py::test_y[twin]`, with xdist's `@group`
    suffix when it adds one, and the variant as one `-`-joined part of the id when a test has more params."""
    head, at, group = nodeid.rpartition("@")
    if at and head.endswith("]") and group in names:
        return group
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    return next((part for part in nodeid[nodeid.rindex("[") + 1 : -1].split("-") if part in names), None)


def check_dist(dist) -> None:
    if dist not in VARIANT_DIST:
        raise pytest.UsageError(
            f"fluxperf under pytest-xdist needs --dist load or loadgroup, not {dist}: each "
            "variant is built and timed on one worker, and its tests must run where it was built"
        )


def check_gpus(workers: int) -> None:
    """One worker per GPU at most, and one GPU model: baselines key on the model, never on the index."""
    import torch

    count = torch.cuda.device_count()
    if 1 <= count < workers:
        raise pytest.UsageError(
            f"-n {workers} puts {workers} workers on {count} GPU(s): workers sharing a GPU "
            "time each other's work. Use -n auto (one worker per visible GPU) or fewer"
        )
    models = {torch.cuda.get_device_name(i) for i in range(count)}
    if len(models) > 1:
        raise pytest.UsageError(
            f"the visible GPUs are different models ({', '.join(sorted(models))}); baselines "
            "key on the GPU model. Set CUDA_VISIBLE_DEVICES to GPUs of one model"
        )


class XdistPlugin:
    """The xdist hooks, registered by the plugin when xdist is installed."""

    def __init__(self, variants: tuple[str, ...]):
        self.variants = set(variants)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_auto_num_workers(self, config):
        """-n auto for the gpu suite on CUDA: one worker per visible GPU; xdist's CPU count otherwise."""
        if selects_gpu_suite(config) and config.getoption("fluxperf_device") in ("cuda", "auto"):
            import torch

            if torch.cuda.device_count() > 0:
                return torch.cuda.device_count()
        return None

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_make_scheduler(self, config, log):
        """Controller: every test of one variant goes to one worker, which builds the variant once.

        xdist's own loadgroup does this by appending `@group` to node ids on the workers, which stopped
        taking effect with pytest 9.2's structured node ids (pytest-xdist issue #1386): the tests of one
        variant were then scattered and each worker built and timed it again. Grouping by the variant in
        the node id works with every pytest, and also under plain -n N (--dist load).
        """
        if not selects_gpu_suite(config) or config.getoption("dist") not in VARIANT_DIST:
            return None
        from xdist.scheduler import LoadScopeScheduling

        names = self.variants

        class VariantScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                # A test of no variant is its own scope: scheduled as --dist load would.
                return variant_of_nodeid(nodeid, names) or nodeid

        return VariantScheduling(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node):
        """Controller: tell each worker the --dist mode, so that it can refuse one that splits a variant."""
        node.workerinput["fluxperf_dist"] = node.config.getoption("dist")

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """Controller: keep what each worker measured (its results dict), for the one merged report."""
        config = node.config
        if WORKER_RESULTS not in config.stash:
            return
        worker = node.workerinput["workerid"]
        config.stash[WORKERS_DOWN][worker] = error
        data = getattr(node, "workeroutput", {}).get("fluxperf")
        if data is not None:
            config.stash[WORKER_RESULTS][worker] = data


def check_controller(config, device: str) -> None:
    """-m gpu under xdist: refuse a bad setup here, with exit code 4. Raised on a worker, a usage error
    reaches the controller only as an xdist internal error that hides the message."""
    check_dist(config.getoption("dist"))
    if device != "cuda":
        return
    import torch

    if torch.cuda.device_count() > 0:
        check_gpus(len(config.getoption("tx")))


def check_worker(config, device: str) -> None:
    """The checks of check_controller, for a run it didn't check (no -m gpu): a worker's variant tests must all
    run on it, and its GPU must be its own and the same model as the others'."""
    check_dist(config.workerinput.get("fluxperf_dist"))
    if device.startswith("cuda"):
        check_gpus(int(config.workerinput["workercount"]))
