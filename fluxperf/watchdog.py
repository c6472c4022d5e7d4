"""Time limits on a variant's phases, and a termination signal turned into an orderly end of the session.

A build can run for many minutes (a cold compile with autotuning) or never end; one variant must not cost the
whole session. `limit()` raises PhaseTimeout in the main thread when a phase outlives its limit: the variant fails
with the phase and the time it took, and the session goes on with the next one. The limit is a SIGALRM timer, so
it interrupts Python code (a compile, an autotuning loop, a pipeline call between kernels); a call stuck inside a
C function that never returns to Python is interrupted only when it does. Inductor catches Exception in places
(autotuning, its heuristics), which would swallow one PhaseTimeout: the timer fires again every REPEAT_S while the
phase is past its deadline.

`on_terminate()` makes SIGTERM (what a CI job's time limit sends, before SIGKILL) end the session the way Ctrl-C
(SIGINT) does: pytest unwinds and runs its session-finish hooks, which write the reports, the summary and the
baseline update for whatever finished.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator


class PhaseTimeout(Exception):
    """A phase of a variant outlived its limit."""

    def __init__(self, phase: str, limit_s: float, elapsed_s: float, option: str):
        self.phase, self.limit_s, self.elapsed_s, self.option = phase, limit_s, elapsed_s, option
        super().__init__(
            f"{phase} was stopped after {elapsed_s:.0f} s, past its limit of {limit_s:g} s "
            f"({option}={limit_s:g}); the session goes on with the next variant. If it is expected to "
            f"take longer, raise the limit with {option}=SECONDS (0: no limit)"
        )


def timeout_in(exc: BaseException | None) -> PhaseTimeout | None:
    """The PhaseTimeout behind an exception, if any: torch.compile wraps an exception raised inside it (inductor's
    BackendCompilerFailed and InductorError), so a limit that fires mid-compile arrives as one of those."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PhaseTimeout):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "inner_exception", None) or exc.__cause__ or exc.__context__
    return None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# Once a phase is past its deadline the timer repeats this often until the phase ends, so a handler that swallowed
# the PhaseTimeout is interrupted again. 5 s lets the cleanup that runs as the exception unwinds (finally blocks,
# closing compile workers) finish before a repeat lands in it, and keeps the overrun small beside the limits
# themselves (minutes).
REPEAT_S = 5.0
_active: list[tuple[float, str, float, str]] = []  # (deadline, phase, limit_s, option), innermost last


def _arm() -> None:
    if not _active:
        signal.setitimer(signal.ITIMER_REAL, 0)  # clears the repeat too: a finished phase's timer never fires
        return
    deadline = min(d for d, *_ in _active)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 1e-3), REPEAT_S)


def _expired(signum, frame) -> None:
    now = time.monotonic()
    due = [a for a in _active if a[0] <= now + 1e-3]
    if not due:
        _arm()  # a limit that has since ended; the next one is armed again
        return
    deadline, phase, limit_s, option = min(due)
    raise PhaseTimeout(phase, limit_s, limit_s + now - deadline, option)


@contextlib.contextmanager
def limit(seconds: float | None, phase: str, option: str) -> Iterator[None]:
    """Raise PhaseTimeout if the block runs longer than `seconds` (None or 0: no limit). Limits nest: the
    earliest deadline fires, naming its own phase. Only in the main thread, where signals are delivered."""
    if not seconds or not _main_thread():
        yield
        return
    entry = (time.monotonic() + seconds, phase, seconds, option)
    previous = signal.signal(signal.SIGALRM, _expired) if not _active else None
    _active.append(entry)
    _arm()
    try:
        yield
    finally:
        # An alarm raising here before the entry is removed would leave it behind, and a later limit would fail at
        # once naming this phase: SIGALRM is held back while the entry goes, and the removal runs even if the alarm
        # lands before it is held back. Held back, it is delivered on unblocking and finds the entry gone. The mask
        # is the main thread's: a SIGALRM another thread takes narrows the window rather than closing it.
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        finally:
            try:
                _active.remove(entry)
                _arm()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
                # Only once a held-back alarm has been handled: under the default handler it would end the process.
                if previous is not None:
                    signal.signal(signal.SIGALRM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(
        f"fluxperf: {signal.Signals(signum).name} received: ending the session and writing the reports of what finished"
    )


def on_terminate() -> object | None:
    """Route SIGTERM to KeyboardInterrupt for the rest of the session; returns the previous handler (for
    restore()), or None where signals can't be set (not the main thread)."""
    if not _main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def restore(previous) -> None:
    if previous is not None and _main_thread():
        signal.signal(signal.SIGTERM, previous)
