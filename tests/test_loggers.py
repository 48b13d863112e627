"""wandb and TensorBoard loggers: the same numbers as metrics.jsonl, read back from the files
they wrote (wandb offline, TensorBoard event files); one wandb run per run folder, however often
it resumes; failures that never stop a run."""

import inspect
import json
import sys
import types
import warnings

import pytest
import torch
from _cli import run_continual, run_python

from continual import streams
from continual.config import CheckpointConfig, EvalConfig, LogConfig
from continual.loggers import abort_loggers, make_loggers, run_name, run_names, swept_overrides
from continual.models import build_model
from continual.runner import Runner
from continual.strategies.er import ER
from continual.types import ConfigError, Logger

CHOICES = {"stream": "split_digits", "strategy": "er", "model": "mlp", "experiment": "digits_study",
           "hydra/launcher": "basic"}
SWEPT = {"strategy.lr": "0.1", "seed": "3"}
CONFIG = {"seed": 3, "stream": {"_target_": "continual.streams.class_incremental", "dataset": "digits",
                                "n_tasks": 5},
          "strategy": {"_target_": "continual.strategies.er.ER", "lr": 0.1}, "model": {"hidden": 16}}


def _runner(out_dir, loggers, eval_every=0):
    torch.manual_seed(3)
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=3)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    return Runner(stream, ER(model, lr=0.1), out_dir=str(out_dir), seed=3, loggers=loggers, config=CONFIG,
                  extra_summary={"strategy": "er", "model": "mlp"}, eval=EvalConfig(every=eval_every),
                  log=LogConfig(every=10), checkpoint=CheckpointConfig(min_interval_s=0))


def _run(out_dir, loggers, eval_every=0):
    return _runner(out_dir, loggers, eval_every).run()


