"""Test-only plugin that slows variants down, to prove the speed gate catches a real regression.

    FLUXPERF_TEST_SLOWDOWN=compile=0.15 python -m pytest -p tests.slowdown -m gpu ...
    FLUXPERF_TEST_SLOWDOWN=eager=0.1,compile=0.1 ...     (eager too: every pipeline call of the session)

Every call of a named variant's pipeline is followed by a sleep of that fraction of the call's own
(synchronized) duration, so the variant really takes that much longer per image. Slowing eager slows it as the
reference of every other variant too, since eager's build is the pipeline they are timed against.
"""

import dataclasses
import os
import time

from fluxperf import timing, variants


class Slowed:
    def __init__(self, pipe, fraction: float, device: str):
        self._pipe, self._fraction, self._device = pipe, fraction, device

    def __call__(self, *args, **kwargs):
        seconds, _, out = timing.timed(lambda: self._pipe(*args, **kwargs), self._device)
        time.sleep(self._fraction * seconds)
        return out

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def _slowed(original, fraction: float):
    def build(pipe, scenario, params):
        return Slowed(original.build(pipe, scenario, params), fraction, scenario.device)

    return dataclasses.replace(original, build=build)


def pytest_configure(config):
    spec = os.environ.get("FLUXPERF_TEST_SLOWDOWN")
    if not spec:
        return
    for part in spec.split(","):
        name, _, fraction = part.partition("=")
        variants._REGISTRY[name] = _slowed(variants.get(name), float(fraction))
