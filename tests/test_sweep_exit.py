"""A multirun whose jobs fail exits non-zero after the others finish, and says which failed."""

import json

import pytest
from _cli import run_continual

pytestmark = pytest.mark.slow  # multiruns in subprocesses


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_with_a_failing_job_exits_non_zero_and_lists_it(tmp_path, launcher):
    r = run_continual("-m", f"hydra/launcher={launcher}", "stream=drift_sea", "strategy=naive,onpro",
                      "stream.samples_per_concept=200", "log.console=false", f"hydra.sweep.dir={tmp_path}",
                      cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "1 job(s) of the sweep failed" in r.stderr and "drift_sea_onpro_s0_1" in r.stderr
    assert json.loads((tmp_path / "drift_sea_naive_s0_0" / "summary.json").read_text())["steps"] > 0


def test_a_sweep_without_failures_exits_zero(tmp_path):
    r = run_continual("-m", "stream=split_digits", "strategy=naive", "seed=0,1", "++stream.train_per_class=5",
                      "++stream.test_per_class=5", "log.console=false", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "failed" not in r.stderr


def test_a_sweep_writes_one_report_at_its_end_and_none_per_job(tmp_path):
    r = run_continual("-m", "stream=split_digits", "strategy=naive,er", "++stream.train_per_class=5",
                      "++stream.test_per_class=5", "log.console=false", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "report.md").is_file() and "| er |" in (tmp_path / "report.md").read_text()
    jobs = [p for p in tmp_path.iterdir() if p.is_dir() and (p / "summary.json").is_file()]
    assert len(jobs) == 2 and not any((job / "report.md").exists() for job in jobs)


def test_report_per_run_true_writes_each_jobs_report_too(tmp_path):
    r = run_continual("-m", "stream=split_digits", "strategy=naive", "report.per_run=true", "report.sweep=false",
                      "++stream.train_per_class=5", "++stream.test_per_class=5", "log.console=false",
                      f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / "report.md").exists()
    assert (next(p for p in tmp_path.iterdir() if p.is_dir()) / "report.md").is_file()
