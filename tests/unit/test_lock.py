"""requirements/lock.txt agrees with what it locks: every requirement of pyproject.toml (with the extras the Makefile
installs), pip and pruna is pinned within its range on each Python 3.10 to 3.13, once; and fluxperf's own dependencies
never force a user's torch, diffusers or transformers down."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"
EXTRAS = ("test", "fp8", "pruna-deps")
PYTHONS = ("3.10.13", "3.11.7", "3.12.1", "3.13.0")
# name==version, then an optional marker: no ranges, URLs, index options or local versions (torch==2.x+cu128 is on
# PyTorch's index, not on PyPI, where the Makefile installs from).
PIN = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>\d[0-9A-Za-z.!]*)"
    r"(?: ; (?P<marker>.+))?"
)


def _project_toml() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10, where pytest itself depends on tomli
        tomllib = pytest.importorskip("tomli", reason="Python 3.10 without tomli: pip install tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _project() -> dict:
    return _project_toml()["project"]


def linux_markers(python: str) -> dict:
    """The marker environment of CPython `python` on Linux x86_64, wherever the test runs."""
    return {
        **default_environment(),
        "python_version": python.rsplit(".", 1)[0],
        "python_full_version": python,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def _lock_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _pins(text: str, environment: dict) -> dict[str, list[str]]:
    """Canonical name -> the versions pinned by the lines whose markers hold in `environment`."""
    pins: dict[str, list[str]] = {}
    for line in _lock_lines(text):
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            pins.setdefault(canonicalize_name(requirement.name), []).append(str(requirement.specifier)[2:])
    return pins


def _makefile_pruna() -> str:
    (pin,) = re.findall(r"^PRUNA := (pruna==\S+)$", (ROOT / "Makefile").read_text(), re.M)
    return pin


def _wanted(project: dict, environment: dict) -> list[Requirement]:
    """What the Makefile's installs ask for by name and this environment's markers select."""
    lines = [
        *project["dependencies"],
        *(r for extra in EXTRAS for r in project["optional-dependencies"][extra]),
        "pip",
        _makefile_pruna(),
    ]
    wanted = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
            wanted.append(requirement)
    return wanted


def _disagreements(project: dict, lock_text: str, python: str) -> list[str]:
    environment = linux_markers(python)
    pins = _pins(lock_text, environment)
    problems = []
    for requirement in _wanted(project, environment):
        versions = pins.get(canonicalize_name(requirement.name), [])
        if len(versions) != 1:
            problems.append(f"{requirement.name}: {len(versions)} pins for Python {python} ({versions})")
        elif not requirement.specifier.contains(versions[0], prereleases=True):
            problems.append(f"{requirement} but the lock pins {versions[0]} for Python {python}")
    return problems


def test_the_lock_holds_exact_pins_only():
    lines = _lock_lines(LOCK.read_text())
    loose = [line for line in lines if not PIN.fullmatch(line)]
    assert lines and not loose, f"{LOCK.name}: every line must be name==version [; marker]: {loose}"


@pytest.mark.parametrize("python", PYTHONS)
def test_each_package_is_pinned_once_per_python(python):
    twice = {
        name: versions for name, versions in _pins(LOCK.read_text(), linux_markers(python)).items() if len(versions) > 1
    }
    assert not twice, f"{LOCK.name} pins these more than once for Python {python}: {twice}"


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_pins_every_requirement_within_its_range(python):
    problems = _disagreements(_project(), LOCK.read_text(), python)
    assert not problems, (
        f"{LOCK.name} disagrees with pyproject.toml or the Makefile; regenerate it with "
        f'scripts/lock.sh (docs/runner.md, "The lock file"): {problems}'
    )


def test_a_pin_outside_its_range_or_a_missing_pin_is_found():
    # The check above, on a lock edited by hand: a pin moved outside pruna-deps' range, and a requirement dropped.
    text = LOCK.read_text()
    hub = re.search(r"^huggingface-hub==\S+", text, re.M)
    assert hub, "the lock no longer pins huggingface-hub; pick another package for this test"
    edited = text.replace(hub[0], "huggingface-hub==2.4.0")
    edited = "\n".join(line for line in edited.splitlines() if not line.startswith("aenum=="))
    problems = _disagreements(_project(), edited, "3.11.7")
    assert problems == [
        "aenum: 0 pins for Python 3.11.7 ([])",
        "huggingface_hub<2,>=1.32 but the lock pins 2.4.0 for Python 3.11.7",
    ], problems


def test_the_lock_pins_the_pruna_the_makefile_and_the_skip_message_install():
    from fluxperf.variants.pruna_cache import INSTALL

    pin = _makefile_pruna()
    for python in PYTHONS:
        assert _pins(LOCK.read_text(), linux_markers(python))["pruna"] == [pin.partition("==")[2]], python
    assert f"--no-deps {pin}" in INSTALL


def _forces_a_version(requirement: Requirement) -> list[str]:
    # Only lower bounds: an upper bound, a pin or an exclusion could make pip replace a version the user already has.
    return [str(spec) for spec in requirement.specifier if spec.operator not in (">=", ">")]


def test_plain_install_never_downgrades_a_users_torch_diffusers_or_transformers():
    # `pip install fluxperf` into an environment that already has torch, diffusers and transformers: nothing in
    # fluxperf's own dependencies may ask for an older one (the extras may; they are opted into).
    bounded = {line: _forces_a_version(Requirement(line)) for line in _project()["dependencies"]}
    bounded = {line: specs for line, specs in bounded.items() if specs}
    assert not bounded, (
        f"pyproject.toml's dependencies must have lower bounds only, so that `pip install fluxperf` "
        f"never downgrades what a user has: {bounded}"
    )
    names = {canonicalize_name(Requirement(line).name) for line in _project()["dependencies"]}
    assert {"torch", "diffusers", "transformers"} <= names


def test_an_upper_bound_on_a_base_dependency_is_found():
    assert _forces_a_version(Requirement("transformers>=4.46,<5.25")) == ["<5.25"]
    assert _forces_a_version(Requirement("torch==2.14.1")) == ["==2.14.1"]
    assert _forces_a_version(Requirement("diffusers>=0.35")) == []


def test_every_package_of_fluxperf_is_installed():
    # setuptools installs the packages pyproject.toml lists, no more: one left out works in the editable checkout
    # and is missing from `pip install fluxperf`.
    listed = set(_project_toml()["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "fluxperf").rglob("__init__.py")}
    assert on_disk == listed, f"pyproject.toml's [tool.setuptools] packages: add {sorted(on_disk - listed)}"
