#!/usr/bin/env bash
# Rewrites requirements/lock.txt, the pip constraints every `make` install uses (README, "Quick start"; docs/runner.md,
# "The lock file"): the newest versions pyproject.toml allows today, resolved once for Python 3.10 to 3.13 on Linux
# x86_64.
# Usage: scripts/lock.sh [--upgrade]. Needs python3 and PyPI; builds nothing and installs only uv, into a temporary
# venv. Without --upgrade the lock's current pins are kept wherever they still fit (a new dependency gets its newest
# version and whatever it needs moved); with it, everything is re-resolved to today's newest (the weekly lock-update).
set -euo pipefail
cd "$(dirname "$0")/.."

# The resolver is pinned like everything else: a new uv could resolve the same inputs differently.
UV_VERSION=0.13.9
lock=requirements/lock.txt
# torch and torchvision are held, not floated: a new torch moves every GPU number (and wants new baselines), and the
# project's CPU machines serve torch 2.14.1 and torchvision 0.29.1 from disk, capping them there. Raise them on purpose.
hold=("torch<=2.14.1" "torchvision<=0.29.1")
# The marker pyproject.toml's [tool.uv] environments gives every resolved line; the lines added below carry it too.
platform="platform_machine == 'x86_64' and sys_platform == 'linux'"

upgrade=()
case ${1:-} in
  --upgrade) upgrade=(--upgrade) ;;
  "") ;;
  *) echo "usage: scripts/lock.sh [--upgrade]" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# uv takes the output file's pins as its preferences: start it from the current lock (pruna's line, outside the
# resolve, left out).
grep -v -e '^#' -e '^pruna==' "$lock" >"$tmp/resolved" || true
python3 -m venv "$tmp/uv"
"$tmp/uv/bin/pip" install --quiet "uv==$UV_VERSION"

# pip is pinned too: the Makefile upgrades it first, with the lock.
printf '%s\n' pip >"$tmp/inputs.txt"
printf '%s\n' "${hold[@]}" >"$tmp/hold.txt"
# --universal: one file for every Python from 3.10 up, where a package's versions differ between Pythons each line
# carries its python_full_version marker, and pip keeps the lines whose markers match. No Python is downloaded: every
# input is a wheel or static pyproject.toml metadata.
UV_PYTHON_DOWNLOADS=never "$tmp/uv/bin/uv" pip compile --quiet --universal --python-version 3.10 \
  pyproject.toml "$tmp/inputs.txt" --extra test --extra fp8 --extra pruna-deps --constraints "$tmp/hold.txt" \
  --no-header --no-annotate ${upgrade[@]+"${upgrade[@]}"} --output-file "$tmp/resolved"

# pruna goes in with --no-deps (Makefile, PRUNA): its declared dependencies would not resolve beside the fp8 extra's
# torchao, so it stays out of the resolve, and its pin joins the lock afterwards.
pruna=$(sed -n 's/^PRUNA *:= *//p' Makefile)
if [[ ! $pruna =~ ^pruna==[0-9][0-9A-Za-z.]*$ ]]; then
  echo "the Makefile's PRUNA is '$pruna', expected pruna==VERSION" >&2
  exit 2
fi

{
  cat <<EOF
# The versions \`make test\`, \`make bench\`, .ci/run and the GPU workflows install: the Makefile passes this file
# to every pip install as -c (LOCK; \`make test LOCK=\` takes the newest versions pyproject.toml allows instead).
# One universal lock for Python 3.10 to 3.13 on Linux x86_64: where a package's version differs between Pythons, each
# line's marker says for which, and pip applies the lines whose markers match. torch is PyPI's wheel, so the CUDA
# libraries it brings (cuda-* and nvidia-*) are pinned too: the CPU machines and the GPU runner install the same set.
# Inputs: pyproject.toml with the test, fp8 and pruna-deps extras, and pip, resolved together by uv $UV_VERSION, holding
# ${hold[*]}; then $pruna, installed --no-deps, outside the resolve.
# Written by scripts/lock.sh; do not edit by hand. To update: Actions -> lock-update (it also runs every week), then
# review and merge the pull request it opens (docs/runner.md, "The lock file").
EOF
  # Stable, by name only: each package's lines keep uv's order.
  cat - "$tmp/resolved" <<<"$pruna ; $platform" | LC_ALL=C sort -s -t= -k1,1
} >"$tmp/lock"
mv "$tmp/lock" "$lock"
echo "wrote $lock ($(grep -vc '^#' "$lock") pins)"
