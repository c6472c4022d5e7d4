#!/usr/bin/env bash
# Appends a link to the history dashboard's artifact to $GITHUB_STEP_SUMMARY, or says why there is none.
# Usage: history-summary.sh ARTIFACT_URL (empty when the dashboard wasn't written or uploaded)
set -euo pipefail
url=${1:-}
out=${GITHUB_STEP_SUMMARY:?not running under GitHub Actions}

printf '\n## History\n\n' >>"$out"
if [[ -z $url ]]; then
  printf '_No history dashboard this run: see the "History dashboard" step of the job log._\n' >>"$out"
  exit 0
fi
printf '[**History dashboard**](%s): every session on this runner, per variant, with the steps found. ' "$url" >>"$out"
printf 'Download the artifact, unzip it and open `index.html` (it works offline).\n' >>"$out"
