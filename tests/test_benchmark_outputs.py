"""`benchmarks/run.py --quick` is a smoke run: it never replaces the committed results."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_module():
    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_quick_run_writes_outside_the_committed_results():
    run = _run_module()
    results, markdown = run.output_paths(quick=True, results_dir=None, markdown=None)
    committed = ROOT / "benchmarks"
    assert committed not in results.parents and committed not in markdown.parents
    assert (ROOT / "outputs") in results.parents  # git-ignored


def test_a_full_run_writes_the_committed_results_and_explicit_paths_win(tmp_path):
    run = _run_module()
    assert run.output_paths(False, None, None) == (ROOT / "benchmarks" / "results",
                                                   ROOT / "benchmarks" / "RESULTS_engine.md")
    assert run.output_paths(True, str(tmp_path / "r"), str(tmp_path / "m.md")) == (tmp_path / "r", tmp_path / "m.md")


def test_one_quick_benchmark_run_on_its_own_writes_outside_the_committed_results(monkeypatch):
    run = _run_module()
    written = {}
    monkeypatch.setattr(run, "write_json", lambda path, obj: written.setdefault("path", Path(path)))
    monkeypatch.setattr(run, "environment", lambda device: {})
    run.benchmark_cli("engine_overhead", lambda quick, device: {"quick_seen": quick}, lambda r: "", ["--quick"])
    assert written["path"] == run.QUICK_DIR / "results" / "engine_overhead.json"
