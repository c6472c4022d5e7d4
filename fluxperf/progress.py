"""Progress lines, a heartbeat during long steps, and per-phase build times for builds that take minutes."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator

# A step that runs longer than this says so again every HEARTBEAT_S seconds, so a silent log means a dead job.
HEARTBEAT_S = 30.0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def inductor_status() -> str:
    """What torch.compile has done so far, for a heartbeat line; empty where it can't be told."""
    module = sys.modules.get("torch._inductor.metrics")
    count = getattr(module, "generated_kernel_count", None)
    return f"inductor has generated {count} kernels so far" if count else ""


class Progress:
    """One session's progress lines: the plugin routes them to pytest's terminal writer so they show while
    pytest captures the tests' output. Variants get it as params["progress"]."""

    def __init__(
        self,
        sink: Callable[[str], None] = _stderr,
        heartbeat_s: float = HEARTBEAT_S,
        status: Callable[[], str] = inductor_status,
    ):
        self.sink, self.heartbeat_s, self.status = sink, heartbeat_s, status
        self._label = "fluxperf"
        self._phases: dict[str, float] = {}
        self._start = time.perf_counter()
        self._steps: list[str] = []  # the steps running now, innermost last
        self._lock = threading.Lock()  # the heartbeat thread writes too

    def begin(self, label: str) -> None:
        """Start a new build: progress lines are prefixed with `label` and phase times reset."""
        self._label, self._start = label, time.perf_counter()
        self._phases.clear()

    def phases(self) -> dict[str, float]:
        """Seconds per named phase of the current build (e.g. {"calibration_s": 93.1})."""
        return dict(self._phases)

    def say(self, message: str) -> None:
        with self._lock:
            self.sink(f"[fluxperf] {self._label}: {message} (+{time.perf_counter() - self._start:.1f} s)")

    def _beat(self, message: str, t0: float, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_s):
            if self._steps and self._steps[-1] == message:  # only the innermost step speaks
                status = self.status()
                self.say(
                    f"{message}: still running after {time.perf_counter() - t0:.0f} s"
                    + (f" ({status})" if status else "")
                )

    @contextlib.contextmanager
    def step(self, message: str, key: str | None = None) -> Iterator[None]:
        """Announce a step, repeat it every heartbeat_s while it runs, and on success record its duration
        under `key` (a name ending in _s)."""
        self.say(f"{message} ...")
        t0 = time.perf_counter()
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(message, t0, done), daemon=True, name="fluxperf-heartbeat")
        self._steps.append(message)
        beat.start()
        try:
            yield
        finally:
            done.set()
            self._steps.pop()
        elapsed = time.perf_counter() - t0
        if key:
            self._phases[key] = self._phases.get(key, 0.0) + elapsed
        self.say(f"{message} done in {elapsed:.1f} s")
