"""The lock-update pull request's body: make test per Python, the packages that broke it, the versions that move.

Usage: lock-pr-body.py --old requirements/lock.txt --new NEW_LOCK --results DIR [--run-url URL] [--pyproject FILE]
DIR holds one folder per Python as lock-test.sh writes it: `python`, `status` (make's exit code) and `make-test.log`.
Standard library only: the job that runs it installs nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency tomli, for the unit tests
    import tomli as tomllib

# The lines of a make test log that say what broke: check-env's findings, pip's errors, pytest's short summary.
FAILURE_LINE = re.compile(r"^(?:  - .+|ERROR: .+|(?:FAILED|ERROR) \S+.*|E   +\S.*(?:Error|required|requires).*)$")
MAX_LINES = 15


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, set[str]]:
    """Canonical name -> every version the lock pins for it, whatever the marker."""
    found: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if match:
            found.setdefault(canonical(match[1]), set()).add(match[2])
    return found


def direct(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)[1]) for line in lines}


def _versions(versions: set[str] | None) -> str:
    return ", ".join(sorted(versions)) if versions else "–"


def mentioned(name: str, lines: list[str]) -> bool:
    # huggingface-hub, huggingface_hub and huggingface.hub are one package; a longer name must not match a shorter one.
    pattern = re.compile(r"(?<![\w.-])" + r"[-_.]".join(map(re.escape, name.split("-"))) + r"(?![\w-])", re.I)
    return any(pattern.search(line) for line in lines)


def body(
    old: dict, new: dict, results: dict[str, tuple[int, list[str]]], direct_names: set[str], run_url: str = ""
) -> str:
    moved = {
        name: (old.get(name), new.get(name))
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    }
    run = f" ([workflow run]({run_url}))" if run_url else ""
    out = [
        f"`scripts/lock.sh` re-resolved the lock on PyPI, and `make test` ran with it on every Python it covers "
        f"before this pull request was opened{run}.",
        "",
        "## make test with the new lock",
        "",
        "| Python | make test |",
        "|---|---|",
    ]
    out += [
        f"| {python} | {'passed' if status == 0 else f'**failed** (exit code {status})'} |"
        for python, (status, _) in sorted(results.items(), key=lambda item: tuple(map(int, item[0].split("."))))
    ]
    failed = {python: lines for python, (status, lines) in results.items() if status != 0}
    if not results:
        out += [
            "",
            "**No make test result came back**: the test jobs were skipped or lost their logs. Don't merge "
            "this before `ci` has run on it.",
        ]
    if failed:
        everything = [line for lines in failed.values() for line in lines]
        named = [name for name in moved if mentioned(name, everything)]
        if named:
            suspects = "Named in the failures: " + ", ".join(
                f"**{name}** {_versions(moved[name][0])} → {_versions(moved[name][1])}" for name in named
            )
        elif moved:
            changed = [name for name in moved if name in direct_names] or list(moved)
            suspects = "No moved package is named in the failures; the direct dependencies that moved: " + ", ".join(
                f"**{name}** {_versions(moved[name][0])} → {_versions(moved[name][1])}" for name in changed
            )
        else:
            suspects = "No version moved: the failure is not the new versions'; main itself fails (or a flaky test)."
        out += [
            "",
            "## What broke",
            "",
            suspects,
            "",
            "Don't merge this as it is: hold the package back in `pyproject.toml` (an upper bound or `!=` on the "
            "broken release) and run lock-update again, or fix fluxperf for it in this branch.",
            "",
        ]
        for python, lines in sorted(failed.items()):
            shown = lines[:MAX_LINES] or ["(no failure line found; see the job log)"]
            more = f"\n… {len(lines) - MAX_LINES} more in the job log" if len(lines) > MAX_LINES else ""
            out += [f"Python {python}:", "```", *shown, "```" + more, ""]
    out += ["", "## Versions that move", ""]
    if moved:
        out += ["| package | before | after |", "|---|---|---|"]
        out += [
            f"| {'**' + name + '**' if name in direct_names else name} | {_versions(before)} | {_versions(after)} |"
            for name, (before, after) in moved.items()
        ]
        out += ["", "Direct dependencies (pyproject.toml) are in bold."]
    else:
        out += ["None."]
    out += [
        "",
        "Before merging, add the `gpu-perf` label to run the GPU suite with them against the current "
        "baselines; a new torch, diffusers, transformers or nvidia-modelopt can move the numbers, and then the "
        'baselines want re-recording after the merge (docs/runner.md, "The lock file").',
    ]
    return "\n".join(out) + "\n"


def read_results(folder: Path) -> dict[str, tuple[int, list[str]]]:
    results = {}
    for status_file in sorted(folder.glob("*/status")):
        run = status_file.parent
        python = (run / "python").read_text().strip() if (run / "python").exists() else run.name
        log = (run / "make-test.log").read_text(errors="replace") if (run / "make-test.log").exists() else ""
        lines = [line.rstrip() for line in log.splitlines() if FAILURE_LINE.match(line.rstrip())]
        results[python] = (int(status_file.read_text().strip() or 1), lines)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--run-url", default="")
    args = parser.parse_args(argv)
    sys.stdout.write(
        body(pins(args.old), pins(args.new), read_results(args.results), direct(args.pyproject), args.run_url)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
