"""Whether the installed packages work together: pip check, pruna's few requirements, the lock, and the key imports."""

from __future__ import annotations

import inspect
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

# pyproject.toml's extra with what `import pruna` needs; pruna itself is installed without its declared dependencies.
PRUNA_EXTRA = "pruna-deps"

# What the variants import, each with the distribution it comes from. The diffusers line imports the Flux classes,
# which is where a broken transformers shows up.
IMPORTS = (
    ("transformers", "transformers", ()),
    ("diffusers", "diffusers", ("FluxPipeline", "FluxTransformer2DModel")),
    ("torchao", "torchao", ()),
    ("nvidia-modelopt", "modelopt.torch.quantization", ()),
    ("pruna", "pruna", ()),
)


@dataclass(frozen=True)
class Unmet:
    """A requirement the installed version doesn't satisfy (`installed` is None when it is not installed)."""

    requirement: Requirement
    installed: str | None

    def state(self, verb: str = "") -> str:
        """'huggingface_hub 2.4.0 [is ]installed' or 'aenum [is ]not installed'."""
        name, verb = self.requirement.name, f"{verb} " if verb else ""
        return f"{name} {self.installed} {verb}installed" if self.installed else f"{name} {verb}not installed"


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def fluxperf_requires() -> list[str]:
    """The installed fluxperf's Requires-Dist lines (pyproject.toml's dependencies and extras, as installed)."""
    try:
        return metadata.requires("fluxperf") or []
    except metadata.PackageNotFoundError:
        return []


def pruna_requirements(requires: list[str] | None = None) -> list[Requirement]:
    """The requirements of fluxperf's pruna-deps extra, from `requires` or the installed fluxperf's metadata."""
    found = []
    for line in fluxperf_requires() if requires is None else requires:
        requirement = Requirement(line)
        marker = requirement.marker
        # Only the extra's lines: they hold with extra == pruna-deps and not without it.
        if marker and marker.evaluate({"extra": PRUNA_EXTRA}) and not marker.evaluate({"extra": ""}):
            requirement.marker = None
            found.append(requirement)
    return found


