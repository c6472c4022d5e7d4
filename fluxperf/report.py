"""Reports: results JSON, Markdown tables, a latency bar chart and eager-vs-variant image grids.

Everything a person reads (tables, Markdown, chart) is rendered from the results dict that
results_dict() returns, never from live Bench objects: a single-process session and a pytest-xdist
session, whose workers each measured some of the variants, then share one code path. Only the image
grids need the images themselves, so the process that holds them writes them (write_images).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from fluxperf import baselines, contention, environment, probe, quality

MODEL_NOTES = {
    "tiny": "TINY toy model with random weights: checks the harness, says nothing about FLUX.1-dev",
    "synthetic": "SYNTHETIC: FLUX.1-dev architecture with random weights; real latencies, meaningless images",
}


def model_banner(model: str) -> str:
    return MODEL_NOTES.get(model, f"real model: {model}")


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def grid_name(name: str) -> str:
    return f"grid-{name}.png"


def _has_grid(r) -> bool:
    return r.images is not None and bool(r.quality)


def results_dict(bench) -> dict:
    """Everything measured this session, JSON-safe (inf and NaN become null).

    Also what an xdist worker sends to the controller, so each variant carries what the controller
    needs without the Bench: its baseline entry, the worker and device that measured it, its grid file.
    """
    sc = bench.scenario
    out = {
        "generated_utc": utc_now(),
        "model_source": sc.model, "model_note": model_banner(sc.model),
        "scenario": {**sc.key(), "slug": sc.slug, "device": sc.device},
        "environment": bench.env,
        "baseline_file": str(bench.baseline_path) if bench.baseline_path else None,
        "baseline_found": bench.baseline is not None,
        "baseline_environment": (bench.baseline or {}).get("environment"),
        "baseline_recorded_utc": (bench.baseline or {}).get("recorded_utc"),
        "determinism": bench.determinism,
        "baseline_probe": _pooled_probe((bench.baseline or {}).get("variants", {}).values()),
        "variants": {},
    }
    for name, r in bench.results.items():
        entry = {"status": r.status, "error": r.error, "timed": r.timed, "lossless": r.lossless,
                 "worker": bench.worker, "device": bench.device,
                 "params": r.params, "build_s": r.build_s, "build_phases_s": r.phases,
                 "peak_mem_gb": r.peak_mem_gb, "eager_samples_s": r.eager_s, "samples_s": r.variant_s,
                 "cpu_samples_s": r.variant_cpu_s, "eager_cpu_samples_s": r.eager_cpu_s, "probe": r.probe,
                 "eager_probe": r.eager_probe, "warmup_s": r.warmup_s, "adaptive": r.adaptive,
                 "transformer_flops": r.work.transformer_flops if r.work else None,
                 "blocks_ran": r.work.blocks_ran if r.work else None,
                 "blocks_total": r.work.blocks_total if r.work else None,
                 "steps": r.steps, "contention": r.contention, "eager_contention": r.eager_contention,
                 "sharing": sharing_dict(contention.sharing(r.contention, r.variant_s)),
                 "design": r.design, "bound": r.bound, "gpu_busy": r.gpu_busy,
                 "cpu_share": r.cpu_share, "kernel_s": r.kernel_s, "libraries": list(r.libraries),
                 "verdicts": r.verdicts, "lpips_error": r.lpips_error, "worst_pair_png": r.worst_pair_png,
                 "fidelity": json_safe(r.fidelity),
                 "grid_png": grid_name(name) if _has_grid(r) else None}
        if r.variant_s:
            med, iqr = r.latency()
            entry.update(latency_median_s=med, latency_iqr_s=iqr, n=len(r.variant_s))
        if r.variant_s and r.eager_s:
            sp = r.speedup()
            entry["speedup"] = {"value": sp.value, "ci_low": quality.json_value(sp.ci_low), "ci_high": quality.json_value(sp.ci_high),
                                "n": sp.n, "design": sp.design}
        entry["quality"] = {m: {"mean": quality.json_value(v["mean"]), "worst": quality.json_value(v["worst"]),
                                "worst_item": v["worst_item"], "per_image": [quality.json_value(x) for x in v["values"]],
                                **({"backbone": v["backbone"]} if "backbone" in v else {})}
                            for m, v in r.quality.items()}
        # What --fluxperf-update-baselines writes for this variant, so whoever holds the merged dict can.
        entry["baseline_entry"] = baselines.entry(r) if r.status == "measured" else None
        out["variants"][name] = entry
    return out


def json_safe(obj):
    """A copy JSON can hold: infinities and NaN become null (the fidelity ratios can be infinite)."""
    if isinstance(obj, float):
        return quality.json_value(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


FIDELITY_HEADER = ["variant", "steps within the bound", "largest error / eager's own (step)", "median ratio",
                   "verdict"]


def fidelity_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, v in results["variants"].items():
        f = v.get("fidelity")
        if not f:
            continue
        if "skipped" in f:
            rows.append([name, "–", "–", "–", f"skipped: {f['skipped']}"])
            continue
        d = f["details"]
        worst = d["worst"]
        ratio = "∞" if worst["ratio"] is None else f"{worst['ratio']:.2f}×"
        rows.append([name, f"{d['n_steps'] - d['n_failing']} / {d['n_steps']} (bound {d['k']:g}×)",
                     f"{ratio} ({worst['step']})",
                     "–" if d["ratio_median"] is None else f"{d['ratio_median']:.2f}×", f["status"]])
    return rows


def random_weights_note(model: str) -> str | None:
    if model not in MODEL_NOTES:
        return None
    return (f"The {model} model has random weights: the image scores below and the fidelity floors and ratios say how "
            f"this code computes, not how FLUX.1-dev's images look.")


def sharing_dict(sh: contention.Sharing) -> dict:
    return {"gpu_busy": sh.gpu_busy, "host_wait": sh.host_wait, "procs": sh.procs, "clocks": list(sh.clocks),
            "shared": sh.shared}


def shared_line(results: dict) -> str | None:
    """One line for the top of every summary when another process shared the machine during timed calls."""
    parts = []
    for name, v in results["variants"].items():
        sh = v.get("sharing") or {}
        if not sh.get("shared"):
            continue
        what = []
        if (sh.get("gpu_busy") or 0) >= contention.SHARED_GPU_BUSY:
            what.append(f"GPU busy with another process {sh['gpu_busy']:.0%} of the time between its calls")
        if (sh.get("host_wait") or 0) >= contention.SHARED_HOST_WAIT:
            what.append(f"waited for a CPU for {sh['host_wait']:.0%} of its calls' time")
        parts.append(f"{name} ({'; '.join(what)})")
    if not parts:
        return None
    return ("THE MACHINE WAS SHARED during timed calls: " + ", ".join(parts) +
            ". Speed verdicts that the sharing could explain are INCONCLUSIVE, not judged; rerun on a quiet machine.")


def _pooled_probe(entries) -> dict | None:
    """Every probe sample of several variants' entries (baseline entries or results) in one dict of lists."""
    pooled = {k: [x for e in entries for key in ("probe", "eager_probe") if e.get(key) for x in e[key][k]]
              for k in probe.PROBES}
    return pooled if all(pooled.values()) else None


