"""Sensing what shares the machine: NVML's quiet-window reading (with a stand-in NVML), the host's runqueue wait
(for real, beside busy processes), and the speed rule's answer when the machine was shared."""

from __future__ import annotations

import math
import multiprocessing
import sys
import time
import types
from dataclasses import replace

import numpy as np
import pytest

from fluxperf import contention, verdicts
from fluxperf.messages import Context
from fluxperf.result import Timings
from fluxperf.rules import FAIL, INCONCLUSIVE, PASS, WARN

CTX = Context("baselines/x.json", "pytest -m gpu --fluxperf-update-baselines")


class FakeNvml(types.ModuleType):
    """pynvml as far as contention uses it: a utilization sample every `period_s`, valued by `busy(t)`."""

    NVML_GPU_UTILIZATION_SAMPLES = 1

    class NVMLError(Exception):
        pass

    def __init__(self, busy, period_s=0.02, procs=(), events=0):
        super().__init__("pynvml")
        self.busy, self.period_us, self.procs, self.events = busy, int(period_s * 1e6), list(procs), events
        self.start = int(time.time() * 1e6)

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetSamples(self, handle, kind, since_us):
        now = int(time.time() * 1e6)
        first = self.start - 40 * self.period_us
        stamps = range(first, now, self.period_us)
        sample = lambda t: types.SimpleNamespace(timeStamp=t, sampleValue=types.SimpleNamespace(uiVal=self.busy(t)))
        return 1, [sample(t) for t in stamps if t > since_us]

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [types.SimpleNamespace(pid=p) for p in self.procs]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.events


def nvml(monkeypatch, fake) -> contention._Nvml:
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(contention._Nvml, "_handle", lambda self, device: 0)
    return contention._Nvml("cuda:0")


def test_the_quiet_window_reads_other_work_and_leaves_out_the_sample_that_overlaps_our_own_call(monkeypatch):
    stamp = {}
    # A sample stamped t covers the period before it: 100% busy for a period that began before the window opened
    # (this process's own call ran in it), 30% for one wholly inside the window (another process).
    fake = FakeNvml(lambda t: 100 if t - fake.period_us <= stamp.get("open", 1 << 62) else 30)
    reader = nvml(monkeypatch, fake)
    assert reader.period_s == pytest.approx(0.02)
    stamp["open"] = int(time.time() * 1e6)
    assert reader.other_busy(0.1) == pytest.approx(0.30)


def test_a_quiet_gpu_reads_zero_and_too_short_a_window_reads_nothing(monkeypatch):
    reader = nvml(monkeypatch, FakeNvml(lambda t: 0))
    assert reader.other_busy(0.1) == 0.0
    slow = nvml(monkeypatch, FakeNvml(lambda t: 50, period_s=0.5))
    assert slow.other_busy(0.05) is None  # no whole sample period inside the window


def test_other_processes_and_clock_events(monkeypatch):
    import os

    ours = os.getpid()
    assert nvml(monkeypatch, FakeNvml(lambda t: 0, procs=[ours, 4242])).other_procs() == 1
    # In a container the PIDs are translated: none is ours, one entry still is.
    assert nvml(monkeypatch, FakeNvml(lambda t: 0, procs=[17, 18, 19])).other_procs() == 2
    assert nvml(monkeypatch, FakeNvml(lambda t: 0, procs=[])).other_procs() is None
    sensor = contention.Sensor("cpu")
    sensor.nvml = nvml(monkeypatch, FakeNvml(lambda t: 0, events=0x40 | 0x4))
    reading = sensor.stop(sensor.start(), 0.12)
    assert reading.clock_events == ["hw_thermal"] and reading.gpu_other_busy == 0.12  # SW power cap is left out


