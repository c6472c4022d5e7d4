"""Command line: `python -m fluxperf merge-baselines --out baselines runs/run-*` (the rebaseline workflow) and
`python -m fluxperf check-env [--lock FILE]` (the Makefile, after every install)."""

import argparse
import sys
from pathlib import Path

from fluxperf import baselines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxperf")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge-baselines", help="median of several recordings into the baseline folder")
    merge.add_argument("runs", nargs="+", type=Path, help="folders each written by --fluxperf-baseline-dir")
    merge.add_argument("--out", type=Path, default=Path("baselines"), help="baseline folder to update")
    merge.add_argument("--table", type=Path, help="write the old-vs-new Markdown table here")
    check = sub.add_parser("check-env", help="fail, naming the packages, if the installed ones don't work together")
    check.add_argument("--lock", type=Path, help="also require every installed version to be the one this lock pins")
    args = parser.parse_args(argv)
    if args.command == "check-env":
        from fluxperf import envcheck

        return envcheck.main(args.lock)
    try:
        table = baselines.merge_dirs(args.runs, args.out)
    except (baselines.BaselineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.table:
        args.table.write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
