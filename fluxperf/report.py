"""Reports: the results document (results.json), its Markdown and terminal tables, and the files the plugin writes.

Everything a person reads is rendered from the results document that document() returns, never from live objects:
a single-process session and a pytest-xdist session, whose workers each measured some of the variants, then share
one code path. Each variant in it is a fluxperf.result.Result as it serializes itself; the tables read it back with
Result.from_json. Only the image grids need the images themselves, so the process that holds them writes them
(fluxperf.figures).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from fluxperf import baselines, contention, environment, figures, metrics, probe
from fluxperf.metrics import METRICS, WORST_BY
from fluxperf.result import SCHEMA_VERSION, Result

MODEL_NOTES = {
    "tiny": "TINY toy model with random weights: checks the harness, says nothing about FLUX.1-dev",
    "synthetic": "SYNTHETIC: FLUX.1-dev architecture with random weights; real latencies, meaningless images",
}


def model_banner(model: str) -> str:
    return MODEL_NOTES.get(model, f"real model: {model}")


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def document(scenario, env: dict, baseline_path, baseline: dict | None, determinism, results: dict) -> dict:
    """Everything measured this session, JSON-safe: results.json, and what an xdist worker sends the controller.
    `results`: fluxperf.result.Result by name; `baseline`: the loaded baseline, if any."""
    recorded = [Result.from_json(v).timings for v in (baseline or {}).get("variants", {}).values()]
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_utc": utc_now(),
        "model_source": scenario.model,
        "model_note": model_banner(scenario.model),
        "scenario": {**scenario.key(), "slug": scenario.slug, "device": scenario.device},
        "environment": env,
        "baseline_file": str(baseline_path) if baseline_path else None,
        "baseline_found": baseline is not None,
        "baseline_environment": (baseline or {}).get("environment"),
        "baseline_recorded_utc": (baseline or {}).get("recorded_utc"),
        "determinism": determinism,
        "baseline_probe": _pooled_probe(recorded),
        "variants": {name: r.to_json() for name, r in results.items()},
    }


def variants(doc: dict) -> dict[str, Result]:
    return {name: Result.from_json(v) for name, v in doc["variants"].items()}


def merge(parts: dict[str, dict], order: list[str], device: str) -> dict:
    """One results document from the per-worker ones of a pytest-xdist session ({worker id: document}).

    Each variant was measured by exactly one worker (its tests share an xdist_group); the header comes
    from the worker that measured eager, as does the determinism check; `device` is the session's
    device before each worker was pinned to its own GPU.
    """
    if not parts:
        raise ValueError("no worker reported fluxperf results")
    found: dict[str, dict] = {}
    for worker, part in sorted(parts.items()):
        for name, entry in part["variants"].items():
            if name in found:
                raise ValueError(
                    f"variant {name} was measured by both {found[name]['worker']} and {worker}: "
                    "its tests must share one worker (--dist loadgroup)"
                )
            found[name] = entry
    ranked = sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n))
    lead = next((p for p in parts.values() if "eager" in p["variants"]), next(iter(parts.values())))
    return {
        **lead,
        "generated_utc": utc_now(),
        "scenario": {**lead["scenario"], "device": device},
        "determinism": next((p["determinism"] for p in parts.values() if p["determinism"]), None),
        "baseline_found": any(p["baseline_found"] for p in parts.values()),
        "workers": {
            w: {"device": p["scenario"]["device"], "gpu": p["environment"]["gpu"], "variants": list(p["variants"])}
            for w, p in sorted(parts.items())
        },
        "variants": {n: found[n] for n in ranked},
    }


# ----- tables ----------------------------------------------------------------------------------------------------

FIDELITY_HEADER = ["variant", "steps within the bound", "largest error / eager's own (step)", "median ratio", "verdict"]


def _rows(doc: dict, row) -> list[list[str]]:
    """A table's rows: row(name, result) for each variant, those it returns None for left out."""
    return [cells for name, r in variants(doc).items() if (cells := row(name, r)) is not None]


def _fidelity_row(name: str, r: Result) -> list[str] | None:
    f = r.quality.fidelity
    if not f:
        return None
    if "skipped" in f:
        return [name, "–", "–", "–", f"skipped: {f['skipped']}"]
    d = f["details"]
    worst = d["worst"]
    ratio = "∞" if worst["ratio"] is None else f"{worst['ratio']:.2f}×"
    return [
        name,
        f"{d['n_steps'] - d['n_failing']} / {d['n_steps']} (bound {d['k']:g}×)",
        f"{ratio} ({worst['step']})",
        "–" if d["ratio_median"] is None else f"{d['ratio_median']:.2f}×",
        f["status"],
    ]