def probe_rows(results: dict) -> list[list[str]]:
    """The machine probe of this session beside the baseline's, as rates: what the speed rule corrects for."""
    now = _pooled_probe(results["variants"].values())
    if now is None:
        return []
    before = results.get("baseline_probe")
    labels = [("matmul_s", "GPU matmul, TFLOP/s", "matmul_tflops", "{:.0f}"),
              ("copy_s", "GPU copy, GB/s (read + written)", "copy_gbps", "{:.0f}"),
              ("launch_s", "host small-op loop, µs per iteration", "launch_us", "{:.1f}")]
    device = results["scenario"]["device"]
    rates_now = probe.rates(probe.medians(now), device)
    rates_before = probe.rates(probe.medians(before), device) if before else None
    rows = []
    for key, label, rate, fmt in labels:
        cells = [label, fmt.format(rates_now[rate])]
        if rates_before:
            ratio = probe.medians(now)[key] / probe.medians(before)[key]
            cells += [fmt.format(rates_before[rate]), f"{ratio:.3f}× the baseline's time"]
        else:
            cells += ["–", "–"]
        rows.append(cells)
    return rows


PROBE_HEADER = ["machine probe (median)", "this session", "baseline", "change"]
ROOFLINE_HEADER = ["variant", "transformer TFLOP per image", "achieved TFLOP/s", "share of the matmul ceiling",
                   "block computations ran / reused"]


