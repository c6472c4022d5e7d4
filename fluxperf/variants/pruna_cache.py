"""pruna's FORA cacher: the transformer blocks run every `interval` steps after `start_step`, cached outputs between."""

from __future__ import annotations

import os

from fluxperf.variants import MissingDependency, Unavailable, register, require

# pyproject.toml's pruna-deps extra says why pruna goes in with --no-deps and which few packages it really needs.
# `make pruna` installs the lock's versions, which work together; the pip line resolves the extra with fluxperf's own
# dependencies in one go, so it also moves transformers back if it needs a huggingface_hub that pruna can't import.
INSTALL = (
    "make pruna in a fluxperf clone (the locked versions), or "
    "pip install 'fluxperf[pruna-deps]' && pip install --no-deps pruna==0.3.4"
)

# FORA's own defaults in pruna 0.3.4, which the reference comparison's flux_caching used.
FORA_PARAMS = {"fora_interval": 2, "fora_start_step": 2}


def _telemetry_off() -> None:
    # pruna exports usage metrics to its servers unless PRUNA_METRICS_ENABLED is "false". It reads the variable on
    # every tracked call and only fills it in (from a config file that says true) when it is absent, so assigning it
    # here, not setdefault, wins over a user's `true` as well. Its OTLP exporter exports nothing while no metric
    # was recorded, which is what keeps the process silent. pruna 0.3.4 has no other phone-home (no version check).
    os.environ["PRUNA_METRICS_ENABLED"] = "false"


def import_pruna():
    """pruna, or a skip: naming the install command when it is missing, and when it is installed but can't be
    imported, the package and version it conflicts with (pruna is installed without its declared dependencies, so pip
    never checks them)."""
    _telemetry_off()
    try:
        return require("pruna", INSTALL)
    except MissingDependency:
        raise
    except Exception as exc:
        # Not a failure of the variant: this environment can't run it. The reason carries the import error.
        from fluxperf.envcheck import pruna_import_failure

        raise Unavailable(pruna_import_failure(exc, INSTALL)) from exc


def smash_fora(pipe, scenario, params, *, compile: bool):
    """Smash `pipe` with FORA (and pruna's torch_compile if `compile`), returning the PrunaModel to call.

    pruna 0.3.4 neither copies the pipeline nor its weights: FORA wraps the `forward` of the transformer's blocks,
    and torch_compile then compiles those blocks' original forwards. The harness hands `build` its own copies of
    the modules (sharing eager's weights), so eager is untouched and the two are timed in alternating rounds. The
    PrunaModel's call resets FORA's step counter and cache before every image; calling `pipe` itself would not, and
    would reuse the last image's cached activations.
    """
    import_pruna()
    from pruna import SmashConfig, smash

    algorithms: dict = {
        "fora": {"interval": int(params["fora_interval"]), "start_step": int(params["fora_start_step"])}
    }
    if compile:
        algorithms["torch_compile"] = {}
    # cache_dir_prefix keeps pruna's scratch folder out of ~/.cache/pruna.
    config = SmashConfig(algorithms, device=scenario.device, cache_dir_prefix=params["cache_dir"] / "pruna")
    # Without this, torch_compile first saves the whole pipeline to disk (33 GB for FLUX.1-dev) so that the
    # smashed model could be saved later; the benchmark never saves it.
    config.disable_saving()
    with params["progress"].step(f"pruna smash {' + '.join(algorithms)}", "smash_s"):
        return smash(model=pipe, smash_config=config)


def check(scenario, params):
    """Before eager is timed for an in-place build that would only then find pruna missing or broken."""
    import_pruna()


@register("pruna_cache", params=FORA_PARAMS, check=check, libraries=("pruna",))
def build(pipe, scenario, params):
    return smash_fora(pipe, scenario, params, compile=False)