def fidelity_rows(doc: dict) -> list[list[str]]:
    return _rows(doc, _fidelity_row)


def random_weights_note(model: str) -> str | None:
    if model not in MODEL_NOTES:
        return None
    return (
        f"The {model} model has random weights: the image scores below and the fidelity floors and ratios say how "
        f"this code computes, not how FLUX.1-dev's images look."
    )


def shared_line(doc: dict) -> str | None:
    """One line for the top of every summary when another process shared the machine during timed calls."""
    parts = []
    for name, r in variants(doc).items():
        sh = r.timings.sharing
        if not sh.shared:
            continue
        what = []
        if (sh.gpu_busy or 0) >= contention.SHARED_GPU_BUSY:
            what.append(f"GPU busy with another process {sh.gpu_busy:.0%} of the time between its calls")
        if (sh.host_wait or 0) >= contention.SHARED_HOST_WAIT:
            what.append(f"waited for a CPU for {sh.host_wait:.0%} of its calls' time")
        parts.append(f"{name} ({'; '.join(what)})")
    if not parts:
        return None
    return (
        "THE MACHINE WAS SHARED during timed calls: "
        + ", ".join(parts)
        + ". Speed verdicts that the sharing could explain are INCONCLUSIVE, not judged; rerun on a quiet machine."
    )


def _pooled_probe(timings) -> dict | None:
    """Every probe sample of several pipelines' timings (this session's or a baseline's) in one dict of lists."""
    pooled = {k: [x for t in timings for x in t.all_probe[k]] for k in probe.PROBES}
    return pooled if all(pooled.values()) else None


PROBE_HEADER = ["machine probe (median)", "this session", "baseline", "change"]


def probe_rows(doc: dict) -> list[list[str]]:
    """The machine probe of this session beside the baseline's, as rates: what the speed rule corrects for."""
    now = _pooled_probe([r.timings for r in variants(doc).values()])
    if now is None:
        return []
    before = doc.get("baseline_probe")
    labels = [
        ("matmul_s", "GPU matmul, TFLOP/s", "matmul_tflops", "{:.0f}"),
        ("copy_s", "GPU copy, GB/s (read + written)", "copy_gbps", "{:.0f}"),
        ("launch_s", "host small-op loop, µs per iteration", "launch_us", "{:.1f}"),
    ]
    device = doc["scenario"]["device"]
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


ROOFLINE_HEADER = [
    "variant",
    "transformer TFLOP per image",
    "achieved TFLOP/s",
    "share of the matmul ceiling",
    "block computations ran / reused",
]


def roofline_rows(doc: dict) -> list[list[str]]:
    """Per variant: the transformer's counted FLOPs per image, over the image's median latency, against the bf16
    matmul rate the probe measured in this session (the card's ceiling as this session found it)."""
    results = variants(doc)
    pooled = _pooled_probe([r.timings for r in results.values()])
    ceiling = probe.rates(probe.medians(pooled), doc["scenario"]["device"])["matmul_tflops"] if pooled else None
    rows = []
    for name, r in results.items():
        work = r.timings.work
        if not r.timings.samples_s or work is None or (work.transformer_flops is None and work.blocks_total is None):
            continue
        flops = work.transformer_flops
        achieved = flops / r.timings.latency_s / 1e12 if flops else None
        blocks = "–" if work.blocks_total is None else f"{work.blocks_ran} / {work.blocks_reused}"
        if r.adaptive and work.blocks_total and doc["model_source"] in ("tiny", "synthetic"):
            blocks += " (adaptive: on random weights not representative)"
        rows.append(
            [
                name,
                "–" if flops is None else f"{flops / 1e12:.3g}",
                "–" if achieved is None else f"{achieved:.3g}",
                "–" if achieved is None or not ceiling else f"{achieved / ceiling:.0%} of {ceiling:.3g}",
                blocks,
            ]
        )
    return rows


ENV_FIELDS = ("gpu", "driver", "cuda", "python", "host_cpu", "commit")
ENV_HEADER = ["", "this session", "baseline"]


def environment_rows(doc: dict) -> list[list[str]]:
    """What this session ran with beside what the baseline was recorded with; changed rows are marked."""
    now, before = doc["environment"], doc.get("baseline_environment") or {}
    libs = sorted(
        {
            *environment.CORE_LIBRARIES,
            *(lib for r in variants(doc).values() for lib in r.libraries),
            *(k for k, x in (now.get("versions") or {}).items() if x),
        }
    )
    rows = [[field, str(now.get(field)), str(before.get(field, "–")) if before else "–"] for field in ENV_FIELDS]
    rows += [
        [
            lib,
            str((now.get("versions") or {}).get(lib)),
            str((before.get("versions") or {}).get(lib)) if before else "–",
        ]
        for lib in libs
    ]
    for row in rows:
        if before and row[1] != row[2]:
            row[0] = f"**{row[0]}** (changed)"
    return rows


