#!/usr/bin/env bash
# Builds .venv with the optional variants' dependencies (fp8 extra, pruna); pip's cache lives on the runner's persistent disk, so this is quick.
# Every version comes from requirements/gpu.lock, so a night's numbers move with the code, not with PyPI.
set -euo pipefail
lock=requirements/gpu.lock
make venv pruna CONSTRAINTS="$lock"

# -c pins only what the lock names: a dependency it lacks would come in at whatever version is newest. Stop instead.
installed=$(.venv/bin/pip freeze --all --exclude-editable)
pinned=$(grep -v '^#' "$lock")
unlocked=$(grep -vxF -f <(printf '%s\n' "$pinned") <<<"$installed" || true)
if [[ -n $unlocked ]]; then
  printf '::error::.venv holds versions that %s does not pin; update it (docs/runner.md, "The lock file"):\n%s\n' \
    "$lock" "$unlocked"
  exit 1
fi
