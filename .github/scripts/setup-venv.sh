#!/usr/bin/env bash
# Builds .venv with the optional variants' extras; pip's cache lives on the runner's persistent disk, so this is quick.
set -euo pipefail
make venv
.venv/bin/pip install -e '.[pruna]'
