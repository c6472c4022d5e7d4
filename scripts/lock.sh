#!/usr/bin/env bash
# Rewrites requirements/gpu.lock, the pip constraints the GPU workflows build .venv with (docs/runner.md, "The lock
# file"). Usage: scripts/lock.sh [VENV]
# The versions come from VENV, a venv built by `make venv pruna`, or else from a fresh `make venv pruna` without
# constraints: what pip picks today within pyproject.toml and requirements/pruna.txt. A second venv is then built
# with those versions as constraints, and frozen. That proves the lock installs, and drops packages that an earlier
# install step pulled in and a later one, changing a version, left unneeded.
set -euo pipefail
from=${1:+$(realpath "$1")}
cd "$(dirname "$0")/.."

# pip picks torch, triton and the nvidia-* CUDA wheels per platform; a lock made elsewhere would not fit the runner.
if [[ $(uname -sm) != "Linux x86_64" ]]; then
  echo "run this on Linux x86_64, like the L40S runner (got $(uname -sm))" >&2
  exit 2
fi

lock=requirements/gpu.lock
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# --all keeps pip and setuptools: the Makefile upgrades pip, and torch requires a setuptools newer than venv's.
freeze() { "$1/bin/pip" freeze --all --exclude-editable; }

if [[ -z $from ]]; then
  make venv pruna VENV="$tmp/resolve" CONSTRAINTS=
  freeze "$tmp/resolve" >"$tmp/draft"
  rm -rf "$tmp/resolve"   # about 6 GB, and the second venv needs as much
else
  freeze "$from" >"$tmp/draft"
fi

make venv pruna VENV="$tmp/check" CONSTRAINTS="$tmp/draft"
python=$("$tmp/check/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
{
  cat <<EOF
# pip constraints: every package the GPU workflows (nightly, pr-gpu, rebaseline) install into .venv, pinned.
# .github/scripts/setup-venv.sh runs \`make venv pruna CONSTRAINTS=$lock\`, which adds
# \`-c $lock\` to each pip install: pyproject.toml (with the test and fp8 extras), requirements/pruna.txt
# and pruna still decide what is installed, this file decides which version, and setup-venv.sh fails if .venv holds
# anything not listed here.
# Resolved for Python $python on Linux x86_64, like the L40S runner; torch is PyPI's wheel for that platform, and
# its CUDA libraries are the cuda-* and nvidia-* packages below.
# Written by scripts/lock.sh; do not edit by hand. To update: Actions -> lock-update -> Run workflow, then review
# and merge the pull request it opens (docs/runner.md, "The lock file").
EOF
  freeze "$tmp/check"
} >"$tmp/lock"
mv "$tmp/lock" "$lock"
echo "wrote $lock ($(grep -vc '^#' "$lock") packages)"
