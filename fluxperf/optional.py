"""Optional dependencies: what a variant raises when it can't run in this session, and the import of an optional
package that turns its absence into that (fluxperf.variants names them for variants)."""

from __future__ import annotations

import importlib


class Unavailable(Exception):
    """The variant can't run in this session (a missing package, no GPU, no torchrun); it is skipped, not failed,
    and the message says what would make it run."""


class MissingDependency(Unavailable, ImportError):
    """An optional package a variant needs is not installed."""

    def __init__(self, package: str, install: str):
        self.package, self.install = package, install
        super().__init__(f"{package} is not installed; install it with: {install}")


def require(module: str, install: str):
    """Import an optional dependency inside build(), turning its absence into MissingDependency."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Only a missing top-level package is "not installed"; a broken install must surface as itself.
        if getattr(exc, "name", None) and exc.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingDependency(module, install) from exc
