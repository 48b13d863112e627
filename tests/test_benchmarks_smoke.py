"""The benchmark suite runs end to end: ``benchmarks/run.py --quick --only engine_overhead``
writes a results JSON with the ratio keys and a results page, in a temporary folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # a benchmark run in a subprocess


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
         "--only", "engine_overhead", "--results-dir", str(out / "results"),
         "--markdown", str(out / "RESULTS_engine.md")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_quick_engine_overhead_reports_both_ratios_for_every_setting(quick_run):
    result = json.loads((quick_run / "results" / "engine_overhead.json").read_text())
    cells = {(r["setting"], r["method"]) for r in result["rows"]}
    assert cells == {("online", "naive"), ("online", "er"), ("offline", "naive"), ("offline", "er")}
    for row in result["rows"]:
        assert row["runner_over_hand"] > 0 and row["avalanche_over_runner"] > 0


def test_quick_engine_overhead_runner_and_hand_loop_do_the_same_work(quick_run):
    result = json.loads((quick_run / "results" / "engine_overhead.json").read_text())
    for row in result["rows"]:
        assert row["acc"]["runner"] == pytest.approx(row["acc"]["hand"], abs=1e-6)


def test_quick_run_writes_the_results_page_with_machine_and_versions(quick_run):
    page = (quick_run / "RESULTS_engine.md").read_text()
    assert "## engine_overhead (quick)" in page
    assert "torch " in page and "runner/hand" in page
