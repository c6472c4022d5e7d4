"""Command line: `merge-baselines` (the rebaseline workflow), `check-env [--lock FILE]` (the Makefile, after every
install) and `history import|html|accept` (docs/history.md)."""

import argparse
import sys
from pathlib import Path

from fluxperf import baselines


def _merge(args) -> int:
    try:
        table = baselines.merge_dirs(args.runs, args.out)
    except (baselines.BaselineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.table:
        args.table.write_text(table, encoding="utf-8")
    print(table)
    return 0


def _json_files(paths: list[Path]) -> list[tuple[Path, bool]]:
    # A folder stands for every results.json and baseline file under it (runs/run-*/..., baselines/); other JSON
    # files found there (pytest-benchmark's, say) are skipped, while one named on the command line is an error.
    out = []
    for path in paths:
        if path.is_dir():
            out += [(p, False) for p in sorted(path.rglob("*.json")) if p.is_file()]
        else:
            out.append((path, True))
    return out


def _history(args) -> int:
    from fluxperf import history

    where = args.history or history.default_location()
    if where is None or where == "off":
        print("error: FLUXPERF_HISTORY is off: name a history with --history=PATH_OR_URL", file=sys.stderr)
        return 2
    try:
        if args.action == "import":
            added = {"judged": 0, "recording": 0}
            with history.open_store(where) as store:
                for path, named in _json_files(args.files):
                    try:
                        record = history.load_file(path, args.kind, args.label)
                    except history.NotARecord as exc:
                        if named:
                            raise
                        print(f"skipped {exc}")
                        continue
                    rows = store.append(record)
                    added[record.kind] += bool(rows)
                    print(
                        f"{path}: {record.kind} session of {record.recorded_utc}, {record.gpu_slug}, "
                        f"{record.scenario}: {rows} new variant result(s)"
                    )
            print(
                f"{sum(added.values())} session(s) added to {history.display(where)} ({added['judged']} judged, "
                f"{added['recording']} recording)"
            )
        elif args.action == "html":
            with history.open_store(where, create=False) as store:
                index = history.write_site(store, args.out)
            print(f"wrote {index} from {history.display(where)}")
        elif args.action == "accept":
            with history.open_store(where, create=False) as store:
                if not store.series(args.gpu, args.scenario, args.variant):
                    print(
                        f"error: {history.display(where)} holds no sessions of {args.variant} on {args.gpu}, "
                        f"{args.scenario}; see the dashboard for the names",
                        file=sys.stderr,
                    )
                    return 2
                store.accept(args.gpu, args.scenario, args.variant, args.note)
            print(
                f"accepted: {args.variant} on {args.gpu}, {args.scenario} is judged from now on against the "
                "sessions after this one"
            )
    except history.HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxperf")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge-baselines", help="median of several recordings into the baseline folder")
    merge.add_argument("runs", nargs="+", type=Path, help="folders each written by --fluxperf-baseline-dir")
    merge.add_argument("--out", type=Path, default=Path("baselines"), help="baseline folder to update")
    merge.add_argument("--table", type=Path, help="write the old-vs-new Markdown table here")

    check = sub.add_parser("check-env", help="fail, naming the packages, if the installed ones don't work together")
    check.add_argument("--lock", type=Path, help="also require every installed version to be the one this lock pins")

    hist = sub.add_parser("history", help="the results history: import files, write the dashboard, accept a slowdown")
    actions = hist.add_subparsers(dest="action", required=True)
    where_help = (
        "SQLite file or postgresql:// URL (default: FLUXPERF_HISTORY, else history.sqlite in the cache "
        "dir: FLUXPERF_CACHE_DIR, else ~/.cache/fluxperf)"
    )
    imp = actions.add_parser("import", help="load results.json and baseline files (or folders of them)")
    imp.add_argument("files", nargs="+", type=Path)
    imp.add_argument("--history", help=where_help)
    imp.add_argument(
        "--kind",
        choices=("judged", "recording"),
        help="kind of the results.json files (default: recording if no variant holds a verdict)",
    )
    imp.add_argument("--label", help="a label for these sessions, e.g. the runner: nightly-l40s")
    html = actions.add_parser("html", help="write the static dashboard to OUT/index.html")
    html.add_argument("out", type=Path)
    html.add_argument("--history", help=where_help)
    accept = actions.add_parser("accept", help="mark a series' slowdown up to now as deliberate")
    accept.add_argument("--history", help=where_help)
    accept.add_argument("--gpu", required=True, help="GPU slug, e.g. nvidia-l40s")
    accept.add_argument("--scenario", required=True, help="scenario slug (the baseline file's name)")
    accept.add_argument("--variant", required=True)
    accept.add_argument("--note", required=True, help="why the slowdown is deliberate")

    args = parser.parse_args(argv)
    if args.command == "merge-baselines":
        return _merge(args)
    if args.command == "check-env":
        from fluxperf import envcheck

        return envcheck.main(args.lock)
    return _history(args)


if __name__ == "__main__":
    sys.exit(main())
