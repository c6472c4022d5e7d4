#!/usr/bin/env bash
# Builds .venv with the optional variants' dependencies (fp8 extra, pruna); pip's cache lives on the runner's persistent disk, so this is quick.
set -euo pipefail
make venv pruna
