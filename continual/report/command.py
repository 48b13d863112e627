"""``continual report PATH [--out DIR] [--no-plots] [--percent] [--figures FMT] [--metrics M,...]
[--objective KEY]``: the command line of ``write_report``."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence

from continual.report.figures import FIGURE_FORMATS
from continual.report.write import write_report
from continual.types import ConfigError


def main(argv: Sequence[str] | None = None) -> None:
    """``continual report PATH [--out DIR] [--no-plots] [--percent] [--figures FMT]
    [--metrics M,...] [--objective KEY]``."""
    parser = argparse.ArgumentParser(
        prog="continual report",
        description="Tables (mean ± std over seeds; Markdown, HTML, CSV, LaTeX) and figures of a run "
                    "folder or a whole multirun folder.")
    parser.add_argument("path", help="a run folder, or a multirun folder (searched at any depth)")
    parser.add_argument("--out", default=None, help="where to write the report (default: PATH)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--percent", action="store_true",
                        help="accuracy-like metrics in percent, one decimal (report.csv keeps fractions)")
    parser.add_argument("--figures", default="png", choices=FIGURE_FORMATS,
                        help="the figures' file format (default png; the HTML page embeds them either way)")
    parser.add_argument("--metrics", default=None,
                        help="the table's columns, comma-separated (default: every metric some run reports)")
    parser.add_argument("--objective", default=None,
                        help="add the hyper-parameter search table for any sweep, trials ranked by this "
                             "summary key (an Optuna sweep gets it by default, ranked by its jobs' objective)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        result = write_report(args.path, out=args.out, plots=not args.no_plots, percent=args.percent,
                              figures=args.figures, metrics=metrics, objective=args.objective)
    except ConfigError as e:
        print(f"continual: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    buf = io.StringIO()
    buf.write(result["markdown"].split("\n## Runs")[0].rstrip() + "\n\n")
    for p in result["files"]:
        buf.write(f"wrote {p}\n")
    sys.stdout.write(buf.getvalue())
