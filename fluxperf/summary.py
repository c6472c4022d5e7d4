"""What the terminal shows: the session header after collection, and the summary table at the end."""

from __future__ import annotations

from fluxperf import report


def session_header(bench) -> list[str]:
    """Said before anything is built, so that a wrong model, GPU or baseline is seen at once."""
    s, sc = bench.settings, bench.scenario
    env = bench.env
    gpu = env["gpu"] if env["gpu"] != "cpu" else "none (CPU)"
    baseline = str(bench.baseline_path) if bench.baseline is not None else f"none ({bench.baseline_path} absent)"
    if s.update_baselines:
        baseline = f"{bench.baseline_path} (being written: --fluxperf-update-baselines)"
    return [
        f"fluxperf model: {sc.model} — {report.model_banner(sc.model)}",
        f"fluxperf device: {sc.device}; GPU: {gpu}",
        f"fluxperf scenario: {sc.slug} ({sc.height}x{sc.width}, {sc.steps} steps, {len(sc.prompts)} prompts "
        f"x {len(sc.seeds)} seeds{report.judged_note(len(sc.prompts), sc.quality_prompts)})",
        f"fluxperf baseline: {baseline}",
        f"fluxperf variants: {', '.join(s.variants)}",
        f"fluxperf cache: {s.cache_dir} (torch.compile's artifacts under {s.cache_dir / 'inductor'})",
    ]


def write(tr, results: dict, report_dir, written, workers_down: dict) -> None:
    """The summary at the end of the session, from its results document (report.document, or the xdist merge)."""
    tr.write_sep("=", "fluxperf summary")
    for line in report.header_lines(results):
        tr.write_line(line, red=line.startswith("THE MACHINE WAS SHARED"), bold=line.startswith("THE MACHINE"))
    frows, qrows = report.fidelity_rows(results), report.quality_rows(results)
    tables = [
        (report.SPEED_HEADER, report.speed_rows(results)),
        (report.ROOFLINE_HEADER, report.roofline_rows(results)),
        (report.FIDELITY_HEADER, frows),
        (report.QUALITY_HEADER, qrows),
    ]
    for header, rows in tables:
        if rows or header is report.SPEED_HEADER:
            tr.write_line("")
            tr.write_line(report.table_text(header, rows))
    note = report.random_weights_note(results["model_source"])
    if note and (frows or qrows):
        tr.write_line(note)
    d = results["determinism"]
    if d and not d["ok"]:
        tr.write_line("")
        tr.write_line(
            f"WARNING: eager re-rendered the same prompt and seed differently (worst PSNR "
            f"{d['worst_psnr_db']:.1f} dB < {d['bound_psnr_db']} dB): quality verdicts are unreliable",
            red=True,
            bold=True,
        )
    for worker, error in workers_down.items():
        if error is not None:
            tr.write_line(
                f"WARNING: xdist worker {worker} went down ({error}); its variants may be missing above",
                red=True,
                bold=True,
            )
    tr.write_line("")
    tr.write_line(f"reports: {report_dir}/ (results.json, report.md, latency.png, grid-*.png)")
    if written:
        tr.write_line(f"baseline written: {written}")
        if report.shared_line(results):
            # A yardstick measured beside a neighbour is too slow by the neighbour's share: later regressions up
            # to that size would pass against it.
            tr.write_line(
                "WARNING: this baseline was recorded while the machine was shared (the line at the top): its "
                "latencies include the other process's share; record it again on a quiet machine",
                red=True,
                bold=True,
            )
