"""Progress lines and per-phase build times for builds that take minutes."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Progress:
    """One session's progress lines: the plugin routes them to pytest's terminal writer so they show while
    pytest captures the tests' output. Variants get it as params["progress"]."""

    def __init__(self, sink: Callable[[str], None] = _stderr):
        self.sink = sink
        self._label = "fluxperf"
        self._phases: dict[str, float] = {}
        self._start = time.perf_counter()

    def begin(self, label: str) -> None:
        """Start a new build: progress lines are prefixed with `label` and phase times reset."""
        self._label, self._start = label, time.perf_counter()
        self._phases.clear()

    def phases(self) -> dict[str, float]:
        """Seconds per named phase of the current build (e.g. {"calibration_s": 93.1})."""
        return dict(self._phases)

    def say(self, message: str) -> None:
        self.sink(f"[fluxperf] {self._label}: {message} (+{time.perf_counter() - self._start:.1f} s)")

    @contextlib.contextmanager
    def step(self, message: str, key: str | None = None) -> Iterator[None]:
        """Announce a step, and on success record its duration under `key` (a name ending in _s)."""
        self.say(f"{message} ...")
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
        if key:
            self._phases[key] = self._phases.get(key, 0.0) + elapsed
        self.say(f"{message} done in {elapsed:.1f} s")
