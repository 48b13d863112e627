"""The wandb view of a run: config, per-step scalars, the accuracy matrix, the summary.

One run = one wandb run: ``config`` = the resolved Hydra config, ``group`` = the sweep
(multirun folder), ``job_type`` = the strategy, ``name`` = ``stream-strategy-seed``,
``tags`` = stream, strategy and model names (plus ``WANDB_TAGS``). Scalars use
``samples_seen`` as their x axis (``wandb.define_metric``) and carry the numbers of
``metrics.jsonl``: ``train/<key>`` for step records, ``eval/<key>`` for eval points.
Each eval point also logs the accuracy matrix so far (rows = eval points, columns =
tasks) as a ``wandb.Table`` and a heatmap image. ``summary.json`` (less its ``config``)
becomes the run summary.

wandb's own environment variables apply (``WANDB_MODE=offline``, ``WANDB_PROJECT``,
``WANDB_ENTITY``, ``WANDB_RUN_GROUP``, ``WANDB_INIT_TIMEOUT``). Failure never stops the
run: if wandb cannot start online (no key, no network) the logger falls back to an
offline run under the run folder (upload it later with ``wandb sync``); if even that
fails, or any later call fails, it warns once and stays silent.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import warnings
from typing import Any

from continual.loggers import scalars, sweep_group

DEFAULT_PROJECT = "continual"
INIT_TIMEOUT_S = 30.0  # wandb's default is 90 s; a sweep should not stall that long per job
FINISH_TIMEOUT_S = 60.0  # give up uploading after this; the data stays on disk for `wandb sync`


class WandbLogger:
    """Logs one run to wandb (see the module docstring); ``wandb`` is imported lazily."""

    def __init__(self, config: dict[str, Any], out_dir: str, names: dict[str, Any],
                 sweep_dir: str | None = None, project: str | None = None) -> None:
        self.config, self.out_dir, self.names = config, out_dir, names
        self.group = os.environ.get("WANDB_RUN_GROUP") or sweep_group(sweep_dir)
        self.project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.run: Any = None
        self.off = False  # set after a failure: every later call is a no-op
        self.rows: list[list[Any]] = []  # the accuracy matrix so far: step, samples, kind, acc...

    # ------------------------------------------------------------------ setup
    def _warn(self, message: str) -> None:
        warnings.warn(f"wandb logger: {message}", RuntimeWarning, stacklevel=3)

    def _settings(self, wandb: Any, offline: bool) -> Any:
        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT_S))
        options: dict[str, Any] = dict(init_timeout=timeout, finish_timeout=FINISH_TIMEOUT_S,
                                       console="off", silent=True, reinit="finish_previous")
        if offline:
            # offline runs probe no network at all (system metrics look for cloud metadata servers)
            options.update(mode="offline", x_disable_stats=True, x_disable_machine_info=True)
        return wandb.Settings(**options)

    def _init(self) -> None:
        """Start the wandb run at the first call (never twice, never raises)."""
        if self.run is not None or self.off:
            return
        try:
            import wandb
        except Exception as e:
            self.off = True
            self._warn(f"cannot import wandb ({type(e).__name__}: {e}); `pip install wandb`. "
                       "The run goes on without it.")
            return
        n = self.names
        tags = [t for t in (n["stream"], n["strategy"], n["model"]) if t]
        tags += [t for t in os.environ.get("WANDB_TAGS", "").split(",") if t]
        kwargs = dict(project=self.project, dir=self.out_dir, config=self.config, group=self.group,
                      job_type=n["strategy"], name=f"{n['stream']}-{n['strategy']}-{n['seed']}",
                      tags=list(dict.fromkeys(t[:64] for t in tags)))
        offline = os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun")
        disabled = os.environ.get("WANDB_MODE", "").lower() == "disabled"
        try:
            self.run = wandb.init(settings=self._settings(wandb, offline), **kwargs)
        except Exception as e:
            if offline or disabled:
                self.off = True
                self._warn(f"wandb.init failed ({type(e).__name__}: {e}); the run goes on "
                           "without wandb.")
                return
            try:
                self.run = wandb.init(settings=self._settings(wandb, True), **kwargs)
            except Exception as e2:
                self.off = True
                self._warn(f"wandb.init failed online ({type(e).__name__}: {e}) and offline "
                           f"({type(e2).__name__}: {e2}); the run goes on without wandb.")
                return
            self._warn(f"wandb could not start online ({type(e).__name__}: {e}); logging offline "
                       f"under {self.out_dir}/wandb instead: upload later with "
                       "`wandb sync <that folder>`.")
        try:
            self.run.define_metric("samples_seen")
            self.run.define_metric("train/*", step_metric="samples_seen")
            self.run.define_metric("eval/*", step_metric="samples_seen")
        except Exception as e:
            self._fail("define_metric", e)

    def _fail(self, where: str, error: Exception) -> None:
        self._warn(f"{where} failed ({type(error).__name__}: {error}); wandb logging stops for "
                   "this run, the run folder still has every record.")
        self.off = True
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:
                pass

    # ------------------------------------------------------------------ the logger interface
    def start(self, runner: Any) -> None:
        self._init()

    def log(self, record: dict[str, Any]) -> None:
        self._init()
        if self.run is None:
            return
        try:
            data: dict[str, Any] = {"samples_seen": int(record.get("samples_seen", 0)),
                                    **scalars(record)}
            if record.get("type") == "eval":
                data.update(self._matrix_media(record))
            self.run.log(data)
        except Exception as e:
            self._fail("wandb.log", e)

    def _matrix_media(self, record: dict[str, Any]) -> dict[str, Any]:
        """The accuracy matrix so far as a ``wandb.Table`` (every eval point: step,
        samples_seen, kind, task_0...) and a heatmap ``wandb.Image`` of its init and
        task-end rows plus the current eval point (a readable, bounded picture)."""
        import wandb

        from continual.report import accuracy_matrix_figure, figure_to_array

        n_tasks = sum(1 for k in record if k.startswith("acc_task_"))
        accs = [record.get(f"acc_task_{t}") for t in range(n_tasks)]
        self.rows.append([int(record.get("step", 0)), int(record.get("samples_seen", 0)),
                          str(record.get("kind", "")), *accs])
        columns = ["step", "samples_seen", "kind"] + [f"task_{t}" for t in range(n_tasks)]
        table = wandb.Table(columns=columns, data=[list(r) for r in self.rows])
        shown = [r for r in self.rows[:-1] if r[2] in ("init", "task_end")] + [self.rows[-1]]
        labels, ends = [], 0
        for r in shown:
            ends += r[2] == "task_end"
            labels.append("init" if r[2] == "init" else f"after task {ends}" if r[2] == "task_end"
                          else f"now ({r[1]})")
        matrix = [[float("nan") if v is None else float(v) for v in r[3:]] for r in shown]
        title = f"accuracy at {record.get('samples_seen')} samples"
        fig = accuracy_matrix_figure(matrix, labels, title=title)
        image = wandb.Image(figure_to_array(fig), caption="rows: eval points; columns: tasks")
        return {"eval/accuracy_matrix": table, "eval/accuracy_heatmap": image}

    def finish(self, summary: dict[str, Any]) -> None:
        self._init()
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            clean = json.loads(json.dumps({k: v for k, v in summary.items() if k != "config"},
                                          default=_jsonable))
            run.summary.update(clean)
            run.finish(exit_code=0)
        except Exception as e:
            self.run = run
            self._fail("finish", e)

    def abort(self, error: BaseException | None = None) -> None:
        """The run failed: mark the wandb run failed (exit code 1) and close it."""
        run, self.run = self.run, None
        self.off = True
        if run is not None:
            try:
                if error is not None:
                    run.summary.update({"error": f"{type(error).__name__}: {error}"[:1000]})
                run.finish(exit_code=1)
            except Exception:
                pass


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------------- reading offline runs
def _wandb_records(path: str):
    """Payloads of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log-style 32 KiB blocks of chunks (4-byte checksum, 2-byte length, 1-byte type:
    1 full, 2 first, 3 middle, 4 last). Checksums are not verified."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb data file (header {data[:7]!r})")
    block, pos, parts = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of a block
            pos += left
            continue
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield payload
        elif kind == 2:
            parts = payload
        elif kind == 3:
            parts += payload
        elif kind == 4:
            yield parts + payload


def read_offline_run(folder: str) -> dict[str, Any]:
    """Read back an offline wandb run folder (``<run>/wandb/offline-run-*``, or the run
    folder that holds it): ``history`` (list of logged rows, nested keys joined by ``/``),
    ``summary``, ``config``, ``group``, ``job_type``, ``name`` and ``tags``.

    Uses wandb's protobuf record types; for checks and tests, not a public wandb API.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(glob.glob(os.path.join(folder, "*.wandb"))) or sorted(
        glob.glob(os.path.join(folder, "wandb", "offline-run-*", "*.wandb")))
    if not files:
        raise FileNotFoundError(f"no .wandb file in {folder} or {folder}/wandb/offline-run-*")
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}}

    def key(item: Any) -> str:
        return "/".join(item.nested_key) if item.nested_key else item.key

    for payload in _wandb_records(files[-1]):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "run":
            r = rec.run
            out.update(group=r.run_group, job_type=r.job_type, name=r.display_name,
                       tags=list(r.tags))
            out["config"].update({key(i): json.loads(i.value_json) for i in r.config.update})
    return out