def roofline_rows(results: dict) -> list[list[str]]:
    """Per variant: the transformer's counted FLOPs per image, over the image's median latency, against the bf16
    matmul rate the probe measured in this session (the card's ceiling as this session found it)."""
    pooled = _pooled_probe(results["variants"].values())
    ceiling = probe.rates(probe.medians(pooled), results["scenario"]["device"])["matmul_tflops"] if pooled else None
    rows = []
    for name, v in results["variants"].items():
        flops = v.get("transformer_flops")
        if not v["samples_s"] or (flops is None and v.get("blocks_total") is None):
            continue
        achieved = flops / v["latency_median_s"] / 1e12 if flops else None
        blocks = "–" if v.get("blocks_total") is None else f"{v['blocks_ran']} / {v['blocks_total'] - v['blocks_ran']}"
        if v.get("adaptive") and v.get("blocks_total") and results["model_source"] in ("tiny", "synthetic"):
            blocks += " (adaptive: on random weights not representative)"
        rows.append([name, "–" if flops is None else f"{flops / 1e12:.3g}",
                     "–" if achieved is None else f"{achieved:.3g}",
                     "–" if achieved is None or not ceiling else f"{achieved / ceiling:.0%} of {ceiling:.3g}", blocks])
    return rows
ENV_FIELDS = ("gpu", "driver", "cuda", "python", "host_cpu", "commit")


def environment_rows(results: dict) -> list[list[str]]:
    """What this session ran with beside what the baseline was recorded with; changed rows are marked."""
    now, before = results["environment"], results.get("baseline_environment") or {}
    libs = sorted({*environment.CORE_LIBRARIES, *(l for v in results["variants"].values() for l in v.get("libraries", ())),
                   *(k for k, x in (now.get("versions") or {}).items() if x)})
    rows = []
    for field in ENV_FIELDS:
        rows.append([field, str(now.get(field)), str(before.get(field, "–")) if before else "–"])
    for lib in libs:
        rows.append([lib, str((now.get("versions") or {}).get(lib)),
                     str((before.get("versions") or {}).get(lib)) if before else "–"])
    for row in rows:
        if before and row[1] != row[2]:
            row[0] = f"**{row[0]}** (changed)"
    return rows


ENV_HEADER = ["", "this session", "baseline"]


def merge(parts: dict[str, dict], order: list[str], device: str) -> dict:
    """One results dict from the per-worker dicts of a pytest-xdist session ({worker id: results_dict}).

    Each variant was measured by exactly one worker (its tests share an xdist_group); the header comes
    from the worker that measured eager, as does the determinism check; `device` is the session's
    device before each worker was pinned to its own GPU.
    """
    if not parts:
        raise ValueError("no worker reported fluxperf results")
    variants: dict[str, dict] = {}
    for worker, part in sorted(parts.items()):
        for name, entry in part["variants"].items():
            if name in variants:
                raise ValueError(f"variant {name} was measured by both {variants[name]['worker']} and {worker}: "
                                 "its tests must share one worker (--dist loadgroup)")
            variants[name] = entry
    ranked = sorted(variants, key=lambda n: (order.index(n) if n in order else len(order), n))
    lead = next((p for p in parts.values() if "eager" in p["variants"]), next(iter(parts.values())))
    merged = {**lead, "generated_utc": utc_now(), "scenario": {**lead["scenario"], "device": device},
              "determinism": next((p["determinism"] for p in parts.values() if p["determinism"]), None),
              "baseline_found": any(p["baseline_found"] for p in parts.values()),
              "workers": {w: {"device": p["scenario"]["device"], "gpu": p["environment"]["gpu"],
                              "variants": list(p["variants"])} for w, p in sorted(parts.items())},
              "variants": {n: variants[n] for n in ranked}}
    return merged


