"""The benchmark suite runs end to end: ``benchmarks/run.py --quick --only engine_overhead``
writes a results JSON with the ratio keys and a results page, in a temporary folder; and
``benchmarks/avalanche_sweep.py --quick`` times both sides of the README sweep and the adapter."""

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


@pytest.fixture(scope="module")
def avalanche_sweep_quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("avalanche_sweep") / "avalanche_sweep.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "avalanche_sweep.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_quick_avalanche_sweep_times_both_sides_and_prints_the_ratio(avalanche_sweep_quick):
    sweep = avalanche_sweep_quick["sweep"]
    assert sweep["avalanche_over_ours"] > 0
    for side in ("ours", "avalanche"):
        assert len(sweep["sides"][side]["runs"]) == 9
        assert sweep["sides"][side]["phases"]["train"] > 0
    assert "Avalanche/ours" in avalanche_sweep_quick["markdown"]


def test_quick_avalanche_sweep_naive_does_the_same_work_on_both_sides(avalanche_sweep_quick):
    """Same data, order, initial weights and optimiser: Naive scores alike to the last digit."""
    for run in avalanche_sweep_quick["sweep"]["accuracy"]["runs"]:
        if run["strategy"] == "naive":
            assert run["ours_acc"] == pytest.approx(run["avalanche_acc"], abs=1e-6)


def test_quick_avalanche_sweep_compares_the_adapter_on_both_protocols(avalanche_sweep_quick):
    rows = avalanche_sweep_quick["adapter"]
    assert {r["protocol"] for r in rows} == {"online", "experience"}
    assert all(r["runner_over_plain"] > 0 for r in rows)
