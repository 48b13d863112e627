"""`continual report`: the table equals the runs' summary.json, plots are real images,
failed and unfinished runs are listed."""

import csv
import json

import numpy as np
import pytest
import torch
from _cli import run_continual

from continual import streams
from continual.config import EvalConfig, LogConfig
from continual.models import build_model
from continual.report import main, write_report, write_run_report
from continual.report.runs import METRICS, find_runs
from continual.runner import Runner
from continual.strategies.er import ER
from continual.strategies.naive import Naive
from continual.types import ConfigError

STRATEGIES = {"naive": Naive, "er": ER}


def _run(out_dir, strategy="naive", seed=0, lr=0.1):
    """A tiny real run into ``out_dir``, with the config the CLI would record."""
    torch.manual_seed(seed)
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=seed)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    config = {"seed": seed, "log": {"console": False},
              "stream": {"_target_": "continual.streams.class_incremental", "dataset": "digits"},
              "strategy": {"_target_": f"strategies.{strategy}", "lr": lr}}
    Runner(stream, STRATEGIES[strategy](model, lr=lr), out_dir=str(out_dir), seed=seed, config=config,
           extra_summary={"strategy": strategy, "model": "mlp"}, eval=EvalConfig(every=40),
           log=LogConfig(every=20)).run()
    return out_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A multirun folder: naive and ER x 2 seeds, one failed job, one unfinished job."""
    root = tmp_path_factory.mktemp("sweep")
    for i, (strategy, seed) in enumerate([("naive", 0), ("naive", 1), ("er", 0), ("er", 1)]):
        _run(root / "2026-01-01" / f"split_digits_{strategy}_s{seed}_{i}", strategy, seed)
    failed = root / "2026-01-01" / "split_digits_er_s2_4"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "error.txt").write_text("Traceback (most recent call last):\n  ...\n"
                                      "RuntimeError: CUDA out of memory (simulated)\n")
    crashed = root / "2026-01-01" / "split_digits_er_s3_5"
    (crashed / ".hydra").mkdir(parents=True)
    (crashed / "continual.log").write_text("[INFO] start\nTraceback (most recent call last):\n"
                                           "  File x\nValueError: loss is NaN (simulated)\n")
    unfinished = root / "2026-01-01" / "split_digits_er_s4_6"
    unfinished.mkdir()
    (unfinished / "metrics.jsonl").write_text('{"type": "eval", "kind": "init", "acc": 0.1, '
                                              '"samples_seen": 0, "step": 0}\n')
    result = write_report(root, out=root / "report")
    return root, result


def _summaries(root, strategy):
    paths = sorted(root.glob(f"2026-01-01/split_digits_{strategy}_s*/summary.json"))
    return [json.loads(p.read_text()) for p in paths]


def _csv_rows(path):
    with open(path, newline="") as f:
        return {row["strategy"]: row for row in csv.DictReader(f)}


def test_table_has_mean_and_std_of_the_summaries(sweep):
    root, _ = sweep
    rows = _csv_rows(root / "report" / "report.csv")
    assert set(rows) == {"naive", "er"}
    for strategy, row in rows.items():
        summaries = _summaries(root, strategy)
        assert int(row["n"]) == len(summaries) == 2
        assert row["stream"] == "split_digits" and row["model"] == "mlp" and row["setting"] == ""
        for m in METRICS:
            if m == "fwt":  # undefined on this class-incremental stream: empty (test_report_paper.py)
                assert row["fwt_mean"] == row["fwt_std"] == ""
                continue
            values = np.array([s[m] for s in summaries], dtype=float)
            assert float(row[f"{m}_mean"]) == pytest.approx(values.mean(), rel=1e-12), m
            std = values.std(ddof=1)
            assert float(row[f"{m}_std"]) == pytest.approx(std, rel=1e-9, abs=1e-15), m


def test_markdown_and_html_show_the_same_table(sweep):
    root, _ = sweep
    md = (root / "report" / "report.md").read_text()
    page = (root / "report" / "report.html").read_text()
    for strategy in ("naive", "er"):
        accs = np.array([s["acc"] for s in _summaries(root, strategy)])
        cell = f"{accs.mean():.3f} ± {accs.std(ddof=1):.3f}"
        assert cell in md and cell in page


def test_every_png_is_a_real_image(sweep):
    from PIL import Image

    root, result = sweep
    pngs = [p for p in result["files"] if p.suffix == ".png"]
    names = {p.name for p in pngs}
    assert names == {"accuracy_matrix_split_digits.png", "accuracy_forgetting_split_digits.png",
                     "task_accuracy_split_digits.png", "comparison.png"}
    for p in pngs:
        with Image.open(p) as im:
            im.load()
            assert im.width >= 300 and im.height >= 200
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
        assert f"title='{p.name}'" in (root / "report" / "report.html").read_text()  # inline, from this file


def test_failed_runs_are_listed_with_their_error(sweep):
    root, result = sweep
    md = (root / "report" / "report.md").read_text()
    assert "split_digits_er_s2_4" in md and "CUDA out of memory (simulated)" in md
    assert "split_digits_er_s3_5" in md and "loss is NaN (simulated)" in md
    status = {r.path.name: r.status for r in result["runs"]}
    assert status["split_digits_er_s2_4"] == status["split_digits_er_s3_5"] == "failed"


def test_an_unfinished_run_is_listed_but_not_counted(sweep):
    root, result = sweep
    status = {r.path.name: r.status for r in result["runs"]}
    assert status["split_digits_er_s4_6"] == "incomplete"
    assert "split_digits_er_s4_6" in (root / "report" / "report.md").read_text()
    assert int(_csv_rows(root / "report" / "report.csv")["er"]["n"]) == 2


def test_runs_differing_in_an_option_are_separate_groups(tmp_path):
    for i, (seed, lr) in enumerate([(0, 0.1), (1, 0.1), (0, 0.01)]):
        _run(tmp_path / f"job_{i}", "naive", seed, lr)
    result = write_report(tmp_path, plots=False)
    labels = sorted((g.setting, len(g.runs)) for g in result["groups"])
    assert labels == [("strategy.lr=0.01", 1), ("strategy.lr=0.1", 2)]


def test_a_run_writes_its_own_report(tmp_path):
    from PIL import Image

    run = _run(tmp_path / "run", "er", 0)
    html_path = write_run_report(run)
    assert html_path == run / "report.html" and html_path.is_file()
    summary = json.loads((run / "summary.json").read_text())
    row = next(csv.DictReader(open(run / "report.csv")))
    assert float(row["acc_mean"]) == summary["acc"] and row["acc_std"] == "" and row["n"] == "1"
    with Image.open(run / "accuracy_matrix_split_digits.png") as im:
        assert im.width >= 300


def test_run_report_of_a_missing_folder_warns_instead_of_raising(tmp_path):
    with pytest.warns(RuntimeWarning, match="continual report"):
        assert write_run_report(tmp_path / "nowhere") is None


def test_a_folder_without_runs_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no run folder"):
        write_report(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2


def test_run_folders_are_found_at_any_depth_but_not_inside_runs(sweep):
    root, _ = sweep
    runs = find_runs(root)
    assert len(runs) == 7  # 4 finished, 2 failed, 1 unfinished; nothing from report/
    assert find_runs(runs[0].path)[0].path == runs[0].path


@pytest.mark.slow
def test_the_report_command(sweep, tmp_path):
    root, _ = sweep
    out = run_continual("report", str(root), "--out", str(tmp_path), "--no-plots", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| split_digits | er | mlp |" in out.stdout
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.html").exists()
    assert (tmp_path / "report.csv").read_text() == (root / "report" / "report.csv").read_text()
