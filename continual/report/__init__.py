"""Reports of one run or a whole sweep: a table of mean +- std over seeds, and figures.

``continual report PATH [--out DIR]`` finds every run folder under PATH (any depth: a
folder with ``summary.json``, ``metrics.jsonl`` or ``scores.csv``, or a Hydra job folder
``.hydra/``), groups finished runs by stream x strategy x model (and by any other config
value that differs between them, except the seed), and writes into DIR (default PATH):

- ``report.md``, ``report.html``: the table (acc, acc_task_il, forgetting, bwt, fwt,
  online_acc, aia, stability_gap, samples_per_second as mean +- sample std over seeds, and
  n runs; the best mean of each stream in bold), every run, the failed or unfinished runs
  with their error, and the figures (the HTML page carries them inline: one file to send);
- ``report.tex``: the table for a paper (booktabs), ``report.csv``: at full precision;
- ``hparams.csv`` and a section of the report for a hyper-parameter search (an Optuna sweep):
  every trial sorted by its objective, the best marked;
- figures (PNG, SVG or PDF), one set per stream: the accuracy matrix, average accuracy and
  forgetting, each task's accuracy against samples seen, and ``comparison``.

The modules, one concept each:

- ``runs``: which folders are runs, what each holds and how runs form groups (``RunData``,
  ``Group``, ``find_runs``, ``group_runs``, ``METRICS``);
- ``format``: how cells look (``-``, percent, the best of each stream);
- ``hparams``: the hyper-parameter search's trials; ``figures``: every figure;
- ``table``: the tables, computed once (``Tables``); one writer per file format:
  ``csv_writer`` (report.csv, hparams.csv), ``markdown``, ``html_page``, ``latex``;
- ``write``: ``write_report`` and a run's own report at its end (``write_run_report``);
  ``command``: ``continual report`` (``main``).

Importing this package loads neither matplotlib nor torch (figures import matplotlib when
they draw).
"""

from __future__ import annotations

from continual.report.command import main
from continual.report.runs import RunData  # write_report's "runs" and "failed" are RunData (docs/reports.md)
from continual.report.write import write_report, write_run_report

__all__ = ["RunData", "main", "write_report", "write_run_report"]
