"""Per-step fidelity of compiled variants against eager's own rounding error, and what emulate_precision_casts costs.

On a GPU (the synthetic model, FLUX.1-dev's shapes with random weights, one prompt at 512², 28 steps):

    python scripts/fidelity_gpu.py --out fidelity-gpu.json

captures eager's trajectory for one prompt and seed, measures eager's own error against the same steps computed in
float32 (the floor), compares compile, compile_emulate_casts and compile_cudagraphs step by step against it, then
times the built variants in rotating rounds (device synchronized around every call, after a warm-up round) and prints
one summary table; the exit status is 1 when a variant FAILs. Cold, it is three compiles (about 80 s each on an H100)
plus a few minutes of the rest; the inductor cache goes to TORCHINDUCTOR_CACHE_DIR (default /tmp/fluxperf-inductor),
so a second run on the same machine is quicker.

On CPU, in seconds plus two compiles (what tests/unit/test_fidelity.py runs without the compiles):

    python scripts/fidelity_gpu.py --model tiny --device cpu --height 128 --width 128 --steps 8 --guidance 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

VARIANTS = ("compile", "compile_emulate_casts", "compile_cudagraphs")


def _say(t0: float, text: str) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {text}", flush=True)


def run(scenario, names=VARIANTS, rounds: int = 5, seed: int = 0, say=print, pipe=None) -> dict:
    """Everything the script measures, as one JSON-ready dict; `say` gets the progress lines. `pipe`: the scenario's
    pipeline if already built (it is left as it was)."""
    import torch

    from fluxperf import environment, fidelity, messages, pipelines, timing, variants
    from fluxperf.models import build_pipeline, max_sequence_length

    device = scenario.device
    pipe = pipe or build_pipeline(scenario, say)
    latents = pipelines.latents(pipe, scenario, seed)  # as the bench makes them: the same on every device
    tokens = max_sequence_length(pipe)

    def render(p):
        return pipelines.render(p, scenario, 0, latents, tokens)

    render(pipe)  # warm-up: the first call allocates and autotunes
    trajectory = fidelity.capture(pipe, render)
    say(f"eager's trajectory: {trajectory.steps} steps, {trajectory.nbytes / 1e6:.1f} MB held")
    timing.synchronize(device)
    t = time.perf_counter()
    floor = fidelity.noise_floor(trajectory, pipe.transformer)
    timing.synchronize(device)
    floor_s = time.perf_counter() - t
    say(f"floor ({floor.reference_dtype} reference) in {floor_s:.1f} s: " + " ".join(f"{v:.3g}" for v in floor.values))

    results: dict = {}
    built: dict = {}
    for name in names:
        variant = variants.get(name)
        params = dict(variant.params)
        entry = results[name] = {}
        try:
            if variant.check is not None:
                variant.check(scenario, params)
        except variants.Unavailable as exc:
            entry["skipped"] = str(exc)
            say(f"{name}: skipped: {exc}")
            continue
        timing.synchronize(device)
        t = time.perf_counter()
        # Every module a weight-sharing copy, as the bench builds a variant: best_exact fuses the VAE and compiles T5.
        vpipe = pipe if name == "eager" else variant.build(pipelines.share_modules(pipe), scenario, params)
        render(vpipe)  # compilation (and CUDA graph recording) happen here, not in the comparison or the timing
        timing.synchronize(device)
        entry["build_s"] = time.perf_counter() - t
        say(f"{name}: built and warmed up in {entry['build_s']:.1f} s")
        steps = fidelity.compare(trajectory, vpipe.transformer, floor)
        status, details = fidelity.judge(steps, floor.values)
        hint = variant.fidelity_hint(params) if variant.fidelity_hint else None
        entry.update(status=status, details=details, message=messages.fidelity(name, status, details, hint=hint))
        say(entry["message"])
        built[name] = vpipe

    # Rotating order, so that no pipeline always runs first (or right after another): drift spreads over all.
    order = list(built)
    samples: dict[str, list[float]] = {n: [] for n in order}
    for r in range(1 + rounds if order else 0):
        shift = r % len(order)
        for name in order[shift:] + order[:shift]:
            wall, _, _ = timing.timed(lambda p=built[name]: render(p), device)
            if r:  # round 0 is the warm-up
                samples[name].append(wall)
        if r:
            say(f"timing round {r}/{rounds}: " + ", ".join(f"{n} {samples[n][-1]:.3f} s" for n in order))
    for name, xs in samples.items():
        results[name]["latency_s"] = xs
    if "compile" in samples and "compile_emulate_casts" in samples:
        ratios = [e / c for e, c in zip(samples["compile_emulate_casts"], samples["compile"])]
        results["compile_emulate_casts"]["vs_compile"] = statistics.median(ratios)

    import diffusers

    return {
        "scenario": {**scenario.key(), "device": device, "prompt": scenario.prompts[0], "seed": seed},
        "device_name": environment.device_name(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "k": fidelity.K,
        "floor": floor.to_dict(),
        "floor_s": floor_s,
        "trajectory_mb": trajectory.nbytes / 1e6,
        "variants": results,
    }


def _spread(xs: list[float]) -> str:
    if not xs:
        return "–"
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f"{statistics.median(xs):.3f} s (IQR {q[0]:.3f}–{q[2]:.3f}, n={len(xs)})"


def tables(data: dict) -> str:
    """Per-step tables, then one summary table, as Markdown."""
    out = [
        f"# Fidelity step by step: {data['scenario']['model']} {data['scenario']['height']}x"
        f"{data['scenario']['width']}, {data['scenario']['steps']} steps, guidance {data['scenario']['guidance']}, "
        f"{data['scenario']['dtype']} on {data['device_name']} (torch {data['torch']}, diffusers "
        f"{data['diffusers']})",
        "",
        f"Floor: {data['floor']['method']}; computed in {data['floor_s']:.1f} s. "
        f"Bound: error vs ref <= k × floor, k = {data['k']:g}.",
    ]
    if data["scenario"]["model"] in ("tiny", "synthetic"):
        out.append(
            f"Random weights: these floors and ratios are the {data['scenario']['model']} model's, not FLUX.1-dev's."
        )
    for name, entry in data["variants"].items():
        if "details" not in entry:
            continue
        out += [
            "",
            f"## {name}",
            "",
            "| step | floor | error vs ref | ratio | error vs eager | cosine vs eager |",
            "|---|---|---|---|---|---|",
        ]
        for row in entry["details"]["steps"]:
            out.append(
                f"| {row['step']} | {row['floor']:.4g} | {row['error_vs_ref']:.4g} | {row['ratio']:.2f} | "
                f"{row['error_vs_eager']:.4g} | {row['cosine_vs_eager']:.6f} |"
            )
    out += [
        "",
        "## Summary",
        "",
        "| variant | status | ratio min / median / max | first step past the bound | build s | latency | vs compile |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in data["variants"].items():
        if "skipped" in entry:
            out.append(f"| {name} | skipped: {entry['skipped']} | | | | | |")
            continue
        d = entry["details"]
        first = d["first_failure"]["step"] if d["first_failure"] else "–"
        vs = f"{entry['vs_compile'] - 1:+.1%} (median of paired rounds)" if "vs_compile" in entry else ""
        out.append(
            f"| {name} | {entry['status']} | {d['ratio_min']:.2f} / {d['ratio_median']:.2f} / "
            f"{d['ratio_max']:.2f} | {first} | {entry['build_s']:.1f} | {_spread(entry.get('latency_s', []))} "
            f"| {vs} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="synthetic")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--guidance", type=float, default=3.5)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated registered variants")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write every number as JSON here")
    args = ap.parse_args(argv)
    # Read by inductor whenever it compiles; set here, not at import, so that importing this module changes nothing.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/fluxperf-inductor")
    # This checkout's fluxperf, not an installed one.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from fluxperf.rules import FAIL
    from fluxperf.scenario import Scenario, shipped_prompts

    scenario = Scenario(
        model=args.model,
        height=args.height,
        width=args.width,
        steps=args.steps,
        guidance=args.guidance,
        dtype=args.dtype,
        device=args.device,
        prompts=shipped_prompts()[:1],
    )
    t0 = time.perf_counter()
    data = run(
        scenario, [n for n in args.variants.split(",") if n], args.rounds, args.seed, lambda text: _say(t0, text)
    )
    data["wall_s"] = time.perf_counter() - t0
    print(tables(data))
    print(f"\nwall {data['wall_s']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=2, default=str))
    return 1 if any(entry.get("status") == FAIL for entry in data["variants"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
