#!/usr/bin/env bash
# Records RUNS fresh baselines, each in runs/run-$i, then merges them (median per metric) into baselines/.
# One run's numbers carry that evening's noise; the median of a few is what the nightly should be judged against.
# --fluxperf-quality-prompts is the nightly's and pr-gpu's: it is part of the baseline's key and file name.
set -euo pipefail
runs=${RUNS:?RUNS must be set}
if ! [[ $runs =~ ^[1-9][0-9]?$ ]]; then
  echo "runs must be an integer from 1 to 99, got '$runs'" >&2
  exit 2
fi

rm -rf runs
for ((i = 1; i <= runs; i++)); do
  echo "::group::run $i of $runs"
  bash .github/scripts/gpu-suite.sh --fluxperf-quality-prompts=8 --fluxperf-update-baselines \
    --fluxperf-baseline-dir="runs/run-$i" --fluxperf-report-dir="reports/run-$i"
  echo "::endgroup::"
done

.venv/bin/python -m fluxperf merge-baselines --out baselines --table rebaseline-table.md runs/run-*
