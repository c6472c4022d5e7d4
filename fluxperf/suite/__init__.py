"""The regression suite: run it from this repository with `pytest -m gpu`, or from any project with fluxperf
installed with `pytest -m gpu --pyargs fluxperf.suite` (the project's conftest.py may register its own variants)."""
