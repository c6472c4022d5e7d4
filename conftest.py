# Loads the fluxperf plugin for this repository's own suite (installed users get it via the entry point).
pytest_plugins = ["fluxperf.plugin"]
