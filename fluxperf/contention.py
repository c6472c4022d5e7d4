"""What else shares the machine during each timed call: other work on the GPU, CPU time lost to other processes.

The machine probe measures the resources' speed in short samples between calls; intermittent work from another
process (a few milliseconds at a time) mostly falls between its samples, while a pipeline call of a second always
overlaps it. So beside every timed call this module records, on the call's own time scale:

- gpu_other_busy: the share of a quiet window (this process has nothing queued: the call before it has been
  synchronized) in which NVML saw a kernel running on the device. Nothing of ours runs then, so it is another
  process's work. NVML's device utilization counts every context's kernels, including those of processes whose
  PIDs a container hides.
- gpu_other_procs: other compute processes NVML lists on the device (None where the container hides them all).
- clock_events: clock event reasons NVML reports during the call that slow the clocks for reasons other than
  load (thermal or hardware slowdown, power brake); the GPU probe measures their effect, this names the cause.
- runq_wait_s: seconds this process's threads spent runnable but waiting for a CPU during the call
  (/proc/self/task/*/schedstat): the CPU time other processes took from it.
- cpu_pressure_s: seconds during the call in which some task of the machine (or container) waited for a CPU
  (/proc/pressure/cpu, "some" total), where the kernel has pressure stall information.

Each reading is None where it can't be taken (no NVML, no CUDA, no /proc); the verdicts then judge as before.
"""

from __future__ import annotations

import glob
import math
import os
import statistics
import time
from dataclasses import dataclass

FIELDS = ("gpu_other_busy", "gpu_other_procs", "clock_events", "runq_wait_s", "cpu_pressure_s")

