#!/usr/bin/env bash
# Fetches the pinned FLUX.1-dev revision into HF_HOME. The only step that goes online and sees HF_TOKEN.
set -euo pipefail
: "${FLUX_REVISION:?set the repository variable FLUX_REVISION}"
: "${HF_TOKEN:?add the HF_TOKEN secret to the huggingface environment (docs/runner.md)}"

# A throwaway venv holding only huggingface_hub: the less code runs next to the token, the better. Its versions come
# from the lock too, so nothing new from PyPI runs next to the token before it has been reviewed.
venv=${RUNNER_TEMP:-/tmp}/hf-download-venv
python3 -m venv "$venv"
# The install itself runs without the token (and builds nothing): a package's install-time code never sees it.
env -u HF_TOKEN "$venv/bin/pip" install --quiet --only-binary=:all: -c requirements/lock.txt 'huggingface_hub>=0.26'
# huggingface_hub reads HF_TOKEN from the environment, so the token never appears on a command line.
HF_HUB_OFFLINE=0 "$venv/bin/python" - <<'PY'
import os
from huggingface_hub import snapshot_download

path = snapshot_download(os.environ.get("FLUX_MODEL", "black-forest-labs/FLUX.1-dev"),
                         revision=os.environ["FLUX_REVISION"])
print(f"cached at {path}")
PY
