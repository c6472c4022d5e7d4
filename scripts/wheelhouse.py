"""Download fluxperf's non-torch dependencies as wheels for a target Python and platform (air-gapped GPU hosts)."""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency tomli reads the same
    import tomli as tomllib

# The GPU host already has these (its own CUDA build of torch and what comes with it): downloading
# them would fetch gigabytes and could replace the host's build.
HOST_PROVIDED = ("torch", "torchvision", "torchaudio", "triton", "nvidia-", "cuda-")


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--python-version", default="3.12")
    ap.add_argument("--platform", default="manylinux_2_28_x86_64")
    ap.add_argument("--dest", default="wheelhouse")
    ap.add_argument("--extra", action="append", default=[], help="also an optional extra, e.g. test")
    args = ap.parse_args()
    target = [
        "--only-binary=:all:",
        "--python-version",
        args.python_version,
        "--implementation",
        "cp",
        "--platform",
        args.platform,
        "--platform",
        "manylinux2014_x86_64",
    ]
    # Resolve the whole dependency closure for the target first (metadata only, nothing installed),
    # then download everything except what the host provides, each wheel without its dependencies.
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.check_call(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--target",
                tmp,
                "--report",
                str(report),
                *target,
                *requirements(args.extra),
            ]
        )
        resolved = [
            f"{p['metadata']['name']}=={p['metadata']['version']}" for p in json.loads(report.read_text())["install"]
        ]
    wanted = [r for r in resolved if not r.lower().startswith(HOST_PROVIDED)]
    print(f"downloading {len(wanted)} wheels into {args.dest} (skipping host-provided torch/CUDA packages)")
    return subprocess.call(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", args.dest, *target, *wanted]
    )


if __name__ == "__main__":
    sys.exit(main())