class Card(FakeNvml):
    """FakeNvml with several cards (handles are NVML indices), the UUID lookup failing, PCI addresses and MIG."""

    def __init__(self, pci_bus=(0x1A, 0x3B, 0x5C, 0x7E), mig=0, init_error=None):
        super().__init__(lambda t: 0)
        self.pci_bus, self.mig, self.init_error = pci_bus, mig, init_error

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise self.NVMLError("Not Found")

    def nvmlDeviceGetPciInfo(self, handle):
        return types.SimpleNamespace(domain=0, bus=self.pci_bus[handle], device=0)

    def nvmlDeviceGetMigMode(self, handle):
        if self.mig is None:
            raise self.NVMLError("Not Supported")
        return [self.mig, self.mig]


def _cuda(monkeypatch, card, nvml_index, bus=0x5C):
    """cuda:0 is the card at PCI bus `bus`; torch maps it to NVML's `nvml_index` (a function of it: raise)."""
    import torch

    monkeypatch.setitem(sys.modules, "pynvml", card)
    props = types.SimpleNamespace(uuid="0f3c", pci_domain_id=0, pci_bus_id=bus, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    mapping = nvml_index if callable(nvml_index) else {0: nvml_index}.__getitem__
    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", mapping, raising=False)
    return contention.Sensor("cuda:0")


def test_without_the_uuid_the_cuda_index_is_mapped_to_nvmls_or_the_gpu_is_not_sensed(monkeypatch):
    # CUDA_VISIBLE_DEVICES=2: cuda:0 is NVML's device 2, not its device 0.
    sensor = _cuda(monkeypatch, Card(), 2)
    assert sensor.nvml.handle == 2 and sensor.why_not_gpu == ""

    def hidden(index):
        raise RuntimeError("device 0 is not visible (CUDA_VISIBLE_DEVICES=[])")

    sensor = _cuda(monkeypatch, Card(), hidden)
    assert sensor.nvml is None and sensor.quiet() is None
    assert sensor.why_not_gpu == (
        "can't tell which NVML device is cuda:0 (RuntimeError: device 0 is not visible (CUDA_VISIBLE_DEVICES=[]))"
    )
    # CUDA_DEVICE_ORDER=FASTEST_FIRST on mixed cards: the index torch gives is another card.
    sensor = _cuda(monkeypatch, Card(), 1)
    assert sensor.nvml is None and "NVML device 1 is not cuda:0 (another PCI address" in sensor.why_not_gpu
    sensor = _cuda(monkeypatch, Card(mig=1), 2)
    assert sensor.nvml is None and "MIG instances" in sensor.why_not_gpu
    assert _cuda(monkeypatch, Card(mig=None), 2).nvml.handle == 2  # a GPU without MIG


def test_nvml_failing_to_start_leaves_the_gpu_not_sensed_with_the_reason(monkeypatch):
    sensor = _cuda(monkeypatch, Card(init_error="Driver Not Loaded"), 2)
    assert sensor.nvml is None and sensor.window_s is None and sensor.why_not_gpu == "NVML: Driver Not Loaded"
    reading = sensor.stop(sensor.start(), sensor.quiet())
    assert (reading.gpu_other_busy, reading.gpu_other_procs, reading.clock_events) == (None, None, None)


def test_a_thread_that_ends_during_the_call_never_makes_the_runqueue_wait_negative(monkeypatch):
    totals = iter([(5.0, 2.0), (5.5, 1.5)])  # the ended thread's 0.6 s of wait left the sum
    monkeypatch.setattr(contention, "_host_totals", lambda: next(totals))
    sensor = contention.Sensor("cpu")
    assert sensor.stop(sensor.start(), None).runq_wait_s == 0.0


@pytest.mark.parametrize("duty", ["0", "-0.1", "1.5"])
def test_the_gpu_neighbour_refuses_a_duty_it_cannot_keep(duty):
    import subprocess
    from pathlib import Path

    script = Path(__file__).parents[2] / "scripts" / "gpu-neighbour.py"
    done = subprocess.run([sys.executable, str(script), "--duty", duty], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"--duty: {duty} is not a share of the time above 0 and at most 1" in done.stderr


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_runqueue_wait_shows_other_processes_taking_the_cores():
    """For real: this process computes for 1.5 s of CPU while as many busy processes as cores compete."""
    sensor = contention.Sensor("cpu")
    if contention._host_totals() is None:
        pytest.skip("no /proc/self/task/*/schedstat on this machine")

    def measure():
        token = sensor.start()
        cpu0 = time.process_time()
        while time.process_time() - cpu0 < 0.5:
            pass
        reading = sensor.stop(token, None)
        return reading.runq_wait_s / (time.process_time() - cpu0)  # seconds waited per CPU second

    alone = measure()
    ctx = multiprocessing.get_context("fork")
    hogs = [ctx.Process(target=_spin, args=(6.0,)) for _ in range(multiprocessing.cpu_count())]
    for h in hogs:
        h.start()
    try:
        time.sleep(0.2)
        crowded = measure()
    finally:
        for h in hogs:
            h.kill()
            h.join()
    # As many hogs as cores beside this process: it gets at most cores/(cores+1) of a core, so it waits at least
    # 1/cores seconds per CPU second more than it did (the machine may be busy already: others share it too).
    assert crowded > alone + 0.8 / multiprocessing.cpu_count(), (alone, crowded)


def test_sharing_sums_runqueue_wait_over_wall_time_and_knows_when_the_machine_was_shared():
    record = {
        "gpu_other_busy": [0.0, 0.3, None],
        "gpu_other_procs": [None, 1, 2],
        "clock_events": [[], ["hw_slowdown"], None],
        "runq_wait_s": [0.1, 0.0, None],
        "cpu_pressure_s": [None] * 3,
    }
    sh = contention.sharing(record, [0.9, 1.1, 1.0])
    assert sh.gpu_busy == pytest.approx(0.15) and sh.host_wait == pytest.approx(0.1 / 2.0)  # of the calls' wall
    assert sh.procs == 2 and sh.clocks == ("hw_slowdown",) and sh.shared
    assert not contention.sharing({"gpu_other_busy": [0.0, 0.01]}, [1.0, 1.0]).shared
    # What it can explain: all of the GPU share's stretch, weighted by how much of a call the GPU bounds.
    assert sh.explained(1.0, 0.0) == pytest.approx(-math.log(0.85))
    assert sh.explained(0.9, 0.1) == pytest.approx(-0.9 * math.log(0.85) - 0.1 * math.log(0.95))


# ----- the rule's table for a shared machine (README, "When the machine is shared") -------------------------------

PROBE = {"matmul_s": [1e-4] * 20, "copy_s": [1e-4] * 20, "launch_s": [1e-4] * 20}


def _run(factor, gpu_busy=None, seed=0):
    """20 calls of a GPU-bound pipeline; `gpu_busy`: another process's share of every quiet window before them."""
    samples = 1.23 * factor * np.exp(np.random.default_rng(seed).normal(0, 0.005, 20))
    record = {**contention.empty(), "gpu_other_busy": [gpu_busy] * 20}
    return Timings(
        samples_s=list(samples),
        eager_samples_s=[2.2] * 20,
        probe=PROBE,
        eager_probe=PROBE,
        contention=record,
        recorded={"bound": "gpu", "gpu_busy": 0.94},
    )


@pytest.mark.parametrize(
    "factor, busy, status, words",
    [
        (1.00, None, PASS, ""),  # quiet, unchanged
        (1.10, None, FAIL, "compile regressed"),  # quiet, 10% slower
        (1.00, 0.20, PASS, "within the tolerance even so"),  # shared, unchanged and still fast
        (1.08, 0.20, INCONCLUSIVE, "not judged"),  # shared, slower by what sharing explains
        (1.15, 0.20, INCONCLUSIVE, "not judged"),  # a real 15% regression hidden by 20% sharing
        (1.40, 0.20, FAIL, "beyond what the sharing explains"),  # far beyond: still caught
    ],
)
def test_the_shared_machine_rule(factor, busy, status, words):
    v = verdicts.judge_speed("compile", _run(factor, busy, 1), _run(1.0, seed=2), 0.03, CTX, final=True)
    assert v.status == status and words in v.message, v.message
    if busy:
        assert "the machine was shared: another process kept the GPU busy 20% of the time" in v.message
        assert v.details["shared"] and v.details["explained"] == pytest.approx(-0.94 * math.log(0.8))


def test_the_stack_rule_does_not_name_a_suspect_for_what_sharing_explains():
    ctx = replace(CTX, changes=("torch 2.11.0 → 2.12.0",))
    now, base = _run(1.10, 0.20, 1), _run(1.0, seed=2)
    v = verdicts.judge_stack("compile", now, base, 0.05, ctx)
    assert v.status == WARN and "not judged" in v.message, v.message
    quiet = verdicts.judge_stack("compile", replace(now, contention=contention.empty()), base, 0.05, ctx)
    assert quiet.status == FAIL and "suspects: torch" in quiet.message, quiet.message


def _pipeline(factor, eager, bound, host=1.0, host_wait=None, gpu_busy=None, seed=0):
    """20 rounds of a pipeline `factor` and eager `eager` times their baseline's latency, on a host whose probe
    runs `host` times the baseline's; `host_wait`: the share of the calls' time its threads waited for a CPU."""
    rng = np.random.default_rng(seed)
    samples = 1.0 * factor * np.exp(rng.normal(0, 0.01, 20))
    eager_s = 2.2 * eager * np.exp(rng.normal(0, 0.01, 20))
    probe = {**PROBE, "launch_s": [1e-4 * host] * 20}
    record = {
        **contention.empty(),
        "gpu_other_busy": [gpu_busy] * 20,
        "runq_wait_s": [host_wait * s if host_wait else None for s in samples],
    }
    return Timings(
        samples_s=list(samples),
        eager_samples_s=list(eager_s),
        probe=probe,
        eager_probe=probe,
        contention=record,
        recorded={"bound": bound, "gpu_busy": 0.94 if bound == "gpu" else 0.67},
    )


@pytest.mark.parametrize(
    "bound, factor, eager, tol, case, words",
    [
        ("host", 1.30, 1.30, 0.08, "host slower", "the host is slower than its probe shows"),
        ("gpu", 1.20, 1.25, 0.03, "eager slower", "eager is slower by at least as much"),
    ],
)
def test_sharing_never_makes_the_verdict_harsher_than_on_a_quiet_machine(bound, factor, eager, tol, case, words):
    """The whole pipeline slower, eager as much as the variant: the quiet rule warns instead of failing, and so
    must the shared one, whose FAIL only ever needs more evidence."""
    base = _pipeline(1.0, 1.0, bound, seed=2)
    shared = {"host_wait": 0.06} if bound == "host" else {"gpu_busy": 0.03}
    for sharing in ({}, shared):
        now = _pipeline(factor, eager, bound, seed=1, **sharing)
        v = verdicts.judge_speed("cache", now, base, tol, CTX, eager_bound=bound, final=True)
        assert v.status == WARN and v.details["case"] == case and words in v.message, v.message
        assert bool(v.details.get("shared")) == bool(sharing), v.message
        if sharing:
            assert "the machine was shared" in v.message, v.message


def test_a_faster_host_does_not_let_a_shared_session_pass_a_regression():
    """Host-bound, 15% slower net of a host whose probe is 25% faster: its raw latency is below the baseline's,
    but the rule that PASSes a shared session on raw latency must not pass what the quiet rule fails."""
    base = _pipeline(1.0, 1.0, "host", seed=2)
    quiet = _pipeline(1.15 * 0.75, 0.75, "host", host=0.75, seed=1)
    v = verdicts.judge_speed("cache", quiet, base, 0.08, CTX, eager_bound="host", final=True)
    assert v.status == FAIL and v.details["case"] == "regressed", v.message
    shared = _pipeline(1.15 * 0.75, 0.75, "host", host=0.75, host_wait=0.06, seed=1)
    v = verdicts.judge_speed("cache", shared, base, 0.08, CTX, eager_bound="host", final=True)
    assert v.details["shared"] and v.details["raw"][2] < math.log1p(0.08), v.message  # fast before the probe
    assert v.status in (FAIL, INCONCLUSIVE), v.message
