"""Fixtures shared by the tests: the real suite run on the tiny model in pytest sessions, in this process or in a
fresh interpreter (tests/sessions.py holds their arguments and variants).

Most sessions run in this process (suite(..., inprocess=True), see in_this_process): torch, diffusers and
transformers are imported once for the whole test run instead of once per session, which was most of a session's
time on the tiny model. A session runs in a fresh interpreter where it needs one: pytest-xdist and torchrun sessions
(more processes), and what reads the environment when first imported (huggingface_hub's HF_HUB_OFFLINE). A session
that compiles runs in this process between two resets of dynamo (tests.sessions.own_dynamo).
"""

import os
import sys

import pytest
from _pytest.pytester import SysModulesSnapshot

from fluxperf import variants
from tests.sessions import CONFTEST, PERF, REPO, SMALL


@pytest.fixture(scope="session")
def inductor_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("inductor")


@pytest.fixture(scope="session")
def heavy_imports():
    """Imported before any pytester snapshot is taken, for in-process sessions: transformers adds a finder to
    sys.meta_path when first imported (its legacy module names), and pytester's snapshots would remove the finder
    while transformers itself stays imported."""
    import diffusers  # noqa: F401
    import transformers  # noqa: F401


@pytest.fixture
def in_this_process(pytester, monkeypatch, heavy_imports):
    """Runs pytest sessions in this process, each as a fresh interpreter would start it.

    pytester drops every module a test imported, after each in-process run and after the test. Imported again,
    torch's submodules register their operators a second time ("Only a single TORCH_LIBRARY can be used to register
    the namespace ...") and diffusers and transformers cost seconds: they stay imported. The files written under
    pytester.path are still dropped, so each session imports the suite and its conftest.py afresh, and conftest.py
    registers its variants again, in a registry that starts from the shipped variants (tests.slowdown, too,
    replaces entries in that session's registry only).
    """
    import torch

    root = str(pytester.path) + os.sep

    def keep(name: str) -> bool:
        return not (getattr(sys.modules.get(name), "__file__", None) or "").startswith(root)

    # Private to pytester; if they change, these raise AttributeError here rather than misbehave later.
    monkeypatch.setattr(pytester, "_sys_modules_snapshot", SysModulesSnapshot(preserve=keep))
    monkeypatch.setattr(pytester, "_Pytester__take_sys_modules_snapshot", lambda: SysModulesSnapshot(preserve=keep))
    variants.names()  # imports every shipped variant module once, so that the copy below holds them all
    shipped = dict(variants._REGISTRY)

    def run(*args):
        monkeypatch.setattr(variants, "_REGISTRY", dict(shipped))
        # One thread, as the suite fixture gives a fresh interpreter (OMP_NUM_THREADS=1): the same images, to the bit.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):  # the tiny model seeds torch's global generator
                return pytester.runpytest_inprocess(*args)
        finally:
            torch.set_num_threads(threads)

    return run


@pytest.fixture
def suite(pytester, monkeypatch, inductor_cache, in_this_process):
    """run(*args) runs the suite at SMALL's scenario in a fresh interpreter; run(*args, inprocess=True) in this one
    (in_this_process); run.exactly(*args) runs pytest with just these arguments, in this process."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # One torch.compile cache for every session of the test run: each compiles the same tiny graphs.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    # One thread per session process: two xdist workers or torchrun ranks with a thread per core each
    # oversubscribe this 2-core machine (a 15 s session took 50 s), and the tiny model gains nothing from a second.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makeconftest(CONFTEST)
    for path in PERF.glob("test_*.py"):
        pytester.makepyfile(**{path.stem: path.read_text()})
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")

    def run(*args, slowdown=None, inprocess=False):
        if slowdown:
            monkeypatch.setenv("FLUXPERF_TEST_SLOWDOWN", slowdown)
        else:
            monkeypatch.delenv("FLUXPERF_TEST_SLOWDOWN", raising=False)
        cache, base, rep = (pytester.path / d for d in ("cache", "baselines", "reports"))
        args = (
            *SMALL,
            f"--fluxperf-cache-dir={cache}",
            f"--fluxperf-baseline-dir={base}",
            f"--fluxperf-report-dir={rep}",
            *args,
        )
        return run.exactly(*args) if inprocess else pytester.runpytest_subprocess(*args)

    run.exactly = in_this_process
    run.reports = pytester.path / "reports"
    return run
