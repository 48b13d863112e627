"""The paper-ready report: LaTeX (booktabs) with the best cell of each stream in bold, percent,
`-` for undefined metrics, acc_task_il, a self-contained HTML page without wrapped cells,
figures as SVG or PDF, points (not ramps) between sparse eval points, and the
hyper-parameter search table of an Optuna sweep. Built on small synthetic run folders."""

import base64
import csv
import json
import re

import pytest

from continual.report import main, write_report
from continual.report.format import MISSING
from continual.types import ConfigError


def _write_run(folder, stream="split_digits", strategy="er", seed=0, acc=0.5, forgetting=0.2, *,
               protocol="class_il", periodic=False, stability_gap=None, score=None, config=None, job=None):
    """A finished run folder with a summary, two tasks' eval records and the scores table."""
    folder.mkdir(parents=True)
    summary = {"stream": stream, "strategy": strategy, "model": "mlp", "seed": seed, "protocol": protocol,
               "score_name": "accuracy", "acc": acc, "acc_task_il": min(1.0, acc + 0.2), "forgetting": forgetting,
               "bwt": -forgetting, "fwt": -0.05, "online_acc": acc - 0.1, "aia": acc + 0.1,
               "stability_gap": stability_gap, "samples_per_second": 1000.0 + seed,
               "score": acc if score is None else score,
               "config": {"seed": seed, "strategy": {"name": strategy, **(config or {})}}}
    (folder / "summary.json").write_text(json.dumps(summary))
    points = [("init", 0, 0.1, 0.1)]
    if periodic:
        points += [("periodic", 50, 0.6, 0.0), ("periodic", 100, 0.8, 0.0)]
    points += [("task_end", 100, 0.9, 0.0)]
    if periodic:
        points += [("periodic", 150, 0.5, 0.4)]
    points += [("task_end", 200, acc, 0.9)]
    records = [{"type": "eval", "kind": kind, "step": samples // 10, "samples_seen": samples,
                "acc_task_0": a0 + 0.01 * seed, "acc_task_1": a1, "acc_task_il": 0.9, "acc": (a0 + a1) / 2,
                "forgetting": None if samples < 200 else forgetting} for kind, samples, a0, a1 in points]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = ["step,samples_seen,kind,task_0,task_1"]
    rows += [f"{r['step']},{r['samples_seen']},{r['kind']},{r['acc_task_0']},{r['acc_task_1']}" for r in records]
    (folder / "scores.csv").write_text("\n".join(rows) + "\n")
    if job is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {job}\n")
    return folder


@pytest.fixture()
def two_streams(tmp_path):
    """naive and er on two streams, 2 seeds each: er better in acc and forgetting on split_digits,
    naive better on split_mnist; stability_gap measured only on split_mnist."""
    cells = {("split_digits", "naive"): (0.40, 0.50), ("split_digits", "er"): (0.70, 0.20),
             ("split_mnist", "naive"): (0.80, 0.10), ("split_mnist", "er"): (0.60, 0.30)}
    for (stream, strategy), (acc, forgetting) in cells.items():
        for seed in (0, 1):
            _write_run(tmp_path / "runs" / f"{stream}_{strategy}_s{seed}", stream, strategy, seed,
                       acc + 0.01 * seed, forgetting, stability_gap=0.05 if stream == "split_mnist" else None,
                       periodic=stream == "split_mnist")
    return tmp_path / "runs"


def _tex_rows(tex):
    """The body rows of report.tex as lists of cells, by (stream, method)."""
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule")[0]
    rows = [[c.strip() for c in line.rstrip("\\ ").split(" & ")] for line in body.splitlines()
            if line.strip().endswith("\\\\")]
    return {(r[0], r[1]): r for r in rows}


def test_latex_is_a_booktabs_table_with_each_streams_best_mean_in_bold(two_streams, tmp_path):
    write_report(two_streams, out=tmp_path / "out", plots=False)
    tex = (tmp_path / "out" / "report.tex").read_text()
    assert "\\begin{tabular}{ll" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert tex.count("\\midrule") == 2  # under the header, and between the two streams
    header = tex.split("\\toprule", 1)[1].split("\\\\")[0].split(" & ")
    col = {h.strip(): i for i, h in enumerate(header)}
    rows = _tex_rows(tex)
    assert set(rows) == {("split\\_digits", "naive"), ("split\\_digits", "er"),
                         ("split\\_mnist", "naive"), ("split\\_mnist", "er")}
    acc, forgetting = col["acc"], col["forgetting"]
    # higher acc and lower forgetting are better: er wins on split_digits, naive on split_mnist
    assert rows[("split\\_digits", "er")][acc] == "\\textbf{0.705 $\\pm$ 0.007}"
    assert rows[("split\\_digits", "er")][forgetting].startswith("\\textbf{0.200")
    assert not rows[("split\\_digits", "naive")][acc].startswith("\\textbf")
    assert rows[("split\\_mnist", "naive")][acc].startswith("\\textbf{0.805")
    assert rows[("split\\_mnist", "naive")][forgetting].startswith("\\textbf{0.100")
    assert not rows[("split\\_mnist", "er")][forgetting].startswith("\\textbf")
    # throughput is never ranked
    assert not any(r[col["samples\\_per\\_second"]].startswith("\\textbf") for r in rows.values())


