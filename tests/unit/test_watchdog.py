"""Time limits on a phase and heartbeats during a long one (tests/e2e/test_time_limits.py: a session with a build
past its limit, and one stopped by SIGTERM)."""

import signal
import threading
import time

import pytest

from fluxperf import watchdog
from fluxperf.progress import Progress


def test_a_phase_past_its_limit_raises_naming_the_phase_and_the_option():
    start = time.monotonic()
    with pytest.raises(watchdog.PhaseTimeout) as info:
        with watchdog.limit(0.2, "compile's build and warm-up call", "--fluxperf-build-timeout"):
            time.sleep(5)
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert message.startswith("compile's build and warm-up call was stopped after 0 s, past its limit of 0.2 s")
    assert "--fluxperf-build-timeout=SECONDS" in message


def test_nested_limits_fire_the_earliest_and_a_finished_one_never_fires():
    with pytest.raises(watchdog.PhaseTimeout) as info:
        with watchdog.limit(5, "the build", "--fluxperf-build-timeout"):
            with watchdog.limit(0.1, "a call", "--fluxperf-call-timeout"):
                pass  # ends in time: its deadline must not fire later
            with watchdog.limit(0.2, "another call", "--fluxperf-call-timeout"):
                time.sleep(3)
    assert info.value.phase == "another call"
    with watchdog.limit(0.1, "quick", "--fluxperf-call-timeout"):
        pass
    time.sleep(0.3)  # nothing armed any more: no stray SIGALRM
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_phase_that_swallows_the_timeout_is_stopped_all_the_same(monkeypatch):
    """Inductor catches Exception in places (autotuning, its heuristics): a limit that fired once into such a
    handler must fire again while the phase is past its deadline."""
    monkeypatch.setattr(watchdog, "REPEAT_S", 0.2)
    start = time.monotonic()
    swallowed = 0
    with pytest.raises(watchdog.PhaseTimeout) as info:
        with watchdog.limit(0.2, "autotuning", "--fluxperf-build-timeout"):
            while time.monotonic() - start < 3:
                try:
                    time.sleep(0.05)
                except Exception:
                    swallowed += 1
                    if swallowed == 2:
                        time.sleep(0.5)  # the swallowing handler's own work, past one repeat: not let off
    assert swallowed >= 2 and time.monotonic() - start < 1.5
    assert info.value.phase == "autotuning"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_an_alarm_during_a_limits_cleanup_leaves_no_stale_phase_behind(monkeypatch):
    """The alarm lands just as limit() ends (its phase past the deadline): the phase must still be forgotten, or a
    later, unrelated limit fails at once naming it."""

    class AlarmOnRemove(list):
        fired = False

        def remove(self, entry):
            if not self.fired:
                self.fired = True
                signal.raise_signal(signal.SIGALRM)  # delivered now unless limit() holds it back
            super().remove(entry)

    monkeypatch.setattr(watchdog, "_active", AlarmOnRemove())
    try:
        with watchdog.limit(0.1, "the build", "--fluxperf-build-timeout"):
            try:
                time.sleep(0.3)
            except watchdog.PhaseTimeout:
                pass  # swallowed, as inductor may; the phase then ends past its deadline
    except watchdog.PhaseTimeout:
        pass  # the phase that ran over may be told so as it ends; the point is what remains after it
    assert watchdog._active.fired and watchdog._active == []
    with watchdog.limit(5, "a later call", "--fluxperf-call-timeout"):
        time.sleep(0.1)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.SIGALRM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_no_limit_means_no_timer():
    with watchdog.limit(None, "x", "--fluxperf-call-timeout"), watchdog.limit(0, "y", "--fluxperf-call-timeout"):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_long_step_says_it_is_still_running_and_what_is_known():
    lines = []
    progress = Progress(lines.append, heartbeat_s=0.1, status=lambda: "inductor has generated 7 kernels so far")
    progress.begin("compile")
    with progress.step("building compile"):
        with progress.step("warm-up call"):
            time.sleep(0.35)
        time.sleep(0.25)
    beats = [line for line in lines if "still running" in line]
    # Only the innermost step speaks while it runs; the outer one speaks again once it is innermost.
    assert any("warm-up call: still running after 0 s (inductor has generated 7 kernels so far)" in b for b in beats), (
        lines
    )
    assert any("building compile: still running" in b for b in beats), lines
    warmup_done = lines.index(next(line for line in lines if "warm-up call done" in line))
    assert not any("building compile: still running" in b for b in lines[:warmup_done]), lines
    time.sleep(0.25)
    assert not [t for t in threading.enumerate() if t.name == "fluxperf-heartbeat"], "a heartbeat outlived its step"


def test_a_limit_that_fires_inside_torch_compile_is_found_behind_its_wrappers():
    """On an H100 the limit fired mid-compile and arrived as inductor's BackendCompilerFailed; the variant must still
    fail with the phase and the time, not a traceback."""
    inner = watchdog.PhaseTimeout("compile's build and warm-up call", 30, 30.4, "--fluxperf-build-timeout")

    class BackendCompilerFailed(Exception):  # as torch._dynamo.exc's: the original kept in inner_exception
        def __init__(self, inner):
            self.inner_exception = inner

    try:
        try:
            raise inner
        except watchdog.PhaseTimeout as exc:
            raise RuntimeError("InductorError") from exc
    except RuntimeError as wrapped:
        assert watchdog.timeout_in(wrapped) is inner
    assert watchdog.timeout_in(BackendCompilerFailed(inner)) is inner
    assert watchdog.timeout_in(RuntimeError("something else")) is None
