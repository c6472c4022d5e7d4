"""Reports: results JSON, Markdown tables, a latency bar chart and eager-vs-variant image grids."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from fluxperf import baselines, quality

MODEL_NOTES = {
    "tiny": "TINY toy model with random weights: checks the harness, says nothing about FLUX.1-dev",
    "synthetic": "SYNTHETIC: FLUX.1-dev architecture with random weights; real latencies, meaningless images",
}


def model_banner(model: str) -> str:
    return MODEL_NOTES.get(model, f"real model: {model}")


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _finite(x):
    return x if x is None or (isinstance(x, float) and math.isfinite(x)) or not isinstance(x, float) else None


def results_dict(bench) -> dict:
    """Everything measured this session, JSON-safe (inf and NaN become null)."""
    sc = bench.scenario
    out = {
        "generated_utc": utc_now(),
        "model_source": sc.model, "model_note": model_banner(sc.model),
        "scenario": {**sc.key(), "slug": sc.slug, "device": sc.device},
        "environment": bench.env,
        "baseline_file": str(bench.baseline_path) if bench.baseline_path else None,
        "baseline_found": bench.baseline is not None,
        "determinism": bench.determinism,
        "variants": {},
    }
    for name, r in bench.results.items():
        entry = {"status": r.status, "error": r.error, "timed": r.timed, "lossless": r.lossless,
                 "params": r.params, "build_s": r.build_s, "build_phases_s": r.phases,
                 "peak_mem_gb": r.peak_mem_gb, "eager_samples_s": r.eager_s, "samples_s": r.variant_s,
                 "verdicts": r.verdicts, "lpips_error": r.lpips_error, "worst_pair_png": r.worst_pair_png}
        if r.variant_s:
            med, iqr = r.latency()
            entry.update(latency_median_s=med, latency_iqr_s=iqr, n=len(r.variant_s))
        if r.variant_s and r.eager_s:
            sp = r.speedup()
            entry["speedup"] = {"value": sp.value, "ci_low": _finite(sp.ci_low), "ci_high": _finite(sp.ci_high),
                                "n": sp.n, "design": sp.design}
        entry["quality"] = {m: {"mean": quality.json_value(v["mean"]), "worst": quality.json_value(v["worst"]),
                                "worst_item": v["worst_item"], "per_image": [quality.json_value(x) for x in v["values"]],
                                **({"backbone": v["backbone"]} if "backbone" in v else {})}
                            for m, v in r.quality.items()}
        out["variants"][name] = entry
    return out


def _row(name, r) -> list[str]:
    if not r.variant_s:
        return [name, r.status, "–", "–", "–", "–"]
    med, iqr = r.latency()
    sp = r.speedup() if r.eager_s else None
    speed = "–" if sp is None else f"{sp.value:.2f}×" + (f" ({sp.ci_low:.2f}–{sp.ci_high:.2f})"
                                                        if math.isfinite(sp.ci_low) else "")
    if not r.timed:
        speed += " quality-only"
    mem = "–" if r.peak_mem_gb is None else f"{r.peak_mem_gb:.1f}"
    build = "–" if r.build_s is None else f"{r.build_s:.1f}"
    return [name, f"{med:.3f} ± {iqr / 2:.3f} (n={len(r.variant_s)})", speed, mem, build,
            ", ".join(f"{k} {v['status']}" for k, v in r.verdicts.items()) or r.status]


SPEED_HEADER = ["variant", "latency_s median ± IQR/2", "speedup vs eager (95% CI)", "peak_mem_gb", "build_s", "verdicts"]
QUALITY_HEADER = ["variant", "LPIPS mean / worst", "SSIM mean / worst", "PSNR mean / worst", "worst image (prompt, seed)"]


def speed_rows(bench) -> list[list[str]]:
    return [_row(n, r) for n, r in bench.results.items()]


def quality_rows(bench) -> list[list[str]]:
    rows = []
    for name, r in bench.results.items():
        if not r.quality:
            continue
        cells = [name]
        for m in ("lpips", "ssim", "psnr_db"):
            q = r.quality.get(m)
            if q is None:
                cells.append("unavailable")
                continue
            label = " (random backbone)" if q.get("backbone") == "random" else ""
            cells.append(f"{quality.fmt(m, q['mean'])} / {quality.fmt(m, q['worst'])}{label}")
        cells.append(str(tuple(r.quality["ssim"]["worst_item"])))
        rows.append(cells)
    return rows


def header_lines(bench) -> list[str]:
    env, sc = bench.env, bench.scenario
    return [f"model: {sc.model} — {model_banner(sc.model)}",
            f"gpu: {env['gpu']} (driver {env['driver'] or 'n/a'}, CUDA {env['cuda'] or 'n/a'}); host CPU: {env['host_cpu']}",
            f"scenario: {sc.height}x{sc.width}, {sc.steps} steps, guidance {sc.guidance}, {sc.dtype}, "
            f"{len(sc.prompts)} prompts x {len(sc.seeds)} seeds [{sc.slug}]",
            f"baseline: {bench.baseline_path or 'not looked up'}{'' if bench.baseline else ' (none)'}"]


def table_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def table_md(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|")
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]])


def markdown(bench, chart: str | None, grids: dict[str, str]) -> str:
    sc = bench.scenario
    parts = [f"# fluxperf report — {sc.model}", "", f"> **{model_banner(sc.model)}**", "",
             *[f"- {line}" for line in header_lines(bench)], f"- generated: {utc_now()}", ""]
    if bench.determinism and not bench.determinism["ok"]:
        parts += [f"> **WARNING: eager is not deterministic here** (worst PSNR of a re-render "
                  f"{quality.fmt('psnr_db', bench.determinism['worst_psnr_db'])}); quality verdicts are unreliable.", ""]
    parts += ["## Speed", "", table_md(SPEED_HEADER, speed_rows(bench)), ""]
    if chart:
        parts += [f"![latency per variant]({chart})", ""]
    qrows = quality_rows(bench)
    if qrows:
        parts += ["## Quality against eager", "", table_md(QUALITY_HEADER, qrows), ""]
        for name, r in bench.results.items():
            if r.lpips_error:
                parts += [f"- {name}: LPIPS unavailable: {r.lpips_error}"]
        parts += [f"![{name}]({path})" for name, path in grids.items()] + [""]
    failed = [(n, r.error) for n, r in bench.results.items() if r.status in ("failed", "skipped")]
    if failed:
        parts += ["## Not measured", ""] + [f"- **{n}**: {e}" for n, e in failed] + [""]
    messages = [(n, c, v) for n, r in bench.results.items() for c, v in r.verdicts.items() if v["status"] != "PASS"]
    if messages:
        parts += ["## Verdicts other than PASS", ""] + [f"- {v['status']} {c}: {v['message']}" for n, c, v in messages]
    return "\n".join(parts) + "\n"


def bar_chart(bench, path: Path) -> bool:
    """Median latency per variant with the speedup over eager printed on each bar."""
    rows = [(n, r) for n, r in bench.results.items() if r.variant_s]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2.5, 4.2))
    names = [n for n, _ in rows]
    medians = [r.latency()[0] for _, r in rows]
    iqrs = [r.latency()[1] / 2 for _, r in rows]
    colors = ["#888888" if n == "eager" else "#c04a4a" if not r.timed else "#3b6fb6" for n, r in rows]
    bars = ax.bar(names, medians, yerr=iqrs, color=colors, capsize=4)
    for bar, (_, r) in zip(bars, rows):
        label = f"{r.speedup().value:.2f}×" if r.eager_s else ""
        if not r.timed:
            label += "\n(quality-only)"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    xytext=(0, 3), textcoords="offset points", fontsize=9)
    ax.set_ylabel("seconds per image (median)")
    sc = bench.scenario
    ax.set_title(f"{sc.model} · {bench.env['gpu']} · {sc.height}x{sc.width}, {sc.steps} steps", fontsize=10)
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
    if r.images is None or not r.quality:
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


def write_all(bench) -> None:
    """Write every report file; called after each variant and at the end, so nothing measured is lost."""
    out = Path(bench.settings.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    baselines.write_atomic(out / "results.json", json.dumps(results_dict(bench), indent=2, allow_nan=False) + "\n")
    chart = "latency.png" if bar_chart(bench, out / "latency.png") else None
    grids = {n: f"grid-{n}.png" for n in bench.results
             if image_grid(bench, n, out / f"grid-{n}.png", bench.settings.grid_images)}
    baselines.write_atomic(out / "report.md", markdown(bench, chart, grids))