def test_markdown_and_html_bold_the_same_cells_as_latex(two_streams, tmp_path):
    write_report(two_streams, out=tmp_path, plots=False)
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert "**0.705 ± 0.007**" in md and "<td class='best'><b>0.705 ± 0.007</b></td>" in page
    assert "**0.405 ± 0.007**" not in md


def test_undefined_and_unmeasured_metrics_are_a_dash(two_streams, tmp_path):
    write_report(two_streams, out=tmp_path, plots=False)
    rows = _tex_rows((tmp_path / "report.tex").read_text())
    header = (tmp_path / "report.tex").read_text().split("\\toprule", 1)[1].split("\\\\")[0].split(" & ")
    col = {h.strip(): i for i, h in enumerate(header)}
    for (stream, _), row in rows.items():
        assert row[col["fwt"]] == MISSING  # class-incremental: fwt only measures the untrained model
        if stream == "split\\_digits":  # no periodic eval points: no stability gap measured
            assert row[col["stability\\_gap"]] == MISSING
        else:
            assert row[col["stability\\_gap"]].startswith("\\textbf{0.050")  # a tie: both best
    table = (tmp_path / "report.md").read_text().split("\n")[4:10]
    assert "n/a" not in "\n".join(table) and "| - |" in "\n".join(table)
    with open(tmp_path / "report.csv", newline="") as f:
        assert all(r["fwt_mean"] == "" for r in csv.DictReader(f))


def test_fwt_is_kept_on_task_incremental_streams(tmp_path):
    for seed in (0, 1):
        _write_run(tmp_path / f"r{seed}", seed=seed, protocol="task_il")
    result = write_report(tmp_path, plots=False)
    assert result["table"][0]["fwt_mean"] == pytest.approx(-0.05)


def test_the_table_has_task_il_accuracy(two_streams, tmp_path):
    result = write_report(two_streams, out=tmp_path, plots=False)
    assert "| acc | acc_task_il | forgetting |" in (tmp_path / "report.md").read_text()
    row = next(r for r in result["table"] if r["stream"] == "split_digits" and r["strategy"] == "er")
    assert row["acc_task_il_mean"] == pytest.approx(0.905)


def test_percent_shows_fractions_as_percentages_but_the_csv_keeps_fractions(two_streams, tmp_path):
    write_report(two_streams, out=tmp_path, plots=False, percent=True)
    md = (tmp_path / "report.md").read_text()
    assert "| acc (%) | acc_task_il (%) | forgetting (%) |" in md
    assert "**70.5 ± 0.7**" in md  # split_digits er: 0.70, 0.71
    assert "| 1000 ± 1 |" in md  # samples/s are no fraction
    assert "70.5 $\\pm$ 0.7" in (tmp_path / "report.tex").read_text()
    with open(tmp_path / "report.csv", newline="") as f:
        er = next(r for r in csv.DictReader(f) if r["stream"] == "split_digits" and r["strategy"] == "er")
    assert float(er["acc_mean"]) == pytest.approx(0.705)


def test_metrics_choose_the_columns_and_an_unknown_one_is_refused(two_streams, tmp_path):
    write_report(two_streams, out=tmp_path, plots=False, metrics=["acc", "forgetting"])
    assert "| stream | strategy | model | setting | n | acc | forgetting |" in (tmp_path / "report.md").read_text()
    with pytest.raises(ConfigError, match="unknown metric.*accuracy"):
        write_report(two_streams, out=tmp_path, plots=False, metrics=["accuracy"])


def test_html_is_one_self_contained_file_without_wrapped_cells(two_streams, tmp_path):
    result = write_report(two_streams, out=tmp_path)
    page = (tmp_path / "report.html").read_text()
    sources = re.findall(r"src='([^']*)'", page)
    figures = [p for p in result["files"] if p.suffix == ".png"]
    assert len(sources) == len(figures) == 7  # 3 per stream and the comparison
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "white-space:nowrap" in page
    assert "href=" not in page and "<link" not in page and "<script" not in page


@pytest.mark.parametrize("fmt, magic, mime", [("svg", b"<?xml", "image/svg+xml"), ("pdf", b"%PDF", "image/png")])
def test_figures_as_svg_or_pdf(two_streams, tmp_path, fmt, magic, mime):
    result = write_report(two_streams, out=tmp_path, figures=fmt)
    figures = [p for p in result["files"] if p.suffix == f".{fmt}"]
    assert {p.name for p in figures} >= {f"task_accuracy_split_digits.{fmt}", f"comparison.{fmt}"}
    assert not list(tmp_path.glob("*.png"))
    for p in figures:
        assert p.read_bytes().startswith(magic)
    page = (tmp_path / "report.html").read_text()
    assert page.count(f"src='data:{mime};base64,") == len(figures)  # a PDF is shown as a PNG rendering


