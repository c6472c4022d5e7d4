#!/usr/bin/env bash
# Runs the GPU suite against the pinned FLUX.1-dev revision from the runner's persistent Hugging Face cache.
# Extra arguments go to pytest. Options use the --opt=value form: pytest reads a bare path after an option it
# does not know yet (plugins load after the rootdir is chosen) as a test path.
# The exit code is pytest's, so FAIL verdicts (1) and bad baselines (4) fail the job.
set -euo pipefail

: "${FLUX_REVISION:?set the repository variable FLUX_REVISION to the model commit sha (docs/runner.md)}"
: "${FLUXPERF_CACHE_DIR:?FLUXPERF_CACHE_DIR must name a persistent folder on the runner}"

mkdir -p "$FLUXPERF_CACHE_DIR"   # torch.compile's artifacts go to its inductor/ (fluxperf's default)

exec .venv/bin/pytest -m gpu \
  --fluxperf-model="${FLUX_MODEL:-black-forest-labs/FLUX.1-dev}" \
  --fluxperf-revision="$FLUX_REVISION" \
  --fluxperf-cache-dir="$FLUXPERF_CACHE_DIR" \
  "$@"
