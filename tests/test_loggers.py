"""wandb and TensorBoard loggers: the same numbers as metrics.jsonl, and failures that never
stop a run."""

import json
import sys
import types
import warnings

import pytest
import torch
from _cli import run_python

from continual import streams
from continual.loggers import make_loggers, sweep_group
from continual.models import build_model
from continual.runner import Runner
from continual.strategies.er import ER
from continual.types import ConfigError

NAMES = {"stream": "split_digits", "strategy": "er", "model": "mlp"}
CONFIG = {"seed": 3, "stream": {"dataset": "digits", "n_tasks": 5},
          "strategy": {"_target_": "continual.strategies.er.ER"}}


def _run(out_dir, loggers, eval_every=0):
    torch.manual_seed(3)
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=3)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    runner = Runner(stream, ER(model, lr=0.1), out_dir=str(out_dir), seed=3, loggers=loggers,
                    config=CONFIG, eval_every=eval_every, log_every=20,
                    extra_summary={"strategy": "er", "model": "mlp"})
    return runner.run()


def _records(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One run with both loggers, offline, as job 0 of a sweep in <tmp>/multirun/sweep_a."""
    pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("multirun") / "sweep_a" / "split_digits_er_s3_0"
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.delenv("WANDB_RUN_GROUP", raising=False)
    try:
        loggers = make_loggers(["wandb", "tensorboard"], CONFIG, out, NAMES, sweep_dir=out.parent)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = _run(out, loggers, eval_every=60)
    finally:
        mp.undo()
    import time

    from continual.loggers.wandb_logger import read_offline_run

    # wandb's service process writes the offline file after finish() returns; wait for its summary
    deadline = time.monotonic() + 60
    offline = read_offline_run(str(out))
    while "acc" not in offline["summary"] and time.monotonic() < deadline:
        time.sleep(1)
        offline = read_offline_run(str(out))
    return {"out": out, "summary": summary, "wandb": offline, "warnings": caught}


def test_logging_to_wandb_offline_gives_no_warning(logged_run):
    assert not [w for w in logged_run["warnings"] if "logger" in str(w.message)]


def test_wandb_history_has_the_numbers_of_metrics_jsonl(logged_run):
    records = _records(logged_run["out"])
    history = logged_run["wandb"]["history"]
    assert len(history) == len(records)
    for rec, row in zip(records, history):
        prefix = "eval/" if rec["type"] == "eval" else "train/"
        assert row["samples_seen"] == rec["samples_seen"]
        numbers = {k: v for k, v in rec.items() if isinstance(v, float) and k != "time"}
        assert numbers
        for key, value in numbers.items():
            assert row[prefix + key] == pytest.approx(value, rel=1e-12), key


def test_wandb_run_is_named_grouped_and_tagged(logged_run):
    w = logged_run["wandb"]
    assert w["name"] == "split_digits-er-3"
    assert w["job_type"] == "er"
    assert w["group"] == sweep_group(logged_run["out"].parent) and w["group"].endswith("/sweep_a")
    assert set(w["tags"]) == {"split_digits", "er", "mlp"}
    assert w["config"]["seed"] == 3 and w["config"]["stream"]["dataset"] == "digits"


def test_wandb_summary_is_the_run_summary(logged_run):
    summary, logged = logged_run["summary"], logged_run["wandb"]["summary"]
    for key in ("acc", "forgetting", "bwt", "aia", "online_acc", "stability_gap", "steps", "seed"):
        assert logged[key] == pytest.approx(summary[key]), key
    assert "config" not in logged


def test_each_eval_point_logs_the_matrix_table_and_a_heatmap(logged_run):
    from PIL import Image

    out = logged_run["out"]
    files = next((out / "wandb").glob("offline-run-*")) / "files"
    evals = [row for row in logged_run["wandb"]["history"] if "eval/acc" in row]
    n_evals = sum(r["type"] == "eval" for r in _records(out))
    assert len(evals) == n_evals and n_evals > 6  # init, periodic and task-end points
    for i, row in enumerate(evals):
        table = json.loads((files / row["eval/accuracy_matrix/path"]).read_text())
        assert table["columns"][:4] == ["step", "samples_seen", "kind", "task_0"]
        assert len(table["data"]) == i + 1  # the matrix so far: one row per eval point
        assert table["data"][-1][3] == pytest.approx(row["eval/acc_task_0"])
        with Image.open(files / row["eval/accuracy_heatmap/path"]) as im:
            assert im.width > 150 and im.height > 100


def test_tensorboard_has_the_same_scalars(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logged_run["out"] / "tensorboard"))
    acc.Reload()
    evals = [r for r in _records(logged_run["out"]) if r["type"] == "eval"]
    events = acc.Scalars("eval/acc")
    assert [e.step for e in events] == [r["samples_seen"] for r in evals]
    assert [e.value for e in events] == pytest.approx([r["acc"] for r in evals], rel=1e-6)
    steps = [r for r in _records(logged_run["out"]) if r["type"] == "step"]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in steps],
                                                                          rel=1e-6)
    final = acc.Scalars("summary/acc")[0].value
    assert final == pytest.approx(logged_run["summary"]["acc"], rel=1e-6)


def test_missing_wandb_warns_once_and_the_run_completes(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    loggers = make_loggers(["wandb"], CONFIG, tmp_path, NAMES)
    with pytest.warns(RuntimeWarning, match="cannot import wandb") as caught:
        summary = _run(tmp_path, loggers)
    assert len([w for w in caught if "wandb" in str(w.message)]) == 1
    assert json.loads((tmp_path / "summary.json").read_text())["acc"] == summary["acc"]


class _BrokenRun:
    """A wandb run whose log() starts failing at its third call."""

    def __init__(self):
        self.calls, self.exit_code = 0, None
        self.summary = {}

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, data):
        self.calls += 1
        if self.calls >= 3:
            raise ConnectionError("upload failed")

    def finish(self, exit_code=0):
        self.exit_code = exit_code


def test_a_wandb_error_mid_run_warns_once_and_closes_the_run(tmp_path, monkeypatch):
    run = _BrokenRun()
    fake = types.SimpleNamespace(init=lambda **kw: run, Settings=lambda **kw: kw,
                                 Table=lambda **kw: None, Image=lambda *a, **kw: None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    loggers = make_loggers(["wandb"], CONFIG, tmp_path, NAMES)
    with pytest.warns(RuntimeWarning, match="upload failed") as caught:
        _run(tmp_path, loggers)
    assert len([w for w in caught if "wandb" in str(w.message)]) == 1
    assert run.calls == 3 and run.exit_code == 1
    assert (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_unreachable_wandb_server_falls_back_to_an_offline_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    wandb.teardown()  # wandb reads its environment once per process setup
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    loggers = make_loggers(["wandb"], CONFIG, tmp_path, NAMES)
    try:
        with pytest.warns(RuntimeWarning, match="logging offline"):
            summary = _run(tmp_path, loggers)
    finally:
        wandb.teardown()  # leave no process-wide wandb settings behind for later tests
    from continual.loggers.wandb_logger import read_offline_run

    assert read_offline_run(str(tmp_path))["summary"]["acc"] == pytest.approx(summary["acc"])


def test_unknown_logger_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tensorboard"):
        make_loggers(["wandbb"], CONFIG, tmp_path, NAMES)


def test_choosing_loggers_imports_neither_wandb_nor_tensorboard(tmp_path):
    code = ("import sys; from continual.loggers import make_loggers; "
            f"make_loggers(['wandb', 'tensorboard'], {{}}, {str(tmp_path)!r}, {{}}); "
            "print(sorted(m for m in ('wandb', 'tensorboard') if m in sys.modules))")
    out = run_python("-c", code, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sweep_group_is_the_multirun_folder():
    assert sweep_group("/x/multirun/2026-11-27/21-06-12") == "2026-11-27/21-06-12"
    assert sweep_group(None) is None