def test_sparse_eval_points_are_points_and_dense_ones_are_lines_with_a_band():
    import numpy as np

    from continual.report.figures import _new_figure, draw_series

    x, mean, std = np.array([0.0, 100, 200]), np.array([0.1, 0.9, 0.5]), np.array([0.0, 0.05, 0.1])
    fig = _new_figure(4, 3)
    sparse, dense = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    line = draw_series(sparse, x, mean, std, dense=False)
    assert line.get_linestyle() == "None" and line.get_marker() == "o"  # no ramp between task ends
    assert len(sparse.collections) == 1  # the ± std error bars
    line = draw_series(dense, x, mean, std, dense=True)
    assert line.get_linestyle() == "-"
    band = dense.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(0.95) and band[:, 1].min() == pytest.approx(0.1)


def test_task_curves_draw_each_task_with_its_seed_spread(two_streams):
    from continual.report.figures import _curves, is_dense
    from continual.report.runs import find_runs, group_runs

    groups = {(g.stream, g.strategy): g for g in group_runs(find_runs(two_streams))}
    x, mean, std = _curves(groups[("split_digits", "er")], "acc_task_0")
    assert list(x) == [0, 100, 200]
    assert std[0] == pytest.approx(0.01 / 2 ** 0.5)  # task 0 differs by 0.01 between the two seeds
    assert not is_dense(groups[("split_digits", "er")]) and is_dense(groups[("split_mnist", "er")])


# ---------------------------------------------------------------------- hyper-parameter search
def _optuna_sweep(root, direction="maximize"):
    """What the Hydra Optuna sweeper leaves: multirun.yaml naming the sweeper,
    optimization_results.yaml, one run folder per trial (one failed)."""
    root.mkdir()
    (root / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper\n"
        f"    direction: {direction}\n    params:\n      strategy.lr: tag(log, interval(0.005, 0.5))\n"
        "      strategy.replay_batch_size: choice(5, 10, 20)\n")
    trials = [(0.01, 5, 0.55), (0.2, 10, 0.75), (0.05, 20, 0.65), (0.4, 5, 0.35)]
    for num, (lr, rbs, score) in enumerate(trials):
        _write_run(root / f"split_digits_er_s0_{num}", acc=score, job=num,
                   config={"lr": lr, "replay_batch_size": rbs})
    failed = root / "split_digits_er_s0_4"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "error.txt").write_text("ValueError: loss is NaN (simulated)\n")
    best = max(trials, key=lambda t: t[2]) if direction == "maximize" else min(trials, key=lambda t: t[2])
    (root / "optimization_results.yaml").write_text(
        f"name: optuna\nbest_params:\n  strategy.lr: {best[0]}\n  strategy.replay_batch_size: {best[1]}\n"
        f"best_value: {best[2]}\n")
    return root


def _hparams(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_an_optuna_sweep_gets_its_trials_sorted_by_the_objective_best_marked(tmp_path):
    sweep = _optuna_sweep(tmp_path / "sweep")
    result = write_report(sweep, plots=False)
    rows = _hparams(sweep / "hparams.csv")
    assert [r["trial"] for r in rows] == ["1", "2", "0", "3", ""]  # best first, the failed trial last
    assert [r["best"] for r in rows] == ["1", "0", "0", "0", "0"]
    assert rows[0]["strategy.lr"] == "0.2" and rows[0]["strategy.replay_batch_size"] == "10"
    assert float(rows[0]["score"]) == 0.75 and rows[-1]["status"] == "failed"
    md = (sweep / "report.md").read_text()
    section = md.split("## Hyper-parameter search")[1].split("\n## ")[0]
    assert "objective `score` maximised" in section and "best strategy.lr=0.2" in section
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| trial | best | score | strategy.lr | strategy.replay_batch_size |")
    assert lines[1].startswith("| 1 | ★ | **0.750** | 0.2 | 10 |")
    assert result["search"].maximize
    assert "<h2>Hyper-parameter search</h2>" in (sweep / "report.html").read_text()


def test_a_minimised_objective_is_sorted_smallest_first(tmp_path):
    sweep = _optuna_sweep(tmp_path / "sweep", direction="minimize")
    write_report(sweep, plots=False)
    rows = _hparams(sweep / "hparams.csv")
    assert [r["trial"] for r in rows][:4] == ["3", "0", "2", "1"] and rows[0]["best"] == "1"


def test_a_plain_sweep_has_no_search_table_unless_an_objective_is_given(two_streams, tmp_path):
    write_report(two_streams, out=tmp_path, plots=False)
    assert not (tmp_path / "hparams.csv").exists()
    assert "Hyper-parameter search" not in (tmp_path / "report.md").read_text()
    write_report(two_streams, out=tmp_path, plots=False, objective="forgetting")
    rows = _hparams(tmp_path / "hparams.csv")
    assert [float(r["forgetting"]) for r in rows] == sorted(float(r["forgetting"]) for r in rows)


def test_the_command_line_options(two_streams, tmp_path, capsys):
    main([str(two_streams), "--out", str(tmp_path), "--percent", "--figures", "svg", "--metrics", "acc,forgetting"])
    out = capsys.readouterr().out
    assert "| acc (%) | forgetting (%) |" in out and "report.tex" in out
    assert (tmp_path / "comparison.svg").is_file()
