"""The metric table (continual/metric_table.py): each metric declared once and read by
summary.json, the report, the console and docs/metrics.md; directions and fractions that follow
the stream's score."""

import csv
import io
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from continual import metric_table
from continual.report.format import format_number, is_fraction, lower_is_better, mark_best, metric_cell

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def test_the_docs_table_is_the_code_table():
    text = DOC.read_text()
    start = text.index(metric_table.MARKDOWN_START) + len(metric_table.MARKDOWN_START) + 1
    end = text.index(metric_table.MARKDOWN_END)
    assert text[start:end] == metric_table.markdown_table(), \
        "docs/metrics.md is stale: paste `python3 -m continual.metric_table --markdown` between its markers"


def test_the_generator_prints_the_table(capsys):
    assert metric_table.main(["--markdown"]) == 0
    assert capsys.readouterr().out == metric_table.markdown_table()
    assert metric_table.main([]) == 2


def test_every_entry_is_well_formed():
    names = [m.name for m in metric_table.METRICS]
    assert len(names) == len(set(names))
    for m in metric_table.METRICS:
        assert m.direction in metric_table.DIRECTIONS, m.name
        assert m.fraction in metric_table.FRACTIONS, m.name
        assert m.source in metric_table.SOURCES, m.name
        # computed by the evaluator exactly when the evaluator is its source
        assert (m.compute is not None) == (m.source in metric_table.COMPUTED), m.name
        assert m.description and "\n" not in m.description, m.name
        assert m.hidden_by is None or m.hidden_by in names, m.name


def test_a_loss_stream_ranks_score_matrix_metrics_lower_first():
    # On a loss stream T holds losses: AIA and plasticity are means of losses (smaller is
    # better, as for the score); forgetting and bwt read the sign-flipped matrix, so their
    # direction does not change (forgetting > 0 is worse, bwt < 0 is worse).
    assert lower_is_better("aia", "loss") is True
    assert lower_is_better("plasticity", "loss") is True
    assert lower_is_better("score", "loss") is True
    assert lower_is_better("aia", "accuracy") is False
    assert lower_is_better("aia", "exact_match") is False
    assert lower_is_better("forgetting", "loss") is True
    assert lower_is_better("bwt", "loss") is False
    # two groups' AIA on a loss stream: 2.0 beats 3.0
    cells = [[metric_cell(2.0, float("nan"), "aia", score_name="loss")],
             [metric_cell(3.0, float("nan"), "aia", score_name="loss")]]
    mark_best(cells, [[0, 1]])
    assert [c[0].best for c in cells] == [True, False]


def test_only_fractions_of_one_become_percent():
    # IL/UL/NL are exact match in percent already (0-100), FUAR a ratio of counts
    assert is_fraction("IL") is False
    assert is_fraction("NL", "exact_match") is False
    assert is_fraction("FUAR") is False
    # the score matrix is in the score's units: a fraction only when it is accuracy
    assert is_fraction("score", "exact_match") is False
    assert is_fraction("score", "loss") is False
    assert is_fraction("score", "accuracy") is True
    assert is_fraction("forgetting", "loss") is False
    assert is_fraction("forgetting", "accuracy") is True
    assert is_fraction("final_avg_loss") is False
    # 45 (% exact match) stays 45, a 2.5-nat AIA stays 2.5, an accuracy of 0.5 becomes 50.0
    assert format_number(45.0, "IL", percent=True) == "45.000"
    assert format_number(2.5, "aia", percent=True, score_name="loss") == "2.500"
    assert format_number(0.5, "aia", percent=True, score_name="accuracy") == "50.0"


def _final_task0():
    return metric_table.Metric(
        "final_task0", "Final score of task 0.", "higher", "score", lambda x: float(x.T[-1, 0]),
        extra=True, console=True)


def test_a_metric_added_to_the_table_shows_everywhere(tmp_path, monkeypatch):
    import torch
    from rich.console import Console

    from continual import streams
    from continual.console import ConsoleLogger
    from continual.models import build_model
    from continual.report import write_report
    from continual.runner import Runner
    from continual.strategies.naive import Naive

    monkeypatch.setattr(metric_table, "METRICS", (*metric_table.METRICS, _final_task0()))

    # (a) summary.json of a tiny run holds it, equal to scores.csv's last row, task 0
    torch.manual_seed(0)
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, train_per_class=10, test_per_class=5)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    out = tmp_path / "runs" / "naive"
    summary = Runner(stream, Naive(model, lr=0.1), out_dir=str(out),
                     extra_summary={"strategy": "naive"}).run()
    with open(out / "scores.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert last["kind"] == "task_end"
    assert summary["final_task0"] == pytest.approx(float(last["task_0"]), abs=1e-12)

    # (b) a column of the report
    md = write_report(tmp_path / "runs", out=tmp_path / "report", plots=False)["markdown"]
    lines = md.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| stream"))
    header, row = lines[at], lines[at + 2]  # the main table's header and its one group
    assert header.rstrip(" |").endswith("final_task0")
    assert row.rstrip(" |").endswith(f"{summary['final_task0']:.3f}")

    # (c) a row of the console's final table
    logger = ConsoleLogger()
    logger.console = Console(file=io.StringIO(), width=200)
    logger.runner = SimpleNamespace(out_dir=out)
    logger.finish(summary)
    printed = logger.console.file.getvalue()
    assert re.search(rf"final_task0\s*\S\s*{summary['final_task0']:.4f}", printed)

    # (d) a row of the docs' table
    assert "| `final_task0` | higher | score | evaluator | report (extra), console | Final score of task 0. |" \
        in metric_table.markdown_table()
