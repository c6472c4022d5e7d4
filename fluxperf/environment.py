"""The machine a measurement comes from: GPU name and slug, driver, CUDA, host CPU, library versions, commit."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

from fluxperf.scenario import slugify

# Libraries whose version can change a variant's speed or images; absent ones are recorded as null.
LIBRARIES = (
    "torch",
    "diffusers",
    "transformers",
    "triton",
    "pruna",
    "nvidia-modelopt",
    "tensorrt",
    "torchao",
    "lpips",
    "torchmetrics",
    "fluxperf",
)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def gpu_slug(device: str) -> str:
    """e.g. 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'; CPU runs share the slug 'cpu'."""
    return slugify(device_name(device))


def _run(cmd: list[str], cwd: str | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def host_cpu() -> str:
    # Eager FLUX at 512² is launch-bound, so the host CPU moves eager latency: record which one it was.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


@functools.lru_cache(maxsize=None)
def describe(device: str, repo_dir: str) -> dict:
    """Everything recorded beside a measurement, so two results can be told apart later."""
    is_cuda = device.startswith("cuda")
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) if is_cuda else None
    return {
        "gpu": device_name(device),
        "gpu_slug": gpu_slug(device),
        "driver": driver.splitlines()[0] if driver else None,
        "cuda": torch.version.cuda if is_cuda else None,
        "host_cpu": host_cpu(),
        "python": platform.python_version(),
        "versions": versions(),
        "commit": _run(["git", "rev-parse", "HEAD"], cwd=repo_dir),
    }


# What a speed verdict names as suspects when the stack got slower: the libraries every pipeline runs through,
# the driver and CUDA, and fluxperf's own commit. A variant adds the libraries it is built with.
CORE_LIBRARIES = ("torch", "diffusers", "transformers", "triton")


def changes(before: dict, now: dict, libraries=()) -> tuple[list[str], list[str]]:
    """(software, host) differences between a baseline's environment and this session's, as "name a → b"."""
    software = []
    for name in (*CORE_LIBRARIES, *libraries):
        a, b = (before.get("versions") or {}).get(name), (now.get("versions") or {}).get(name)
        if a != b:
            software.append(f"{name} {a or 'absent'} → {b or 'absent'}")
    for field, label in (("driver", "driver"), ("cuda", "CUDA"), ("python", "Python")):
        if before.get(field) != now.get(field):
            software.append(f"{label} {before.get(field) or 'unknown'} → {now.get(field) or 'unknown'}")
    if before.get("commit") != now.get("commit"):
        short = lambda c: (c or "unknown")[:10]
        software.append(f"fluxperf commit {short(before.get('commit'))} → {short(now.get('commit'))}")
    host = []
    if before.get("host_cpu") != now.get("host_cpu"):
        host.append(f"host CPU {before.get('host_cpu')} → {now.get('host_cpu')}")
    return software, host
