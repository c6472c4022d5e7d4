"""Test-only plugin that slows one variant down, to prove the speed gate catches a real regression.

    FLUXPERF_TEST_SLOWDOWN=compile=0.15 python -m pytest -p tests.slowdown -m gpu ...

Every call of the variant's pipeline is followed by a sleep of that fraction of the call's own
(synchronized) duration, so the variant really takes 15% longer per image.
"""

import dataclasses
import os
import time

from fluxperf import timing, variants


class Slowed:
    def __init__(self, pipe, fraction: float, device: str):
        self._pipe, self._fraction, self._device = pipe, fraction, device

    def __call__(self, *args, **kwargs):
        seconds, out = timing.timed(lambda: self._pipe(*args, **kwargs), self._device)
        time.sleep(self._fraction * seconds)
        return out

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def pytest_configure(config):
    spec = os.environ.get("FLUXPERF_TEST_SLOWDOWN")
    if not spec:
        return
    name, _, fraction = spec.partition("=")
    original = variants.get(name)

    def build(pipe, scenario, params):
        return Slowed(original.build(pipe, scenario, params), float(fraction), scenario.device)

    variants._REGISTRY[name] = dataclasses.replace(original, build=build)
