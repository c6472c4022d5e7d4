"""Progress lines and per-phase build times for builds that take minutes."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

_sink: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
_label = "fluxperf"
_phases: dict[str, float] = {}
_start = time.perf_counter()


def set_sink(sink: Callable[[str], None]) -> None:
    """The plugin routes lines to pytest's terminal writer so they show with output capturing on."""
    global _sink
    _sink = sink


def begin(label: str) -> None:
    """Start a new build: progress lines are prefixed with `label` and phase times reset."""
    global _label, _start
    _label, _start = label, time.perf_counter()
    _phases.clear()


def phases() -> dict[str, float]:
    """Seconds per named phase of the current build (e.g. {"calibration_s": 93.1})."""
    return dict(_phases)


def say(message: str) -> None:
    _sink(f"[fluxperf] {_label}: {message} (+{time.perf_counter() - _start:.1f} s)")


@contextlib.contextmanager
def step(message: str, key: str | None = None) -> Iterator[None]:
    """Announce a step, and on success record its duration under `key` (a name ending in _s)."""
    say(f"{message} ...")
    t0 = time.perf_counter()
    yield
    elapsed = time.perf_counter() - t0
    if key:
        _phases[key] = _phases.get(key, 0.0) + elapsed
    say(f"{message} done in {elapsed:.1f} s")
