"""The timing protocol: which pipeline renders which image in what order, and one timed call with the machine sensed
around it. The schedule functions are pure; the bench and the tests' simulated sessions both lay rounds out by them.
"""

from __future__ import annotations

from typing import Callable

from fluxperf import contention, timing
from fluxperf.pipelines import StepCounter, to_u8
from fluxperf.result import Call, Timings

# Untimed rounds after every build, for eager as for the variant: latency keeps falling for a few images after a
# build (allocator, clocks, autotuning caches).
WARMUP_ROUNDS = 2
# A baseline is the yardstick for every later session, so it is recorded with more rounds than a check takes.
BASELINE_ROUNDS = 20


def order(r: int) -> tuple[bool, ...]:
    """Round r's calls, True for eager's: eager first on even rounds, the variant first on odd ones, so that a
    linear drift within the session cancels."""
    return (True, False) if r % 2 == 0 else (False, True)


def paired(start: int, k: int, n_items: int, alone: bool = False) -> list[tuple[int, tuple[bool, ...]]]:
    """Rounds start .. start + k - 1 of the paired design: (item index, the calls in order). `alone`: the variant is
    eager itself, timed once per round."""
    return [(r % n_items, (False,) if alone else order(r)) for r in range(start, start + k)]


def block(start: int, k: int, n_items: int, eager: bool) -> list[tuple[int, tuple[bool, ...]]]:
    """Calls start .. start + k - 1 of one pipeline's block (the blocks design, for in-place variants), as paired()
    lays out its rounds."""
    return [((start + i) % n_items, (eager,)) for i in range(k)]


class Timer:
    """Times pipeline calls for one session: the machine probe and the sharing sensed beside every call, a time
    limit around it. `render(pipe, item)` makes one call; `limit(what)` is the per-call time limit."""

    def __init__(self, device: str, render: Callable, limit: Callable, say: Callable[[str], None]):
        self.device, self.render, self.limit, self.say = device, render, limit, say
        self._probe = self._sensor = None

    @property
    def probe(self):
        if self._probe is None:
            from fluxperf.probe import Probe

            self._probe = Probe(self.device)
        return self._probe

    @property
    def sensor(self) -> contention.Sensor:
        if self._sensor is None:
            self._sensor = contention.Sensor(self.device)
            if self._sensor.why_not_gpu and self.device.startswith("cuda"):
                self.say(f"other work on the GPU is not sensed: {self._sensor.why_not_gpu}")
        return self._sensor

    def call(self, pipe, item, eager: bool, who: str, warmup: bool = False):
        """One timed call with the machine sensed around it (the quiet window and the probe sample before it, the
        host's counters across it): its Call and its image."""
        quiet = None if warmup else self.sensor.quiet()  # warm-up calls are not judged: no window for them
        sample = self.probe.sample()
        counter = StepCounter.on(pipe)
        before = counter.count
        if not eager:
            timing.reset_peak(self.device)
        token = self.sensor.start()
        with self.limit(f"a timed call of {who}"):
            wall, cpu, out = timing.timed(lambda: self.render(pipe, item), self.device)
        reading = self.sensor.stop(token, quiet)
        peak = None if eager else timing.peak_gb(self.device)
        return Call(eager, wall, sample, reading, cpu, counter.count - before, peak, warmup), out

    def rounds(
        self, pipes: dict, items, plan, who: str, warmup: bool = False, into: Timings | None = None
    ) -> tuple[Timings, dict]:
        """The calls of a plan (paired() or block()); pipes: {True: eager's, False: the variant's}. Adds them to
        `into` (new Timings by default), call by call, and returns it with the variant's first image of each item."""
        timings, images = into if into is not None else Timings(self.device), {}
        for index, calls in plan:
            for eager in calls:
                call, out = self.call(pipes[eager], items[index], eager, "eager" if eager else who, warmup)
                timings.add(call)
                if not eager and not warmup:
                    images.setdefault(items[index], to_u8(out))
        return timings, images