def _busy(t) -> str:
    """GPU busy share of a call, and process CPU time over wall time; "host-bound" when the GPU waits."""
    gpu = "–" if t.gpu_busy is None else f"{t.gpu_busy:.0%}"
    cpu = "–" if t.cpu_share is None else f"{t.cpu_share:.0%}"
    return f"{gpu} / {cpu}" + (" host-bound" if t.bound == "host" else "")


def _row(name: str, r: Result) -> list[str]:
    t = r.timings
    if not t.samples_s:
        return [name, r.status, "–", "–", "–", "–", "–", "–"]
    sp = t.speedup()
    ci = f" ({sp.ci_low:.2f}–{sp.ci_high:.2f})" if sp and all(map(math.isfinite, (sp.ci_low, sp.ci_high))) else ""
    speed = "–" if sp is None else f"{sp.value:.2f}×{ci}"
    if not r.timed:
        speed += " quality-only"
    mem = "–" if t.peak_mem_gb is None else f"{t.peak_mem_gb:.1f}"
    build = "–" if t.build_s is None else f"{t.build_s:.1f}"
    return [
        name,
        f"{t.latency_s:.3f} ± {t.latency_iqr_s / 2:.3f} (n={t.rounds})",
        speed,
        t.design,
        _busy(t),
        mem,
        build,
        ", ".join(f"{k} {x['status']}" for k, x in r.verdicts.items()) or r.status,
    ]


SPEED_HEADER = [
    "variant",
    "latency_s median ± IQR/2",
    "speedup vs eager (95% CI)",
    "design",
    "GPU busy / CPU per wall",
    "peak_mem_gb",
    "build_s",
    "verdicts",
]
QUALITY_HEADER = ["variant", *(f"{m.label} mean / worst" for m in METRICS.values()), "worst image (prompt, seed)"]


def speed_rows(doc: dict) -> list[list[str]]:
    return _rows(doc, _row)


def _quality_row(name: str, r: Result) -> list[str] | None:
    scores = r.quality.scores
    if not scores:
        return None
    cells = [name]
    for m in METRICS.values():
        s = scores.get(m.name)
        label = " (random backbone)" if s is not None and s.backbone == "random" else ""
        cells.append("unavailable" if s is None else f"{m.fmt(s.mean)} / {m.fmt(s.worst)}{label}")
    return [*cells, str(tuple(scores[WORST_BY].worst_item))]


def quality_rows(doc: dict) -> list[list[str]]:
    return _rows(doc, _quality_row)


def judged_note(num_prompts: int, quality_prompts: int | None) -> str:
    """Said beside the prompt count when --fluxperf-quality-prompts judges fewer images than are timed."""
    if quality_prompts is None:
        return ""
    return f"; quality judged on the first {quality_prompts} of {num_prompts} prompts"


def header_lines(doc: dict) -> list[str]:
    env, sc, model = doc["environment"], doc["scenario"], doc["model_source"]
    shared = shared_line(doc)
    lines = [shared] if shared else []
    lines += [
        f"model: {model} — {model_banner(model)}",
        f"gpu: {env['gpu']} (driver {env['driver'] or 'n/a'}, CUDA {env['cuda'] or 'n/a'}); "
        f"host CPU: {env['host_cpu']}",
        f"scenario: {sc['height']}x{sc['width']}, {sc['steps']} steps, guidance {sc['guidance']}, {sc['dtype']}, "
        f"{sc['num_prompts']} prompts x {len(sc['seeds'])} seeds"
        f"{judged_note(sc['num_prompts'], sc.get('quality_prompts'))} [{sc['slug']}]",
        f"baseline: {doc['baseline_file'] or 'not looked up'}{'' if doc['baseline_found'] else ' (none)'}",
    ]
    if doc.get("workers"):
        lines.append(
            "pytest-xdist workers: "
            + "; ".join(
                f"{w} on {info['device']}: {', '.join(info['variants']) or 'nothing measured'}"
                for w, info in doc["workers"].items()
            )
        )
    return lines


def table_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def table_md(header: list[str], rows: list[list[str]]) -> str:
    def esc(cell):
        return str(cell).replace("|", "\\|")

    return "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *["| " + " | ".join(esc(c) for c in row) + " |" for row in rows],
        ]
    )