# NVML's clock event reasons (nvmlClocksEventReason*) that mean the clocks were held down by something other
# than this workload's own demand: heat, a hardware or power-brake slowdown. SW power capping is left out: a
# GPU at full load sits at its power cap as a matter of course.
CLOCK_EVENTS = {0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake"}

# The quiet window spans this many of NVML's utilization sample periods, so that at least one sample's whole
# period lies inside it (the first new sample's period straddles the window's start and is not used).
QUIET_PERIODS = 2.5
# NVML samples utilization every 1/6 s to 1 s depending on the product. Past this the window would cost more than
# the calls it watches; GPU sharing is then not sensed (the reading is None) rather than slowing the session.
MAX_QUIET_S = 0.6


def _host_totals() -> tuple[float, float] | None:
    """(CPU seconds, runqueue-wait seconds) summed over this process's threads, from schedstat."""
    cpu = wait = 0.0
    found = False
    for path in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(path) as fh:
                fields = fh.read().split()
        except OSError:  # a thread that ended between the listing and the read
            continue
        cpu += int(fields[0]) / 1e9
        wait += int(fields[1]) / 1e9
        found = True
    return (cpu, wait) if found else None


def _pressure_total() -> float | None:
    """Seconds in which some task waited for a CPU, since boot (PSI), or None without pressure accounting."""
    try:
        with open("/proc/pressure/cpu") as fh:
            for line in fh:
                if line.startswith("some "):
                    return int(line.rsplit("total=", 1)[1]) / 1e6
    except (OSError, ValueError, IndexError):
        return None
    return None


class _Nvml:
    """The NVML readings for one CUDA device; raises RuntimeError where NVML can't be used."""

    def __init__(self, device: str):
        try:
            import pynvml
        except ImportError:
            raise RuntimeError("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
        self.nv = pynvml
        try:
            pynvml.nvmlInit()
            self.handle = self._handle(device)
            self.period_s = self._period()
        except pynvml.NVMLError as exc:
            raise RuntimeError(f"NVML: {exc}") from None

    def _handle(self, device: str):
        import torch

        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        props = torch.cuda.get_device_properties(index)
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            # CUDA_VISIBLE_DEVICES renumbers devices for CUDA but not for NVML: the UUID names the same card.
            try:
                return self.nv.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            except self.nv.NVMLError:
                pass
        # CUDA's index is not NVML's: torch maps it through CUDA_VISIBLE_DEVICES (a private helper, so anything it
        # raises, or its absence, means the card can't be told); CUDA_DEVICE_ORDER it ignores, hence the PCI check.
        try:
            nvml_index = torch.cuda._get_nvml_device_index(index)
        except Exception as exc:
            raise RuntimeError(f"can't tell which NVML device is cuda:{index} ({type(exc).__name__}: {exc})") from None
        handle = self.nv.nvmlDeviceGetHandleByIndex(nvml_index)
        theirs = self.nv.nvmlDeviceGetPciInfo(handle)
        ours = tuple(getattr(props, f"pci_{k}_id", None) for k in ("domain", "bus", "device"))
        if None not in ours and ours != (theirs.domain, theirs.bus, theirs.device):
            raise RuntimeError(
                f"NVML device {nvml_index} is not cuda:{index} (another PCI address; is CUDA_DEVICE_ORDER set?)"
            )
        try:
            mig = self.nv.nvmlDeviceGetMigMode(handle)[0]
        except self.nv.NVMLError:  # a GPU without MIG
            mig = 0
        if mig:
            # The GPU's utilization counts every MIG instance's kernels, not only those sharing this one.
            raise RuntimeError("the GPU is split into MIG instances: NVML can't tell this instance's utilization")
        return handle

    def _samples(self, since_us: int = 0) -> list[tuple[int, float]]:
        try:
            _, samples = self.nv.nvmlDeviceGetSamples(self.handle, self.nv.NVML_GPU_UTILIZATION_SAMPLES, since_us)
        except self.nv.NVMLError:
            return []
        return sorted((s.timeStamp, s.sampleValue.uiVal / 100.0) for s in samples)

    def _period(self) -> float | None:
        stamps = [t for t, _ in self._samples()]
        gaps = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
        return statistics.median(gaps) / 1e6 if gaps else None

    def other_busy(self, window_s: float) -> float | None:
        """Sleep through a quiet window and return the share of it in which a kernel ran on the device."""
        before = self._samples()
        last = before[-1][0] if before else 0
        time.sleep(window_s)
        new = self._samples(last)
        # The first new sample covers a period that began before the window: this process's own call.
        inside = [v for _, v in new[1:]]
        return sum(inside) / len(inside) if inside else None

    def other_procs(self) -> int | None:
        try:
            procs = self.nv.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except self.nv.NVMLError:
            return None
        if not procs:
            return None  # this process holds a context, so an empty list means the PIDs are hidden
        ours = os.getpid()
        # Where PIDs are translated (a container), none matches ours; one entry is still this process.
        return sum(p.pid != ours for p in procs) - (0 if any(p.pid == ours for p in procs) else 1)

    def clock_events(self) -> int | None:
        get = (
            getattr(self.nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or self.nv.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        try:
            return int(get(self.handle))
        except self.nv.NVMLError:
            return None


@dataclass
class Reading:
    """What shared the machine around one timed call."""

    gpu_other_busy: float | None = None
    gpu_other_procs: int | None = None
    clock_events: list | None = None
    runq_wait_s: float | None = None
    cpu_pressure_s: float | None = None


class Sensor:
    """Takes a Reading around each timed call: quiet() just before the probe sample (the previous call has been
    synchronized, so nothing of this process is queued), start() just before the call, stop() once it has been
    synchronized."""

    def __init__(self, device: str):
        self.device = device
        self.nvml: _Nvml | None = None
        self.window_s: float | None = None
        self.why_not_gpu = "the device is not a CUDA GPU"
        if device.startswith("cuda"):
            try:
                self.nvml = _Nvml(device)
            except RuntimeError as exc:
                self.why_not_gpu = str(exc)
            else:
                period = self.nvml.period_s
                if period is None:
                    self.why_not_gpu = "NVML keeps no utilization samples for this device"
                elif QUIET_PERIODS * period > MAX_QUIET_S:
                    self.why_not_gpu = f"NVML samples utilization only every {period:.2f} s"
                else:
                    self.window_s = max(QUIET_PERIODS * period, 0.05)
                    self.why_not_gpu = ""

    def quiet(self) -> float | None:
        """Another process's share of the GPU over a quiet window, or None where it can't be sensed."""
        return self.nvml.other_busy(self.window_s) if self.window_s else None

    def start(self) -> tuple:
        return (self.nvml.clock_events() if self.nvml else None), _host_totals(), _pressure_total()

    def stop(self, token: tuple, quiet_busy: float | None) -> Reading:
        events_before, host_before, pressure_before = token
        host_after, pressure_after = _host_totals(), _pressure_total()
        events = None
        if self.nvml is not None:
            now = self.nvml.clock_events()
            if events_before is not None and now is not None:
                mask = events_before | now
                events = [name for bit, name in CLOCK_EVENTS.items() if mask & bit]
        # Summed over the threads alive at each end: one that ended during the call takes its wait with it.
        wait = max(host_after[1] - host_before[1], 0.0) if host_before and host_after else None
        pressure = (
            pressure_after - pressure_before if pressure_before is not None and pressure_after is not None else None
        )
        return Reading(quiet_busy, self.nvml.other_procs() if self.nvml else None, events, wait, pressure)


def empty() -> dict[str, list]:
    return {k: [] for k in FIELDS}


def append(record: dict[str, list], reading: Reading) -> None:
    for k in FIELDS:
        record.setdefault(k, []).append(getattr(reading, k))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Sharing:
    """How much other work shared the machine over one pipeline's timed calls, and how much of a slowdown that
    could explain at most.

    gpu_busy: mean share of the quiet windows in which another process's kernels ran;
    host_wait: this process's threads' runqueue wait over the calls' wall time, summed over calls: without the
    other processes the calls would have taken at least that share less (capped at 95%, threads' waits add up);
    procs: the most other compute processes listed on the GPU; clocks: clock event reasons seen.
    """

    gpu_busy: float | None = None
    host_wait: float | None = None
    procs: int | None = None
    clocks: tuple = ()

    @property
    def shared(self) -> bool:
        return (self.gpu_busy or 0.0) >= SHARED_GPU_BUSY or (self.host_wait or 0.0) >= SHARED_HOST_WAIT

    def as_dict(self) -> dict:
        """The readings as the verdicts' details and results.json carry them."""
        clocks = list(self.clocks)
        return {"gpu_busy": self.gpu_busy, "host_wait": self.host_wait, "procs": self.procs, "clocks": clocks}

    def explained(self, gpu_weight: float, host_weight: float) -> float:
        """The largest log slowdown the sharing can explain: while another process's kernels run this process's
        wait (at worst all of that time), so the GPU-bound part of a call stretches by up to 1 / (1 - gpu_busy);
        the host-bound part by 1 / (1 - host_wait), as the calls waited that share of their time for a CPU.
        Weighted by how much of the call each bounds."""
        g = -math.log1p(-min(self.gpu_busy or 0.0, 0.95))
        h = -math.log1p(-min(self.host_wait or 0.0, 0.95))
        return gpu_weight * g + host_weight * h


# A session counts as shared from these levels on. On a quiet GPU the quiet windows read 0% (nothing of this
# process runs then); 2% is another process's kernels for 2% of the time, about a 2% slowdown at worst, beside a
# 3% speed tolerance. A process with a core to itself waits for a CPU next to never; waiting 5% of a call's time
# stretches it by 5%, past a GPU-bound pipeline's 3% speed tolerance and most of a host-bound one's 8%.
SHARED_GPU_BUSY = 0.02
SHARED_HOST_WAIT = 0.05


def sharing(record: dict | None, wall_s: list | None) -> Sharing:
    """A pipeline's Sharing from its per-call record (the lists `append` fills) and its calls' wall seconds."""
    if not record:
        return Sharing()
    waits = [(w, t) for w, t in zip(record.get("runq_wait_s") or [], wall_s or []) if w is not None and t]
    host = min(sum(w for w, _ in waits) / sum(t for _, t in waits), 0.95) if waits else None
    procs = [p for p in record.get("gpu_other_procs") or [] if p is not None]
    clocks = sorted({e for events in record.get("clock_events") or [] if events for e in events})
    return Sharing(_mean(record.get("gpu_other_busy") or []), host, max(procs) if procs else None, tuple(clocks))