def unmet(requirements: list[Requirement]) -> list[Unmet]:
    problems = []
    for requirement in requirements:
        version = installed_version(requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            problems.append(Unmet(requirement, version))
    return problems


def pruna_import_failure(exc: BaseException, install: str) -> str:
    """Why `import pruna` failed, as a skip reason: the requirement it conflicts with, else the error itself."""
    pruna = f"pruna {installed_version('pruna') or '(version unknown)'}"
    problems = unmet(pruna_requirements())
    if problems:
        needs = ", ".join(str(p.requirement) for p in problems)
        present = [f"{p.requirement.name} {p.installed}" for p in problems if p.installed]
        absent = [p.requirement.name for p in problems if not p.installed]
        found = [
            f"{' and '.join(names)} {state}"
            for names, state in ((present, "installed"), (absent, "not installed"))
            if names
        ]
        return (
            f"{pruna} can't be imported with {' and '.join(found)} (pruna needs {needs}); "
            f"install a working set with: {install}"
        )
    return (
        f"{pruna} can't be imported: {type(exc).__name__}: {gist(str(exc))} (the versions of what it needs, "
        f"fluxperf's {PRUNA_EXTRA} extra, are in range); install a working set with: {install}"
    )


def gist(message: str) -> str:
    """An error message's first line, and the next one too where the first only announces it (diffusers' lazy imports:
    "Failed to import X because of the following error (look up to see its traceback):")."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else ""


# --- pip check ---------------------------------------------------------------------------------------------------

_HAS = re.compile(
    r"^(?P<who>\S+) (?P<version>\S+) has requirement (?P<req>.+), "
    r"but you have (?P<dep>\S+) (?P<have>\S+)\.$"
)
_MISSING = re.compile(r"^(?P<who>\S+) (?P<version>\S+) requires (?P<dep>\S+), which is not installed\.$")


def pip_check_problems(output: str) -> list[str]:
    """pip check's findings, one sentence each, except pruna's own: it is installed without its declared dependencies
    on purpose, so its missing and too-new requirements are expected (pruna's extra is checked instead)."""
    problems = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith("No broken requirements"):
            continue
        if canonicalize_name(line.split()[0]) == "pruna":
            continue
        if match := _HAS.match(line):
            line = (
                f"{match['who']} {match['version']} requires {match['req']} but {match['dep']} {match['have']} "
                f"is installed"
            )
        elif match := _MISSING.match(line):
            line = f"{match['who']} {match['version']} requires {match['dep']}, which is not installed"
        problems.append(line)
    return problems


def run_pip_check() -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and not result.stdout.strip():
        # Non-zero with no findings: pip itself failed; say so rather than pass.
        return [f"pip check failed (exit code {result.returncode}): {result.stderr.strip()[-500:]}"]
    return pip_check_problems(result.stdout)


# --- the lock ----------------------------------------------------------------------------------------------------


def read_lock(path: Path) -> list[Requirement]:
    pins = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        try:
            pins.append(Requirement(line))
        except InvalidRequirement as exc:
            raise ValueError(f"{path}:{number}: not a requirement: {line!r} ({exc})") from None
    return pins


def installed_distributions() -> dict[str, tuple[str, str]]:
    """Canonical name -> (name as installed, version), for every distribution on sys.path."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), (name, dist.version))
    return found


def lock_problems(
    lock: Path, installed: dict[str, tuple[str, str]], environment: dict | None = None, own: str = "fluxperf"
) -> list[str]:
    """Every installed distribution but `own` must be the version `lock` pins for this Python and platform."""
    pins: dict[str, list[str]] = {}
    for pin in read_lock(lock):
        if pin.marker is None or pin.marker.evaluate(environment):
            exact = [spec.version for spec in pin.specifier if spec.operator == "=="]
            pins.setdefault(canonicalize_name(pin.name), []).extend(exact)
    if not pins:
        where = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
        return [
            f"{lock} pins nothing for this machine ({where}): it is resolved for Linux x86_64 and Python 3.10 to "
            f"3.13; install the newest versions pyproject.toml allows instead with `make venv LOCK=`"
        ]
    problems = []
    for key, (name, version) in sorted(installed.items()):
        if key == canonicalize_name(own):
            continue
        locked = pins.get(key)
        if not locked:
            problems.append(f"{name} {version} is installed but {lock} doesn't pin {name}")
        elif not any(_same_version(version, v) for v in locked):
            problems.append(f"{name} {version} is installed but {lock} pins {name}=={' or '.join(locked)}")
    return problems


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


# --- imports -----------------------------------------------------------------------------------------------------

# Run in a child process: an import can crash the interpreter (an extension built for another ABI), and the libraries'
# warnings and log lines stay out of the report.
# The child gets gist's source, not an import of fluxperf: the fluxperf it would import may be another copy.
_IMPORTER = """
import importlib, json, os, sys
os.environ["PRUNA_METRICS_ENABLED"] = "false"
results = []
for dist, module, names in json.loads(sys.argv[2]):
    try:
        loaded = importlib.import_module(module)
        for name in names:
            getattr(loaded, name)
        results.append(None)
    except BaseException as exc:
        results.append(f"{type(exc).__name__}: {gist(str(exc))}")
    with open(sys.argv[1], "w") as out:
        json.dump(results, out)
"""


def import_problems(imports=IMPORTS) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "imports.json"
        code = inspect.getsource(gist) + _IMPORTER
        result = subprocess.run(
            [sys.executable, "-c", code, str(out), json.dumps(imports)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PRUNA_METRICS_ENABLED": "false"},
        )
        results = json.loads(out.read_text()) if out.exists() else []
    problems = []
    for (dist, module, names), error in zip(imports, results):
        if error:
            what = f"from {module} import {', '.join(names)}" if names else f"import {module}"
            problems.append(f"{what} failed ({dist} {installed_version(dist) or 'not installed'}): {error}")
    if len(results) < len(imports):
        dist, module, _ = imports[len(results)]
        tail = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        problems.append(f"import {module} ({dist}) crashed the interpreter (exit code {result.returncode}): {tail}")
    return problems


# --- the command -------------------------------------------------------------------------------------------------


def check(lock: Path | None = None) -> list[str]:
    """Every problem found, as sentences naming the packages and versions; empty when the environment is sound."""
    problems = run_pip_check()
    if installed_version("pruna") is not None:
        problems += [
            f"pruna {installed_version('pruna')} needs {u.requirement} (fluxperf's {PRUNA_EXTRA} extra) but "
            f"{u.state('is')}"
            for u in unmet(pruna_requirements())
        ]
    if lock is not None:
        problems += lock_problems(lock, installed_distributions())
    problems += import_problems()
    return problems


def main(lock: Path | None) -> int:
    if lock is not None and not lock.is_file():
        print(f"check-env: --lock {lock}: no such file", file=sys.stderr)
        return 2
    problems = check(lock)
    python = f"Python {platform.python_version()} at {sys.prefix}"
    if not problems:
        versions = ", ".join(f"{dist} {installed_version(dist)}" for dist, _, _ in IMPORTS)
        print(f"check-env: OK ({python}{f', matches {lock}' if lock else ''}): {versions}")
        return 0
    print(f"check-env: these packages don't work together ({python}):", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    if lock is None:
        hint = "the lock's versions work together: rm -rf .venv && make venv (without LOCK=)"
    else:
        hint = (
            f"a package added to .venv by hand: rm -rf .venv && make venv; a {lock} that lacks what "
            f"pyproject.toml now asks for: regenerate it with scripts/lock.sh"
        )
    print(f"check-env: {hint}", file=sys.stderr)
    return 1