def _ci(sp) -> str:
    return f" ({sp['ci_low']:.2f}–{sp['ci_high']:.2f})" if sp["ci_low"] is not None and sp["ci_high"] is not None else ""


def _busy(v) -> str:
    """GPU busy share of a call, and process CPU time over wall time; "host-bound" when the GPU waits."""
    gpu = "–" if v.get("gpu_busy") is None else f"{v['gpu_busy']:.0%}"
    cpu = "–" if v.get("cpu_share") is None else f"{v['cpu_share']:.0%}"
    return f"{gpu} / {cpu}" + (" host-bound" if v.get("bound") == "host" else "")


def _row(name, v) -> list[str]:
    if not v["samples_s"]:
        return [name, v["status"], "–", "–", "–", "–", "–", "–"]
    sp = v.get("speedup")
    speed = "–" if sp is None else f"{sp['value']:.2f}×" + _ci(sp)
    if not v["timed"]:
        speed += " quality-only"
    mem = "–" if v["peak_mem_gb"] is None else f"{v['peak_mem_gb']:.1f}"
    build = "–" if v["build_s"] is None else f"{v['build_s']:.1f}"
    return [name, f"{v['latency_median_s']:.3f} ± {v['latency_iqr_s'] / 2:.3f} (n={v['n']})", speed,
            v.get("design", "–"), _busy(v), mem, build,
            ", ".join(f"{k} {x['status']}" for k, x in v["verdicts"].items()) or v["status"]]


SPEED_HEADER = ["variant", "latency_s median ± IQR/2", "speedup vs eager (95% CI)", "design",
                "GPU busy / CPU per wall", "peak_mem_gb", "build_s", "verdicts"]
QUALITY_HEADER = ["variant", "LPIPS mean / worst", "SSIM mean / worst", "PSNR mean / worst", "worst image (prompt, seed)"]


def speed_rows(results: dict) -> list[list[str]]:
    return [_row(n, v) for n, v in results["variants"].items()]


def quality_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, v in results["variants"].items():
        if not v["quality"]:
            continue
        cells = [name]
        for m in ("lpips", "ssim", "psnr_db"):
            q = v["quality"].get(m)
            if q is None:
                cells.append("unavailable")
                continue
            label = " (random backbone)" if q.get("backbone") == "random" else ""
            cells.append(f"{quality.fmt(m, _inf(m, q['mean']))} / {quality.fmt(m, _inf(m, q['worst']))}{label}")
        cells.append(str(tuple(v["quality"]["ssim"]["worst_item"])))
        rows.append(cells)
    return rows


def _inf(metric: str, value):
    # results_dict writes an infinite PSNR (identical images) as null; show it as "identical" again.
    return math.inf if value is None and metric == "psnr_db" else value


def header_lines(results: dict) -> list[str]:
    env, sc, model = results["environment"], results["scenario"], results["model_source"]
    shared = shared_line(results)
    lines = [shared] if shared else []
    lines += [f"model: {model} — {model_banner(model)}",
             f"gpu: {env['gpu']} (driver {env['driver'] or 'n/a'}, CUDA {env['cuda'] or 'n/a'}); host CPU: {env['host_cpu']}",
             f"scenario: {sc['height']}x{sc['width']}, {sc['steps']} steps, guidance {sc['guidance']}, {sc['dtype']}, "
             f"{sc['num_prompts']} prompts x {len(sc['seeds'])} seeds [{sc['slug']}]",
             f"baseline: {results['baseline_file'] or 'not looked up'}{'' if results['baseline_found'] else ' (none)'}"]
    if results.get("workers"):
        lines.append("pytest-xdist workers: " + "; ".join(
            f"{w} on {info['device']}: {', '.join(info['variants']) or 'nothing measured'}"
            for w, info in results["workers"].items()))
    return lines


