#!/usr/bin/env bash
# Appends a Markdown report to $GITHUB_STEP_SUMMARY, cut to fit GitHub's 1 MiB per-step limit.
# Usage: step-summary.sh REPORT.md [LIMIT_BYTES]
set -euo pipefail
report=${1:?usage: step-summary.sh REPORT.md [LIMIT_BYTES]}
# GitHub rejects a summary over 1024 KiB outright; keep headroom for the note below.
limit=${2:-1000000}
out=${GITHUB_STEP_SUMMARY:?not running under GitHub Actions}

if [[ ! -f $report ]]; then
  printf '_No %s was written: the suite stopped before reporting; see the job log._\n' "$report" >>"$out"
  exit 0
fi

size=$(wc -c <"$report")
if ((size <= limit)); then
  cat "$report" >>"$out"
  exit 0
fi
# Cut at the last whole line so a table row or a multi-byte character is never split.
head -c "$limit" "$report" | sed '$d' >>"$out"
printf '\n\n> **Truncated:** the report is %d bytes and a step summary holds at most 1 MiB; the full report is in the %s artifact.\n' \
  "$size" "${ARTIFACT_NAME:-fluxperf-reports}" >>"$out"
