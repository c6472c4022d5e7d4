"""The report's pictures: the latency bar chart, eager-vs-variant image grids, and a variant's worst image pair."""

from __future__ import annotations

from pathlib import Path

from fluxperf.metrics import METRICS, WORST_BY


def grid_name(name: str) -> str:
    return f"grid-{name}.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)


def bar_chart(document: dict, results: dict, path: Path) -> bool:
    """Median latency per variant (fluxperf.result.Result by name) with the speedup over eager on each bar."""
    rows = [(n, r) for n, r in results.items() if r.timings.samples_s]
    if not rows:
        return False
    fig, ax = _pyplot().subplots(figsize=(1.6 * len(rows) + 2.5, 4.2))
    colors = ["#888888" if n == "eager" else "#c04a4a" if not r.timed else "#3b6fb6" for n, r in rows]
    bars = ax.bar(
        [n for n, _ in rows],
        [r.timings.latency_s for _, r in rows],
        yerr=[r.timings.latency_iqr_s / 2 for _, r in rows],
        color=colors,
        capsize=4,
    )
    for bar, (_, r) in zip(bars, rows):
        sp = r.timings.speedup()
        label = f"{sp.value:.2f}×" if sp else ""
        if not r.timed:
            label += "\n(quality-only)"
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=9,
        )
    ax.set_ylabel("seconds per image (median)")
    sc = document["scenario"]
    ax.set_title(
        f"{document['model_source']} · {document['environment']['gpu']} · {sc['height']}x{sc['width']}, "
        f"{sc['steps']} steps",
        fontsize=10,
    )
    ax.margins(y=0.2)
    fig.tight_layout()
    _save(fig, path, 110)
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


def image_grid(result, reference, scenario, path: Path, count: int) -> None:
    """Eager beside the variant for the first prompts, metrics under each pair."""
    items, scores = scenario.quality_items, result.quality.scores
    count = min(count, len(items))
    fig, axes = _pyplot().subplots(count, 2, figsize=(5.2, 2.9 * count), squeeze=False)
    for i in range(count):
        p, seed = items[i]
        for j, (img, title) in enumerate(((reference[i], "eager"), (result.images[i], result.name))):
            ax = axes[i][j]
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{title} — prompt {p}, seed {seed}", fontsize=7)
        shown = [f"{m.label} {m.fmt(scores[m.name].values[i])}" for m in METRICS.values() if m.name in scores]
        axes[i][1].set_xlabel("  ".join(shown), fontsize=7)
        axes[i][0].set_xlabel(scenario.prompts[p][:48], fontsize=6)
    fig.suptitle(f"{result.name} vs eager ({scenario.model})", fontsize=9)
    fig.tight_layout()
    _save(fig, path, 100)


def write_images(report_dir: Path, scenario, result, reference, count: int) -> str | None:
    """A scored variant's grid and its worst image pair (by metrics.WORST_BY) beside eager's; returns where the pair
    is, which the quality messages quote. Written by the process that holds the images (an xdist worker, or the
    session)."""
    if result.images is None or not result.quality.scores:
        return None
    image_grid(result, reference, scenario, Path(report_dir) / grid_name(result.name), count)
    worst = scenario.quality_items.index(tuple(result.quality.scores[WORST_BY].worst_item))
    p, seed = scenario.quality_items[worst]
    path = Path(report_dir) / "pairs" / f"{result.name}-p{p}-s{seed}.png"
    save_pair(reference[worst], result.images[worst], path, f"eager | {result.name}  (prompt {p}, seed {seed})")
    return str(path)