def table_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def table_md(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|")
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]])


def markdown(results: dict, chart: str | None) -> str:
    model, det = results["model_source"], results["determinism"]
    shared = shared_line(results)
    parts = [f"# fluxperf report — {model}", "", *([f"> **{shared}**", ""] if shared else []),
             f"> **{model_banner(model)}**", "",
             *[f"- {line}" for line in header_lines(results) if line != shared],
             f"- generated: {results['generated_utc']}", ""]
    if det and not det["ok"]:
        parts += [f"> **WARNING: eager is not deterministic here** (worst PSNR of a re-render "
                  f"{quality.fmt('psnr_db', _inf('psnr_db', det['worst_psnr_db']))}); quality verdicts are unreliable.", ""]
    parts += ["## Speed", "", table_md(SPEED_HEADER, speed_rows(results)), "",
              "- *design*: paired rounds alternate eager and the variant image by image; blocks time eager's images "
              "and then the variant's (variants that change eager's weights).",
              "- *GPU busy / CPU per wall*: the share of one call the GPU spent in kernels, and the process's CPU "
              "time over its wall time. A **host-bound** pipeline leaves the GPU waiting for the host: its time "
              "measures the host CPU as much as the GPU. CUDA's waits spin, so CPU time is close to wall time for "
              "GPU-bound pipelines too.", ""]
    if chart:
        parts += [f"![latency per variant]({chart})", ""]
    rrows = roofline_rows(results)
    if rrows:
        parts += ["## Roofline", "", "Transformer FLOPs counted on one call with torch.compile bypassed "
                  "(torch.utils.flop_counter; skipped computation is not counted), over the median latency of a "
                  "whole image, against the bf16 matmul rate the probe measured beside every call of this session.",
                  "", table_md(ROOFLINE_HEADER, rrows), ""]
    prows = probe_rows(results)
    if prows:
        parts += ["## Machine probe", "", "Timed before every pipeline call; the speed verdicts take the machine's "
                  "change out before judging a variant.", "", table_md(PROBE_HEADER, prows), ""]
    parts += ["## Environment", "", table_md(ENV_HEADER, environment_rows(results)), ""]
    qrows, frows = quality_rows(results), fidelity_rows(results)
    variants = results["variants"]
    note = random_weights_note(results["model_source"])
    if frows:
        parts += ["## Fidelity step by step (lossless variants)", "",
                  "Each step of the first prompt's trajectory, with eager's own inputs: the variant's error against "
                  "eager's transformer computed in higher precision, over eager's own error (the bound is 2×).",
                  *([f"*{note}*"] if note else []), "", table_md(FIDELITY_HEADER, frows), ""]
    if qrows:
        parts += ["## Quality against eager", "", *([f"*{note}*", ""] if note else []),
                  table_md(QUALITY_HEADER, qrows), ""]
        for name, v in variants.items():
            if v["lpips_error"]:
                parts += [f"- {name}: LPIPS unavailable: {v['lpips_error']}"]
        parts += [f"![{name}]({v['grid_png']})" for name, v in variants.items() if v["grid_png"]] + [""]
    failed = [(n, v["error"]) for n, v in variants.items() if v["status"] in ("failed", "skipped")]
    if failed:
        parts += ["## Not measured", ""] + [f"- **{n}**: {e}" for n, e in failed] + [""]
    messages = [(n, c, x) for n, v in variants.items() for c, x in v["verdicts"].items() if x["status"] != "PASS"]
    if messages:
        parts += ["## Verdicts other than PASS", ""] + [f"- {x['status']} {c}: {x['message']}" for n, c, x in messages]
    return "\n".join(parts) + "\n"


