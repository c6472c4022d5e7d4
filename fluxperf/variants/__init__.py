"""Variant registry: one module per optimization, registered by name.

This package imports its own modules, the modules that installed packages name in the `fluxperf.variants` entry
point group, and sees the variants a project's conftest.py registers: all with the same `register` decorator.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

# What a variant raises when it can't run, and how it imports an optional package: defined low in fluxperf.optional
# (the fp8 and TensorRT helpers use them too), named here for variants.
from fluxperf.optional import MissingDependency, Unavailable, require  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class Variant:
    name: str
    build: Callable[..., Any]
    doc: str = ""
    # Lossless variants compute what eager computes: their transformer is held step by step to eager's own rounding
    # error (test_fidelity_holds). Every variant's images are held to configurable floors and to its baseline.
    lossless: bool = False
    # Simulated-quantization variants are slower than eager by design: never judged on speed.
    timed: bool = True
    # A variant that changes the shared modules in place can't be interleaved with eager.
    in_place: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    # Raises Unavailable before anything is timed or built, where the build would only find out late.
    check: Callable[[Any, dict], None] | None = None
    # Distributions the variant is built with, beyond torch and diffusers: a verdict names their version
    # changes since the baseline as suspects.
    libraries: tuple[str, ...] = ()
    # A cache that decides what to skip from the model's own activations (a threshold): on random weights its
    # hit rate says nothing about the real model's, and the report says so.
    adaptive: bool = False
    # fidelity_hint(params): what a lossless variant's fidelity failure should advise, where a tunable can make it
    # compute something else on purpose (best_exact's fp8); None keeps the generic advice.
    fidelity_hint: Callable[[dict], str | None] | None = None


_REGISTRY: dict[str, Variant] = {}


def register(
    name: str,
    *,
    lossless: bool = False,
    timed: bool = True,
    in_place: bool = False,
    params: dict[str, Any] | None = None,
    check: Callable[[Any, dict], None] | None = None,
    libraries: tuple[str, ...] = (),
    adaptive: bool = False,
    fidelity_hint: Callable[[dict], str | None] | None = None,
):
    """Decorator for `build(pipe, scenario, params) -> pipe`. `params` declares tunables and defaults;
    `check(scenario, params)` raises Unavailable when the variant can't run in this session; `fidelity_hint(params)`
    words the advice of a lossless variant's fidelity failure."""

    def wrap(build):
        if name in _REGISTRY:
            raise ValueError(f"variant {name!r} registered twice")
        doc = (build.__module__ and importlib.import_module(build.__module__).__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Variant(
            name,
            build,
            doc[0] if doc else "",
            lossless,
            timed,
            in_place,
            dict(params or {}),
            check,
            tuple(libraries),
            adaptive,
            fidelity_hint,
        )
        return build

    return wrap


# Installed packages contribute variants through this entry point group: each entry names a module whose
# import registers them, e.g. `[project.entry-points."fluxperf.variants"] my_stack = "mypkg.my_stack"`.
ENTRY_POINTS = "fluxperf.variants"


class RegistryError(Exception):
    """A variant module that can't be imported; the message names it."""


def _load_all() -> None:
    # The shipped modules import nothing heavy at module level (torch and friends load inside build()), so that
    # listing the variants costs milliseconds in a pytest run that never builds one.
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINTS):
        try:
            ep.load()
        except Exception as exc:
            raise RegistryError(
                f"the {ENTRY_POINTS} entry point {ep.name} = {ep.value} failed to import: {type(exc).__name__}: {exc}"
            ) from exc


def names() -> list[str]:
    """Registered variants, eager first, then variants that keep eager's modules intact, then the rest."""
    _load_all()
    return sorted(_REGISTRY, key=lambda n: (n != "eager", _REGISTRY[n].in_place, n))


def get(name: str) -> Variant:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; choose from: {', '.join(names())}") from None


def all_params() -> dict[str, Any]:
    """Every tunable any variant declares, with its default (variants sharing a name share the value)."""
    merged: dict[str, Any] = {}
    for name in names():
        merged.update(_REGISTRY[name].params)
    return merged
