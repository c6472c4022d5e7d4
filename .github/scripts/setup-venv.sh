#!/usr/bin/env bash
# Builds .venv with every variant's dependencies; pip's cache lives on the runner's persistent disk, so this is quick.
# Every version comes from requirements/lock.txt, so a night's numbers move with the code, not with PyPI. The Makefile's
# check-env then fails the job if .venv holds a version the lock does not pin, or packages that don't work together.
set -euo pipefail
make venv LOCK=requirements/lock.txt