def bar_chart(results: dict, path: Path) -> bool:
    """Median latency per variant with the speedup over eager printed on each bar."""
    rows = [(n, v) for n, v in results["variants"].items() if v["samples_s"]]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2.5, 4.2))
    names = [n for n, _ in rows]
    medians = [v["latency_median_s"] for _, v in rows]
    iqrs = [v["latency_iqr_s"] / 2 for _, v in rows]
    colors = ["#888888" if n == "eager" else "#c04a4a" if not v["timed"] else "#3b6fb6" for n, v in rows]
    bars = ax.bar(names, medians, yerr=iqrs, color=colors, capsize=4)
    for bar, (_, v) in zip(bars, rows):
        label = f"{v['speedup']['value']:.2f}×" if v.get("speedup") else ""
        if not v["timed"]:
            label += "\n(quality-only)"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    xytext=(0, 3), textcoords="offset points", fontsize=9)
    ax.set_ylabel("seconds per image (median)")
    sc = results["scenario"]
    ax.set_title(f"{results['model_source']} · {results['environment']['gpu']} · {sc['height']}x{sc['width']}, "
                 f"{sc['steps']} steps", fontsize=10)
    ax.margins(y=0.2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _pil(img_u8):
    from PIL import Image
    return Image.fromarray(img_u8.permute(1, 2, 0).numpy())


def save_pair(ref_u8, img_u8, path: Path, caption: str) -> None:
    from PIL import Image, ImageDraw
    a, b = _pil(ref_u8), _pil(img_u8)
    canvas = Image.new("RGB", (a.width + b.width + 8, a.height + 20), "white")
    canvas.paste(a, (0, 20))
    canvas.paste(b, (a.width + 8, 20))
    ImageDraw.Draw(canvas).text((4, 4), caption, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def image_grid(bench, name: str, path: Path, count: int) -> bool:
    """Eager beside the variant for the first prompts, metrics under each pair."""
    r = bench.results[name]
    if not _has_grid(r):
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference, items = bench.reference(), bench.scenario.items
    count = min(count, len(items))
    fig, axes = plt.subplots(count, 2, figsize=(5.2, 2.9 * count), squeeze=False)
    for i in range(count):
        p, seed = items[i]
        for j, (img, title) in enumerate(((reference[i], "eager"), (r.images[i], name))):
            ax = axes[i][j]
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{title} — prompt {p}, seed {seed}", fontsize=7)
        metrics = [f"{m.upper() if m != 'psnr_db' else 'PSNR'} {quality.fmt(m, r.quality[m]['values'][i])}"
                   for m in ("lpips", "ssim", "psnr_db") if m in r.quality]
        axes[i][1].set_xlabel("  ".join(metrics), fontsize=7)
        axes[i][0].set_xlabel(bench.scenario.prompts[p][:48], fontsize=6)
    fig.suptitle(f"{name} vs eager ({bench.scenario.model})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_images(bench) -> None:
    """The image grids: written by the process that holds the images (an xdist worker, or the session)."""
    out = Path(bench.settings.report_dir)
    for name in bench.results:
        image_grid(bench, name, out / grid_name(name), bench.settings.grid_images)


def write_summary(results: dict, report_dir: Path) -> None:
    """results.json, latency.png and report.md from a results dict (one session's, or merged workers')."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    baselines.write_atomic(out / "results.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
    chart = "latency.png" if bar_chart(results, out / "latency.png") else None
    baselines.write_atomic(out / "report.md", markdown(results, chart))


def write_all(bench) -> dict:
    """Every report file of a single-process session; called after each variant and at the end, so
    nothing measured is lost. Returns the results dict the files were rendered from."""
    write_images(bench)
    results = results_dict(bench)
    write_summary(results, bench.settings.report_dir)
    return results