# ----- report.md -------------------------------------------------------------------------------------------------


def _top(doc: dict) -> list[str]:
    model, det, shared = doc["model_source"], doc["determinism"], shared_line(doc)
    parts = [
        f"# fluxperf report — {model}",
        "",
        *([f"> **{shared}**", ""] if shared else []),
        f"> **{model_banner(model)}**",
        "",
        *[f"- {line}" for line in header_lines(doc) if line != shared],
        f"- generated: {doc['generated_utc']}",
        "",
    ]
    if det and not det["ok"]:
        worst = metrics.fmt("psnr_db", metrics.from_json("psnr_db", det["worst_psnr_db"]))
        parts += [
            f"> **WARNING: eager is not deterministic here** (worst PSNR of a re-render {worst}); quality "
            f"verdicts are unreliable.",
            "",
        ]
    return parts


def _speed(doc: dict, chart: str | None) -> list[str]:
    parts = [
        "## Speed",
        "",
        table_md(SPEED_HEADER, speed_rows(doc)),
        "",
        "- *design*: paired rounds alternate eager and the variant image by image; blocks time eager's images "
        "and then the variant's (variants that change eager's weights).",
        "- *GPU busy / CPU per wall*: the share of one call the GPU spent in kernels, and the process's CPU "
        "time over its wall time. A **host-bound** pipeline leaves the GPU waiting for the host: its time "
        "measures the host CPU as much as the GPU. CUDA's waits spin, so CPU time is close to wall time for "
        "GPU-bound pipelines too.",
        "",
    ]
    if chart:
        parts += [f"![latency per variant]({chart})", ""]
    rrows = roofline_rows(doc)
    if rrows:
        parts += [
            "## Roofline",
            "",
            "Transformer FLOPs counted on one call with torch.compile bypassed "
            "(torch.utils.flop_counter; skipped computation is not counted), over the median latency of a "
            "whole image, against the bf16 matmul rate the probe measured beside every call of this session.",
            "",
            table_md(ROOFLINE_HEADER, rrows),
            "",
        ]
    prows = probe_rows(doc)
    if prows:
        parts += [
            "## Machine probe",
            "",
            "Timed before every pipeline call; the speed verdicts take the machine's "
            "change out before judging a variant.",
            "",
            table_md(PROBE_HEADER, prows),
            "",
        ]
    return parts


def _quality(doc: dict) -> list[str]:
    parts, results = [], variants(doc)
    qrows, frows, note = quality_rows(doc), fidelity_rows(doc), random_weights_note(doc["model_source"])
    if frows:
        parts += [
            "## Fidelity step by step (lossless variants)",
            "",
            "Each step of the first prompt's trajectory, with eager's own inputs: the variant's error against "
            "eager's transformer computed in higher precision, over eager's own error (the bound is 2×).",
            *([f"*{note}*"] if note else []),
            "",
            table_md(FIDELITY_HEADER, frows),
            "",
        ]
    if qrows:
        parts += [
            "## Quality against eager",
            "",
            *([f"*{note}*", ""] if note else []),
            table_md(QUALITY_HEADER, qrows),
            "",
        ]
        parts += [
            f"- {name}: {METRICS[m].label} unavailable: {error}"
            for name, r in results.items()
            for m, error in r.quality.errors.items()
        ]
        parts += [f"![{name}]({figures.grid_name(name)})" for name, r in results.items() if r.quality.scores] + [""]
    return parts


def markdown(doc: dict, chart: str | None) -> str:
    results = variants(doc)
    parts = [
        *_top(doc),
        *_speed(doc, chart),
        "## Environment",
        "",
        table_md(ENV_HEADER, environment_rows(doc)),
        "",
        *_quality(doc),
    ]
    failed = [(n, r.error) for n, r in results.items() if r.status in ("failed", "skipped")]
    if failed:
        parts += ["## Not measured", ""] + [f"- **{n}**: {e}" for n, e in failed] + [""]
    messages = [(c, x) for r in results.values() for c, x in r.verdicts.items() if x["status"] != "PASS"]
    if messages:
        parts += ["## Verdicts other than PASS", ""] + [f"- {x['status']} {c}: {x['message']}" for c, x in messages]
    return "\n".join(parts) + "\n"


def write_summary(doc: dict, report_dir: Path) -> None:
    """results.json, latency.png and report.md from a results document (one session's, or merged workers')."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    baselines.write_atomic(out / "results.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    chart = "latency.png" if figures.bar_chart(doc, variants(doc), out / "latency.png") else None
    baselines.write_atomic(out / "report.md", markdown(doc, chart))
