"""pytest-xdist support in pieces: each worker's GPU, the scheduler's grouping by variant, and the merge of the
workers' results (tests/e2e/test_xdist_suite.py runs the whole)."""

import pytest

from fluxperf import report
from fluxperf.xdist import pinned_device, variant_of_nodeid


def test_pinned_device_gives_each_worker_its_own_gpu():
    assert [pinned_device("cuda", f"gw{n}", 4) for n in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]
    # One GPU, no GPU, CPU, or no xdist: nothing changes.
    assert pinned_device("cuda", "gw1", 1) == "cuda"
    assert pinned_device("cuda", "gw1", 0) == "cuda"
    assert pinned_device("cpu", "gw1", 4) == "cpu"
    assert pinned_device("cuda", None, 4) == "cuda"


def test_the_scheduler_finds_the_variant_in_the_node_id():
    names = {"eager", "twin", "pruna_cache"}
    assert variant_of_nodeid("test_speed.py::test_benchmark[twin]", names) == "twin"
    assert variant_of_nodeid("test_speed.py::test_benchmark[twin]@twin", names) == "twin"  # pytest < 9.2 loadgroup
    assert variant_of_nodeid("test_q.py::test_x[pruna_cache-3]", names) == "pruna_cache"
    assert variant_of_nodeid("test_q.py::test_x[other]", names) is None
    assert variant_of_nodeid("test_q.py::test_plain", names) is None


def test_merge_refuses_a_variant_measured_by_two_workers():
    part = lambda *names: {
        "variants": {n: {"worker": None} for n in names},
        "determinism": None,
        "baseline_found": False,
        "scenario": {"device": "cpu"},
        "environment": {"gpu": "cpu"},
    }
    merged = report.merge({"gw1": part("twin"), "gw0": part("eager")}, ["eager", "twin"], "cpu")
    assert list(merged["variants"]) == ["eager", "twin"] and list(merged["workers"]) == ["gw0", "gw1"]
    with pytest.raises(ValueError, match="variant twin was measured by both"):
        report.merge({"gw0": part("eager", "twin"), "gw1": part("twin")}, ["eager", "twin"], "cpu")
