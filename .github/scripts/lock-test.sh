#!/usr/bin/env bash
# `make test` with the lock the resolve job just wrote, on this job's Python. The log and the exit code go to lock-test/
# for the pull request's body (lock-pr-body.py); the exit code is make's, so a broken set fails this job visibly too.
set -uo pipefail
python=${1:?usage: lock-test.sh PYTHON_VERSION}
mkdir -p lock-test
printf '%s\n' "$python" >lock-test/python
export HF_HUB_OFFLINE=1 PRUNA_METRICS_ENABLED=false
make test LOCK=requirements/lock.txt 2>&1 | tee lock-test/make-test.log
status=${PIPESTATUS[0]}
printf '%s\n' "$status" >lock-test/status
exit "$status"