def _records(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def _by_step(history):
    return {row["_step"]: row for row in history}


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One run with both loggers, offline, as a job of a sweep over strategy.lr and seed,
    uploading its checkpoints."""
    wandb = pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("multirun") / "sweep_a" / "split_digits_er_s3_0"
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.delenv("WANDB_RUN_GROUP", raising=False)
    try:
        loggers = make_loggers({"wandb": {"log_checkpoints": True}, "tensorboard": {}}, CONFIG, out,
                               CHOICES, swept=SWEPT)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = _run(out, loggers, eval_every=20)
    finally:
        mp.undo()
        wandb.teardown()  # wandb's service writes the offline files after finish(): wait for it
    from continual.loggers.wandb_logger import read_offline_run

    return {"out": out, "summary": summary, "wandb": read_offline_run(out), "warnings": caught}


def test_logging_to_wandb_offline_gives_no_warning(logged_run):
    assert not [w for w in logged_run["warnings"] if "logger" in str(w.message)]


def test_wandb_history_has_the_numbers_of_metrics_jsonl_at_the_engine_step(logged_run):
    records = _records(logged_run["out"])
    history = logged_run["wandb"]["history"]
    assert [row["_step"] for row in history] == sorted({r["step"] for r in records})  # one row per step
    rows = _by_step(history)
    for rec in records:
        prefix = "eval/" if rec["type"] == "eval" else "train/"
        row = rows[rec["step"]]
        assert row["samples_seen"] == rec["samples_seen"]
        numbers = {k: v for k, v in rec.items() if isinstance(v, float) and k != "time"}
        assert numbers
        for key, value in numbers.items():
            assert row[prefix + key] == pytest.approx(value, rel=1e-12), key


def test_each_eval_point_has_task_il_accuracy_per_task_forgetting_and_bwt(logged_run):
    rows = _by_step(logged_run["wandb"]["history"])
    evals = [r for r in _records(logged_run["out"]) if r["type"] == "eval"]
    assert sum(r["kind"] == "periodic" for r in evals) > 5
    for rec in evals:
        assert rows[rec["step"]]["eval/acc_task_il"] == pytest.approx(rec["acc_task_il"])
    last = rows[evals[-1]["step"]]
    assert last["eval/bwt"] == pytest.approx(logged_run["summary"]["bwt"])
    per_task = [last[f"eval/forgetting_task_{t}"] for t in range(4)]
    assert per_task == pytest.approx(logged_run["summary"]["forgetting_per_task"])
    # a task's forgetting curve starts once a later task has been trained
    first_end, second_end = [rows[r["step"]] for r in evals if r["kind"] == "task_end"][:2]
    assert "eval/forgetting_task_0" not in first_end
    assert "eval/forgetting_task_0" in second_end and "eval/forgetting_task_1" not in second_end


def test_wandb_config_carries_the_strategy_and_stream_names_chosen(logged_run):
    config = logged_run["wandb"]["config"]
    assert config["choices"] == {"stream": "split_digits", "strategy": "er", "model": "mlp",
                                 "experiment": "digits_study"}  # hydra/* choices left out
    assert config["swept"] == SWEPT
    assert config["strategy"]["_target_"] == "continual.strategies.er.ER" and config["seed"] == 3


def test_wandb_run_is_named_by_its_setting_grouped_by_experiment_and_tagged(logged_run):
    w = logged_run["wandb"]
    assert w["name"] == "split_digits-er-3 strategy.lr=0.1"  # the seed is in the name once
    assert w["group"] == "digits_study"
    assert w["job_type"] == "er"
    assert set(w["tags"]) == {"split_digits", "er", "mlp", "digits_study"}


def test_wandb_summary_is_the_run_summary(logged_run):
    summary, logged = logged_run["summary"], logged_run["wandb"]["summary"]
    for key in ("acc", "forgetting", "bwt", "aia", "online_acc", "stability_gap", "steps", "seed"):
        assert logged[key] == pytest.approx(summary[key]), key
    assert "config" not in logged


def test_the_accuracy_matrix_is_logged_once_at_the_end_not_at_every_eval_point(logged_run):
    from PIL import Image

    out = logged_run["out"]
    files = next((out / "wandb").glob("offline-run-*")) / "files"
    with_matrix = [row for row in logged_run["wandb"]["history"] if "eval/accuracy_matrix/path" in row]
    assert len(with_matrix) == 1 and with_matrix[0]["_step"] == logged_run["wandb"]["history"][-1]["_step"]
    assert len(list(files.rglob("*.table.json"))) == 1
    table = json.loads((files / with_matrix[0]["eval/accuracy_matrix/path"]).read_text())
    scores = (out / "scores.csv").read_text().splitlines()
    assert table["columns"] == scores[0].split(",")
    assert len(table["data"]) == len(scores) - 1 == sum(r["type"] == "eval" for r in _records(out))
    with Image.open(files / with_matrix[0]["eval/accuracy_heatmap/path"]) as im:
        assert im.width > 150 and im.height > 100


def test_checkpoints_are_uploaded_as_artifacts_when_asked(logged_run):
    artifacts = [a for a in logged_run["wandb"]["artifacts"] if a["type"] == "checkpoint"]
    task_ends = [r["step"] for r in _records(logged_run["out"]) if r.get("kind") == "task_end"]
    # one per checkpoint: each task end but the last (checkpoint.keep=2 deletes older files, not artifacts)
    assert [a["metadata"]["step"] for a in artifacts] == task_ends[:-1]
    assert all(f"step-{a['metadata']['step']}" in a["aliases"] and "latest" in a["aliases"] for a in artifacts)
    assert all(a["metadata"]["file"] == f"ckpt-{a['metadata']['step']:09d}.pt" for a in artifacts)


def test_tensorboard_has_the_same_scalars(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logged_run["out"] / "tensorboard"))
    acc.Reload()
    evals = [r for r in _records(logged_run["out"]) if r["type"] == "eval"]
    events = acc.Scalars("eval/acc")
    assert [e.step for e in events] == [r["samples_seen"] for r in evals]
    assert [e.value for e in events] == pytest.approx([r["acc"] for r in evals], rel=1e-6)
    assert acc.Scalars("eval/forgetting_task_0")[-1].value == pytest.approx(
        logged_run["summary"]["forgetting_per_task"][0], rel=1e-6)
    steps = [r for r in _records(logged_run["out"]) if r["type"] == "step"]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in steps],
                                                                          rel=1e-6)
    final = acc.Scalars("summary/acc")[0].value
    assert final == pytest.approx(logged_run["summary"]["acc"], rel=1e-6)


def _tensorboard(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_has_hparams_for_the_sweep_dashboard(logged_run):
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.plugins.hparams.api_pb2 import Status

    content = _tensorboard(logged_run["out"]).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["choices.strategy"].string_value == "er" and hp["choices.stream"].string_value == "split_digits"
    assert hp["strategy.lr"].number_value == pytest.approx(0.1) and hp["seed"].number_value == 3
    assert "strategy._target_" not in hp and "hydra/launcher" not in str(hp)
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == Status.Value("STATUS_SUCCESS")
    # no experiment summary: TensorBoard builds the table from every run's session
    assert "_hparams_/experiment" not in content


def test_tensorboard_has_the_config_as_text_and_the_accuracy_matrix_image(logged_run):
    acc = _tensorboard(logged_run["out"])
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "dataset: digits" in text and "n_tasks: 5" in text and "lr: 0.1" in text
    (image,) = acc.Images("eval/accuracy_matrix")
    assert image.width > 150 and image.height > 100
    assert image.step == logged_run["summary"]["samples_seen"]


def test_the_loggers_import_no_report_code():
    from continual.loggers import matrix, tensorboard_logger, wandb_logger

    for module in (wandb_logger, tensorboard_logger, matrix):
        assert "continual.report" not in inspect.getsource(module), module.__name__


class _Crash(Logger):
    """A view that stops the run, as a crash would, at the second step record after the third
    task end (after the checkpoint written there: records follow that a resume repeats)."""

    def __init__(self):
        self.task_ends, self.steps_after = 0, 0

    def log(self, record):
        self.task_ends += record.get("kind") == "task_end"
        self.steps_after += self.task_ends >= 3 and record["type"] == "step"
        if self.steps_after == 2:
            raise RuntimeError("simulated crash")

    def finish(self, summary):
        pass


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from continual.loggers.wandb_logger import RUN_ID_FILE, read_offline_run, run_files

    monkeypatch.setenv("WANDB_MODE", "offline")
    first = make_loggers(["wandb"], CONFIG, tmp_path, CHOICES)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _runner(tmp_path, [*first, _Crash()]).run()
    abort_loggers(first, RuntimeError("simulated crash"))
    wandb.teardown()  # the crashed process is gone, and its wandb service with it
    crashed_at = _records(tmp_path)[-1]["step"]

    runner = _runner(tmp_path, make_loggers(["wandb"], CONFIG, tmp_path, CHOICES))
    assert runner.resume() and runner.state.step < crashed_at
    runner.run()
    wandb.teardown()

    run_id = (tmp_path / RUN_ID_FILE).read_text().strip()
    # the two processes' folders are named run-<second>-<id>: started in the same second they tie,
    # so tell them apart by where their histories start
    old, new = sorted((read_offline_run(f.rsplit("/", 1)[0]) for f in run_files(tmp_path)),
                      key=lambda w: w["history"][0]["_step"])
    assert set(old["ids"]) == set(new["ids"]) == {run_id}  # one wandb run, resumed
    old_steps, new_steps = ([r["_step"] for r in w["history"]] for w in (old, new))
    assert old_steps[-1] == crashed_at, (old_steps[-3:], crashed_at)
    assert new_steps[0] > crashed_at, (new_steps[:3], crashed_at)  # the history continues; nothing twice
    assert old_steps + new_steps == sorted({r["step"] for r in _records(tmp_path)})
    assert not [a for a in old["artifacts"] + new["artifacts"] if a["type"] == "checkpoint"]  # not asked for


def test_a_fresh_run_in_a_used_folder_is_a_new_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from continual.loggers.wandb_logger import RUN_ID_FILE

    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / RUN_ID_FILE).write_text("oldrun01\n")  # left by a run that did not resume (resume=false)
    _run(tmp_path, make_loggers(["wandb"], CONFIG, tmp_path, CHOICES))
    assert (tmp_path / RUN_ID_FILE).read_text().strip() != "oldrun01"


@pytest.mark.slow
def test_a_killed_and_requeued_cli_run_is_one_wandb_run_with_one_history(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from continual.loggers.wandb_logger import RUN_ID_FILE, read_offline_run, run_files

    # each process its own wandb service, as after a requeue (not the one this test process may
    # have started, whose stream of the killed run would stay open)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    out = tmp_path / "run"
    args = ["stream=split_digits", "loggers=[wandb,tensorboard]", "log.console=false", "checkpoint.every=20",
            "eval.every=30", "report.per_run=false", f"hydra.run.dir={out}"]
    killed = run_continual(*args, fault="step:50")  # SIGKILL after step 50; checkpoint at step 40
    assert killed.returncode == -9, killed.stderr
    resumed = run_continual(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr

    run_id = (out / RUN_ID_FILE).read_text().strip()
    files = run_files(out)
    assert len(files) == 2 and all(f.endswith(f"-{run_id}/run-{run_id}.wandb") for f in files)
    # the killed process's wandb service may not have written all it was sent; whatever it
    # wrote, the resumed process sends the rest, each step once
    steps = [row["_step"] for row in read_offline_run(out)["history"]]
    assert steps == sorted({r["step"] for r in _records(out)})
    assert read_offline_run(out)["ids"][-1] == run_id
    # TensorBoard hides what the killed process logged after the checkpoint (purge_step)
    evals = [r["samples_seen"] for r in _records(out) if r["type"] == "eval"]
    assert [e.step for e in _tensorboard(out).Scalars("eval/acc")] == evals


def test_swept_overrides_are_the_keys_the_sweep_varies(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - strategy.lr=0.01,0.1\n    - seed=range(2)\n    - eval.every=10\n")
    job = ["strategy.lr=0.1", "seed=1", "eval.every=10"]
    assert swept_overrides(job, tmp_path) == {"strategy.lr": "0.1", "seed": "1"}
    assert swept_overrides(job, tmp_path, {"strategy.batch": "choice(1,2)"}) == {"strategy.lr": "0.1", "seed": "1"}
    assert swept_overrides(job, None) == {}  # a single run sweeps nothing
    (tmp_path / "multirun.yaml").unlink()  # a launcher that writes no multirun.yaml: every override counts
    assert swept_overrides(job, tmp_path, {}) == {"strategy.lr": "0.1", "seed": "1", "eval.every": "10"}


def test_the_sweep_file_is_read_once_per_sweep_and_again_when_it_changes(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    loads = []
    real_load = OmegaConf.load
    monkeypatch.setattr(OmegaConf, "load", lambda path: loads.append(path) or real_load(path))
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - seed=0,1\n")
    for seed in ("0", "1"):  # the jobs of one sweep in one process
        assert swept_overrides([f"seed={seed}", "strategy.lr=0.1"], tmp_path) == {"seed": seed}
    assert len(loads) == 1
    (tmp_path / "multirun.yaml").write_text(  # a new sweep in the same folder
        "hydra:\n  overrides:\n    task:\n    - strategy.lr=0.01,0.1\n    - seed=0\n")
    assert swept_overrides(["seed=0", "strategy.lr=0.1"], tmp_path) == {"strategy.lr": "0.1"}
    assert len(loads) == 2


def test_run_names_are_unique_within_a_sweep(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - strategy.lr=0.01,0.1\n    - seed=0\n")
    names = {run_name(run_names(CONFIG, CHOICES, swept_overrides([f"strategy.lr={lr}", "seed=0"], tmp_path)))
             for lr in ("0.01", "0.1")}
    assert names == {"split_digits-er-3 strategy.lr=0.01", "split_digits-er-3 strategy.lr=0.1"}


@pytest.mark.slow
def test_two_jobs_of_a_cli_sweep_get_unique_run_names_and_their_setting_as_group(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_SERVICE", raising=False)  # the sweep's own wandb service
    from continual.loggers.wandb_logger import read_offline_run

    sweep = tmp_path / "sweep"
    r = run_continual("-m", "stream=split_digits", "strategy.lr=0.05,0.1", "loggers=[wandb]", "log.console=false",
                      "++stream.train_per_class=5", "++stream.test_per_class=5", "report.sweep=false",
                      f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    runs = [read_offline_run(job) for job in sorted(p for p in sweep.iterdir() if p.is_dir())]
    assert [w["name"] for w in runs] == ["split_digits-er-0 strategy.lr=0.05", "split_digits-er-0 strategy.lr=0.1"]
    assert {w["config"]["choices"]["strategy"] for w in runs} == {"er"}
    assert {w["config"]["choices"]["stream"] for w in runs} == {"split_digits"}
    assert [w["group"] for w in runs] == ["split_digits-er strategy.lr=0.05", "split_digits-er strategy.lr=0.1"]


def test_missing_wandb_stops_at_start_unless_told_to_continue_then_warns_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ConfigError, match="needs the wandb package"):
        make_loggers(["wandb"], CONFIG, tmp_path, CHOICES)
    with pytest.warns(RuntimeWarning, match="wandb") as caught:
        loggers = make_loggers({"wandb": {"on_failure": "continue"}}, CONFIG, tmp_path, CHOICES)
        summary = _run(tmp_path, loggers)
    assert len([w for w in caught if "wandb" in str(w.message)]) == 1
    assert json.loads((tmp_path / "summary.json").read_text())["acc"] == summary["acc"]


class _BrokenRun:
    """A wandb run whose log() starts failing at its third call."""

    def __init__(self):
        self.calls, self.exit_code, self.id = 0, None, "broken01"
        self.summary = {}

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, data, step=None):
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
    loggers = make_loggers(["wandb"], CONFIG, tmp_path, CHOICES)
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
    loggers = make_loggers(["wandb"], CONFIG, tmp_path, CHOICES)
    try:
        with pytest.warns(RuntimeWarning, match="logging offline"):
            summary = _run(tmp_path, loggers)
    finally:
        wandb.teardown()  # leave no process-wide wandb settings behind for later tests
    from continual.loggers.wandb_logger import read_offline_run

    assert read_offline_run(str(tmp_path))["summary"]["acc"] == pytest.approx(summary["acc"])


def test_unknown_logger_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tensorboard"):
        make_loggers(["wandbb"], CONFIG, tmp_path, CHOICES)


def test_unknown_logger_option_is_a_config_error_naming_the_options(tmp_path):
    with pytest.raises(ConfigError, match="log_checkpoints"):
        make_loggers({"wandb": {"log_checkpoint": True}}, CONFIG, tmp_path, CHOICES)


def test_choosing_loggers_imports_neither_wandb_nor_tensorboard(tmp_path):
    code = ("import sys; from continual.loggers import make_loggers; "
            f"make_loggers({{'wandb': {{'log_checkpoints': True}}, 'tensorboard': {{}}}}, {{}}, {str(tmp_path)!r}); "
            "print(sorted(m for m in ('wandb', 'tensorboard') if m in sys.modules))")
    out = run_python("-c", code, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
