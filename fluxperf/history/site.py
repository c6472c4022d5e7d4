"""The dashboard: one static HTML page of the whole history, charts as inline SVG, working offline."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

import fluxperf.history.steps as history_steps
from fluxperf import baselines
from fluxperf.history.record import Point, utc_now
from fluxperf.history.store import Store, display
from fluxperf.metrics import METRICS

WIDTH, HEIGHT = 760, 230  # the latency chart
SMALL_WIDTH, SMALL_HEIGHT = 250, 110
PAD = {"left": 58, "right": 12, "top": 26, "bottom": 30}

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header, main { max-width: 1240px; margin: 0 auto; padding: 0 16px; }
h1 { font-size: 20px; margin: 16px 0 4px; } h2 { font-size: 17px; margin: 28px 0 6px; }
h3 { font-size: 15px; margin: 0 0 4px; } .muted { color: #666; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left;
  vertical-align: top; } th { background: #f0f0f0; }
.layout { display: grid; grid-template-columns: minmax(0, 1fr) 340px; gap: 16px; }
figure.variant-chart { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 10px 0; padding: 10px; }
.smalls { display: flex; flex-wrap: wrap; gap: 6px; }
aside { position: sticky; top: 8px; align-self: start; background: #fff; border: 1px solid #ddd; border-radius: 6px;
  padding: 10px; max-height: 96vh; overflow: auto; font-size: 13px; }
aside table { font-size: 12px; }
aside td { word-break: break-all; } .status { font-weight: 600; padding: 0 4px; border-radius: 3px; }
.PASS { background: #d9f2df; } .FAIL { background: #f7d4d4; } .INCONCLUSIVE, .WARN { background: #fbefc9; }
svg text { font: 10px system-ui, sans-serif; fill: #444; }
.axis { stroke: #999; } .grid { stroke: #eee; } .raw { fill: #8aa6d1; } .recording { fill: #fff; stroke: #3b6fb6; }
.pt { cursor: pointer; } .pt:hover, .pt.selected { stroke: #000; stroke-width: 2; }
.net { fill: none; stroke: #3b6fb6; stroke-width: 1.6; } .level { fill: none; stroke: #c04a4a; stroke-width: 1.2;
  stroke-dasharray: 5 3; }
.step-marker { stroke: #c04a4a; stroke-width: 1.5; } .step-down { stroke: #2e8b57; }
.step-label { fill: #c04a4a; font-weight: 600; } .version-marker { stroke: #8a5cc2; stroke-dasharray: 2 3; }
.version-label { fill: #8a5cc2; } .small-line { fill: none; stroke: #555; stroke-width: 1.2; } .ci { stroke: #aaa; }
.legend span { margin-right: 14px; white-space: nowrap; }
"""

SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('history-data').textContent);
  const panel = document.getElementById('details');
  function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls; return e; }
  function row(table, key, value) { const tr = el('tr'); tr.append(el('th', key), el('td', value === null ||
    value === undefined ? '–' : String(value))); table.append(tr); }
  function show(target) {
    const session = data.sessions[target.dataset.session];
    const point = (data.points[target.dataset.series] || {})[target.dataset.session] || {};
    document.querySelectorAll('.pt.selected').forEach(function (p) { p.classList.remove('selected'); });
    document.querySelectorAll('.pt[data-session="' + target.dataset.session + '"]').forEach(function (p) {
      p.classList.add('selected'); });
    panel.replaceChildren();
    panel.append(el('h3', target.dataset.variant + ' — ' + session.utc));
    const facts = el('table');
    row(facts, 'kind', session.kind); row(facts, 'commit', session.commit); row(facts, 'label', session.label);
    row(facts, 'lower-quartile latency, s', point.lq_s); row(facts, 'net of the probe, s', point.net_s);
    row(facts, 'speedup over eager', point.speedup); row(facts, 'peak memory, GB', point.peak_mem_gb);
    row(facts, 'rounds', point.n); row(facts, 'bound / GPU busy', point.bound);
    row(facts, 'baseline judged against', session.baseline);
    panel.append(facts);
    panel.append(el('h3', 'Verdicts'));
    const verdicts = Object.entries(point.verdicts || {});
    if (!verdicts.length) panel.append(el('p', 'none recorded (a recording session, or no baseline)', 'muted'));
    verdicts.forEach(function (v) { const p = el('p'); p.append(el('span', v[1].status, 'status ' + v[1].status),
      document.createTextNode(' ' + v[0] + ': ' + v[1].message)); panel.append(p); });
    panel.append(el('h3', 'Environment'));
    const env = el('table'); const e = session.environment || {};
    ['gpu', 'driver', 'cuda', 'python', 'host_cpu', 'commit'].forEach(function (k) { row(env, k, e[k]); });
    Object.entries(e.versions || {}).forEach(function (kv) { row(env, kv[0], kv[1]); });
    panel.append(env);
  }
  document.addEventListener('click', function (event) {
    const target = event.target.closest('[data-session][data-series]');
    if (target) show(target);
  });
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + (abs(low) * 0.01 or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class Frame:
    """Maps session positions and values onto an SVG's pixels."""

    def __init__(self, n: int, values: list[float], width: int, height: int, pad: dict):
        self.n, self.width, self.height, self.pad = n, width, height, pad
        finite = [v for v in values if v is not None and math.isfinite(v)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        margin = (high - low) * 0.08 or abs(high) * 0.02 or 1.0
        self.low, self.high = low - margin, high + margin

    def x(self, i: float) -> float:
        inner = self.width - self.pad["left"] - self.pad["right"]
        return self.pad["left"] + (inner * (i + 0.5) / self.n if self.n else 0)

    def y(self, v: float) -> float:
        inner = self.height - self.pad["top"] - self.pad["bottom"]
        return self.pad["top"] + inner * (1 - (v - self.low) / (self.high - self.low))

    def axes(self, dates: list[str], y_label: str, ticks: int = 5) -> list[str]:
        out = [
            f'<line class="axis" x1="{self.pad["left"]}" y1="{self.height - self.pad["bottom"]}" '
            f'x2="{self.width - self.pad["right"]}" y2="{self.height - self.pad["bottom"]}"/>'
        ]
        for v in _nice_ticks(self.low, self.high, ticks):
            y = self.y(v)
            out.append(
                f'<line class="grid" x1="{self.pad["left"]}" y1="{y:.1f}" x2="{self.width - self.pad["right"]}" '
                f'y2="{y:.1f}"/><text x="{self.pad["left"] - 4}" y="{y + 3:.1f}" text-anchor="end">'
                f"{_fmt(v)}</text>"
            )
        every = max(1, math.ceil(self.n / max(1, (self.width - 80) // 70)))
        for i in range(0, self.n, every):
            out.append(
                f'<text x="{self.x(i):.1f}" y="{self.height - self.pad["bottom"] + 13}" '
                f'text-anchor="middle">{_e(dates[i][:10])}</text>'
            )
        out.append(f'<text x="{self.pad["left"]}" y="12">{_e(y_label)}</text>')
        return out


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">{"".join(body)}</svg>'
    )


def _polyline(points: list[tuple[float, float]], css: str) -> str:
    if len(points) < 2:
        return ""
    return f'<polyline class="{css}" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>'


def _version_changes(sessions: list[dict]) -> list[tuple[int, list[str]]]:
    """Where the software changed between neighbouring sessions: library versions, driver, CUDA, Python, GPU, host
    (not the commit, which changes nearly every night)."""
    out = []
    for i in range(1, len(sessions)):
        found = [
            c
            for c in history_steps.env_changes(sessions[i - 1]["environment"], sessions[i]["environment"])
            if not c.startswith("fluxperf commit")
        ]
        if found:
            out.append((i, found))
    return out


def _latency_chart(
    key: str,
    variant: str,
    xs: list[int],
    series: list[Point],
    dates: list[str],
    versions: list[tuple[int, list[str]]],
    n: int,
) -> tuple[str, dict, list]:
    usable = [k for k, p in enumerate(series) if history_steps.usable(history_steps.timings(p))]
    lq = {k: history_steps.lower_quartile_s(history_steps.timings(series[k])) for k in usable}
    net = history_steps.net_latencies([history_steps.timings(series[k]) for k in usable])
    # The probe-normalized line: each session's lower quartile as it would be on the first session's machine.
    normalized = {k: math.exp(v) for k, v in zip(usable, net) if math.isfinite(v)}
    # Levels over the sessions the verdict looks at, at most: the exact segmentation is cubic in their number.
    tail = usable[-history_steps.MAX_RANGE :]
    segs = history_steps.detect(np.array([math.log(normalized[k]) for k in tail])) if len(tail) >= 2 else []
    frame = Frame(n, list(lq.values()) + list(normalized.values()), WIDTH, HEIGHT, PAD)
    body = frame.axes(
        dates, "seconds per image: lower quartile (dots), net of the machine probe (line), levels (dashed)"
    )
    for at, found in versions:
        x = frame.x(at - 0.5)
        body.append(
            f'<line class="version-marker" x1="{x:.1f}" y1="{PAD["top"]}" x2="{x:.1f}" '
            f'y2="{HEIGHT - PAD["bottom"]}"><title>{_e("; ".join(found))}</title></line>'
            f'<text class="version-label" x="{x + 2:.1f}" y="{PAD["top"] - 4}">'
            f"{_e('; '.join(found))[:60]}</text>"
        )
    found_steps = []
    for s in range(1, len(segs)):
        first = tail[segs[s].start]
        size = segs[s].level - segs[s - 1].level
        x = frame.x(xs[first] - 0.5)
        css = "step-marker" + ("" if size > 0 else " step-down")
        label = f"{math.expm1(size):+.1%}"
        body.append(
            f'<line class="{css}" data-session="{_e(series[first].session_id)}" x1="{x:.1f}" '
            f'y1="{PAD["top"]}" x2="{x:.1f}" y2="{HEIGHT - PAD["bottom"]}"><title>step {label} from '
            f"{_e(series[first].recorded_utc)}</title></line>"
            f'<text class="step-label" x="{x + 3:.1f}" y="{PAD["top"] + 22}">{label}</text>'
        )
        found_steps.append({"session_id": series[first].session_id, "utc": series[first].recorded_utc, "size": size})
    body.append(_polyline([(frame.x(xs[k]), frame.y(normalized[k])) for k in usable if k in normalized], "net"))
    for seg in segs:
        a, b = xs[tail[seg.start]], xs[tail[seg.stop - 1]]
        y = frame.y(math.exp(seg.level))
        body.append(
            f'<line class="level" x1="{frame.x(a - 0.4):.1f}" y1="{y:.1f}" x2="{frame.x(b + 0.4):.1f}" y2="{y:.1f}"/>'
        )
    for k in usable:
        p = series[k]
        css = "pt recording" if p.kind == "recording" else "pt raw"
        body.append(
            f'<circle class="{css}" r="3.6" cx="{frame.x(xs[k]):.1f}" cy="{frame.y(lq[k]):.1f}" '
            f'data-session="{_e(p.session_id)}" data-series="{_e(key)}" data-variant="{_e(variant)}">'
            f"<title>{_e(p.recorded_utc)}: {lq[k]:.4g} s ({p.kind})</title></circle>"
        )
    points = {}
    for k, p in enumerate(series):
        r = p.result
        t = r.timings
        speedup, mem, busy = _number(_speedup(t)[0]), _number(t.peak_mem_gb), _number(t.gpu_busy)
        points[p.session_id] = {
            "lq_s": round(lq[k], 5) if k in lq else None,
            "net_s": round(normalized[k], 5) if k in normalized else None,
            "speedup": None if speedup is None else round(speedup, 3),
            "peak_mem_gb": None if mem is None else round(mem, 2),
            "n": t.rounds,
            "bound": f"{t.bound or 'unknown'} / {'–' if busy is None else f'{busy:.0%}'}",
            "verdicts": r.verdicts
            or ({"status": {"status": "FAIL", "message": r.error or ""}} if r.status == "failed" else {}),
        }
    return _svg(WIDTH, HEIGHT, body, f"{variant} latency over sessions"), points, found_steps


def _small_chart(xs: list[int], values: list, dates: list[str], n: int, title: str, fmt, ci: list | None = None) -> str:
    have = [(xs[k], v) for k, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not have:
        return ""
    lows_highs = [b for pair in (ci or []) if pair for b in pair if b is not None]
    pad = {"left": 44, "right": 8, "top": 18, "bottom": 22}
    frame = Frame(n, [v for _, v in have] + lows_highs, SMALL_WIDTH, SMALL_HEIGHT, pad)
    body = frame.axes(dates, title, ticks=3)
    for k, pair in enumerate(ci or []):
        if pair and None not in pair:
            x = frame.x(xs[k])
            body.append(
                f'<line class="ci" x1="{x:.1f}" y1="{frame.y(pair[0]):.1f}" x2="{x:.1f}" y2="{frame.y(pair[1]):.1f}"/>'
            )
    body.append(_polyline([(frame.x(x), frame.y(v)) for x, v in have], "small-line"))
    body += [
        f'<circle r="2" cx="{frame.x(x):.1f}" cy="{frame.y(v):.1f}" fill="#555"><title>{_e(fmt(v))}</title></circle>'
        for x, v in have
    ]
    return _svg(SMALL_WIDTH, SMALL_HEIGHT, body, title)


def _number(value):
    """A finite number, or None: what a chart can draw and the page's JSON can hold."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def _speedup(t) -> tuple:
    """(speedup, [CI low, CI high]) of a session's timings, each None where there is none."""
    sp = t.speedup()
    return (None, [None, None]) if sp is None else (sp.value, [_number(sp.ci_low), _number(sp.ci_high)])


def _variant_figure(
    store: Store, gpu: str, scenario: str, variant: str, order: dict, dates: list[str], versions, data: dict
) -> tuple[str, list[str]]:
    series = store.series(gpu, scenario, variant)
    key = f"{gpu}/{scenario}/{variant}"
    xs = [order[p.session_id] for p in series]
    n = len(dates)
    chart, points, found = _latency_chart(key, variant, xs, series, dates, versions, n)
    data["points"][key] = points
    results = [p.result for p in series]
    speedups = [_speedup(r.timings) for r in results]
    smalls = [
        _small_chart(
            xs,
            [_number(v) for v, _ in speedups],
            dates,
            n,
            "speedup over eager (95% CI)",
            "{:.2f}×".format,
            [ci for _, ci in speedups],
        ),
        _small_chart(
            xs, [_number(r.timings.peak_mem_gb) for r in results], dates, n, "peak memory, GB", "{:.2f} GB".format
        ),
    ]
    for metric in METRICS.values():
        scores = [r.quality.scores.get(metric.name) for r in results]
        values = [None if s is None else _number(s.mean) for s in scores]
        smalls.append(
            _small_chart(
                xs, values, dates, n, f"{metric.label} mean{',' + metric.unit if metric.unit else ''}", metric.fmt
            )
        )
    timed = [r.timings for r in results if history_steps.usable(r.timings)]
    bound = history_steps.series_bound(timed)[0] if timed else "unknown"
    # The speed tolerance a new baseline gets for this bound: a hand-edited one applies in the suite's own
    # test_history_holds, not here.
    tolerance = baselines.default_tolerance(bound)["speed"]
    accepted = store.accepted_utc(gpu, scenario, variant)
    status, details = history_steps.judge(series, tolerance, accepted_utc=accepted)
    verdict = history_steps.message(details, variant)
    badge = "too short" if details.get("reason") in ("too short", "empty") else status
    steps_text = ", ".join(f"{math.expm1(s['size']):+.1%} from {s['utc'][:10]}" for s in found) or "none"
    figure = (
        f'<figure class="variant-chart" data-variant="{_e(variant)}" data-gpu="{_e(gpu)}" '
        f'data-scenario="{_e(scenario)}"><h3>{_e(variant)} <span class="status {status}">{badge}</span> '
        f'<span class="muted">{len(series)} sessions; steps found: {_e(steps_text)}</span></h3>'
        f'{chart}<div class="smalls">{"".join(s for s in smalls if s)}</div>'
        f'<p class="muted">history verdict for the latest session (tolerance {tolerance:.0%}, {bound}-bound): '
        f"{_e(verdict)}</p></figure>"
    )
    row = [
        f'<a href="#{_e(key)}">{_e(variant)}</a>',
        str(len(series)),
        f'<span class="status {status}">{badge}</span>',
        _e(steps_text),
    ]
    return f'<a id="{_e(key)}"></a>{figure}', row


def write_site(store: Store, out_dir: Path) -> Path:
    """index.html in out_dir: per GPU and scenario, per variant, latency over sessions (lower quartile and the
    probe-normalized line, levels and steps found, markers where the software changed), speedup, peak memory and
    quality; a click on a point shows that session's environment and verdicts. No file but itself, no fetches."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = store.keys()
    groups: dict[tuple[str, str], list[str]] = {}
    for gpu, scenario, variant in keys:
        groups.setdefault((gpu, scenario), []).append(variant)
    data = {"sessions": {}, "points": {}}
    sections, summary = [], []
    for (gpu, scenario), variants in sorted(groups.items()):
        # One x axis per GPU and scenario: every session any of its variants has, oldest first.
        sessions = {}
        for variant in variants:
            for p in store.series(gpu, scenario, variant):
                sessions[p.session_id] = p
        ordered = sorted(sessions.values(), key=lambda p: (p.recorded_utc, p.session_id))
        order = {p.session_id: i for i, p in enumerate(ordered)}
        dates = [p.recorded_utc for p in ordered]
        for p in ordered:
            data["sessions"][p.session_id] = {
                "utc": p.recorded_utc,
                "kind": p.kind,
                "commit": p.commit,
                "label": p.label,
                "environment": p.environment,
                "baseline": (
                    f"{p.session.get('baseline_file')} ({p.session.get('baseline_recorded_utc')})"
                    if p.kind == "judged" and p.session.get("baseline_file")
                    else None
                ),
            }
        versions = _version_changes([{"environment": p.environment} for p in ordered])
        figures = []
        for variant in variants:
            figure, row = _variant_figure(store, gpu, scenario, variant, order, dates, versions, data)
            figures.append(figure)
            summary.append([_e(gpu), _e(scenario), *row])
        sections.append(
            f'<section><h2>{_e(gpu)} · {_e(scenario)}</h2><p class="muted">{len(ordered)} sessions from '
            f"{_e(dates[0])} to {_e(dates[-1])}</p>{''.join(figures)}</section>"
        )
    table = "".join(f"<tr>{''.join(f'<td>{c}</td>' for c in row)}</tr>" for row in summary)
    payload = json.dumps(data, sort_keys=True, allow_nan=False, default=str).replace("</", "<\\/")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>fluxperf history</title><style>{STYLE}</style></head>
<body><header><h1>fluxperf history</h1>
<p class="muted">{_e(display(store.where))} · {store.count()} sessions · written {_e(utc_now())}</p>
<p class="legend"><span>● lower-quartile latency of a judged session</span>
<span>○ a recording session (baseline)</span>
<span>— net of the machine probe, on the first session's machine</span><span>- - levels found</span>
<span style="color:#c04a4a">| step</span><span style="color:#8a5cc2">┊ software changed</span></p></header>
<main class="layout"><div>
<table><tr><th>GPU</th><th>scenario</th><th>variant</th><th>sessions</th><th>history verdict</th>
<th>steps found</th></tr>
{table}</table>
{"".join(sections) or "<p>No sessions in this history yet.</p>"}
</div><aside id="details"><p class="muted">Click a point to see that session's environment and verdicts.</p></aside>
</main>
<script type="application/json" id="history-data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""
    index = out_dir / "index.html"
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(index)
    return index
