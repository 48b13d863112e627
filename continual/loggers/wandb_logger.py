"""The wandb view of a run: config, per-step scalars, the accuracy matrix, the summary.

One run folder = one wandb run, however often the job is killed and resumed:

- ``config`` = the resolved Hydra config, plus ``choices`` (Hydra's config-group choices as
  chosen on the command line: ``choices.stream``, ``choices.strategy``, ``choices.model``,
  ``choices.experiment``, ...) and, for a sweep job, ``swept`` (the overrides the sweep varies,
  with this job's values).
- ``name`` = ``<stream>-<strategy>-<seed>`` followed by the swept overrides (unique in a sweep);
  ``group`` = the experiment (``+experiment=NAME``, else ``<stream>-<strategy>``; the
  ``group`` option or ``WANDB_RUN_GROUP`` overrides it); ``job_type`` = the strategy;
  ``tags`` = stream, strategy, model and experiment names (plus ``WANDB_TAGS``).
- History: the numbers of ``metrics.jsonl`` (``train/<key>`` for step records, ``eval/<key>``
  for eval points: ``eval/acc``, ``eval/acc_task_il``, ``eval/acc_task_<t>``,
  ``eval/forgetting``, ``eval/forgetting_task_<t>``, ``eval/bwt``, ...) logged at wandb step =
  the engine's global step (records of one step form one row), with ``samples_seen`` as their x
  axis (``wandb.define_metric``).
- The accuracy matrix (``scores.csv``: a ``wandb.Table``) and its heatmap are logged once, at
  the end of the run (or when it fails); ``summary.json`` (less its ``config``) becomes the run
  summary.
- ``log_checkpoints: true`` uploads each checkpoint the run writes as a ``checkpoint`` artifact
  (aliases ``step-<step>`` and ``latest``).

Resume: the run id is kept in ``<run folder>/wandb_run_id.txt``. A run that continues from a
checkpoint (after SIGKILL, a Slurm requeue, ...) reopens that wandb run (``resume="allow"``) and
continues its history: records the killed process had already logged (found in the run's local
``.wandb`` files) are not sent again (wandb drops steps at or before its last one anyway), and
records the killed process logged to ``metrics.jsonl`` but wandb never received are sent from
there. Offline, each process writes its own ``offline-run-*-<id>`` folder under one id;
``wandb sync`` uploads them in order into one run.

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
import secrets
import string
import struct
import warnings
from pathlib import Path
from typing import Any

from continual.errors import ConfigError
from continual.loggers import Logger, experiment_name, run_name, scalars, x_value
from continual.loggers.matrix import matrix_image, read_scores

DEFAULT_PROJECT = "continual"
INIT_TIMEOUT_S = 30.0  # wandb's default is 90 s; a sweep should not stall that long per job
FINISH_TIMEOUT_S = 60.0  # give up uploading after this; the data stays on disk for `wandb sync`
RUN_ID_FILE = "wandb_run_id.txt"  # in the run folder: the wandb run a resumed job continues


class WandbLogger(Logger):
    """Logs one run to wandb (see the module docstring); ``wandb`` is imported lazily.

    project, entity, group: where the run goes (None: ``WANDB_PROJECT`` or "continual",
    ``WANDB_ENTITY`` or your default entity, ``WANDB_RUN_GROUP`` or the experiment name).
    log_checkpoints: upload each checkpoint as an artifact.
    """

    def __init__(self, config: dict[str, Any], out_dir: str, names: dict[str, Any],
                 project: str | None = None, entity: str | None = None, group: str | None = None,
                 log_checkpoints: bool = False) -> None:
        for option, value in (("project", project), ("entity", entity), ("group", group)):
            check_wandb_name(option, value)
        self.config, self.out_dir, self.names = config, out_dir, names
        self.group = group or os.environ.get("WANDB_RUN_GROUP") or experiment_name(names)
        self.project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.entity = entity
        self.log_checkpoints = bool(log_checkpoints)
        self.run: Any = None
        self.off = False  # set after a failure: every later call is a no-op
        self.logged_before = -1  # steps up to this one were logged by an earlier process of this run
        self.last_step, self.last_samples = 0, 0
        self.x_axis = "samples_seen"  # what train/* and eval/* are plotted against (_define_x_axis)

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

    def _init_kwargs(self, run_id: str, resuming: bool) -> dict[str, Any]:
        n = self.names
        tags = [t for t in (n["stream"], n["strategy"], n["model"], n.get("experiment")) if t]
        tags += [t for t in os.environ.get("WANDB_TAGS", "").split(",") if t]
        config = {**self.config, "choices": n.get("choices", {})}
        if n.get("swept"):
            config["swept"] = n["swept"]
        kwargs = dict(project=self.project, dir=self.out_dir, config=config, group=self.group,
                      job_type=n["strategy"], name=run_name(n), id=run_id,
                      tags=list(dict.fromkeys(t[:64] for t in tags)))
        if self.entity:
            kwargs["entity"] = self.entity
        if resuming:
            kwargs["resume"] = "allow"
        return kwargs

    def _init(self, resuming: bool = False) -> None:
        """Start the wandb run at the first call (never twice, never raises); ``resuming``: the
        Runner continued from a checkpoint, so continue the wandb run of ``wandb_run_id.txt``."""
        if self.run is not None or self.off:
            return
        try:
            import wandb
        except Exception as e:
            self.off = True
            self._warn(f"cannot import wandb ({type(e).__name__}: {e}); `pip install wandb`. "
                       "The run goes on without it.")
            return
        id_file = Path(self.out_dir) / RUN_ID_FILE
        run_id = id_file.read_text().strip() if resuming and id_file.is_file() else ""
        resuming = bool(run_id)
        run_id = run_id or new_run_id()
        kwargs = self._init_kwargs(run_id, resuming)
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
                wandb.teardown()  # the failed start still holds the run id in wandb's service process
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
            from continual.records import write_atomic

            write_atomic(id_file, (run_id + "\n").encode())
            if resuming:
                self.logged_before = last_logged_step(self.out_dir, run_id)
                if getattr(self.run, "resumed", False):  # online: the server knows the run's last step
                    self.logged_before = max(self.logged_before, int(self.run.step) - 1)
            self._define_x_axis("samples_seen")
        except Exception as e:
            self._fail("setup", e)

    def _define_x_axis(self, key: str) -> None:
        """Plot every train/eval scalar against ``key`` (samples, or tokens for language models)."""
        self.x_axis = key
        self.run.define_metric(key)
        for pattern in ("train/*", "eval/*", "eval_main/*"):
            self.run.define_metric(pattern, step_metric=key)

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
        """After the untrained model's eval point of a fresh run, or first of all after a
        resume: then continue the wandb run, sending what ``metrics.jsonl`` holds beyond it."""
        resumed = bool(getattr(runner, "resume_info", {}).get("resumed_from"))
        if self.run is not None or self.off or not resumed:
            self._init()
            return
        self._init(resuming=True)
        path = Path(self.out_dir) / "metrics.jsonl"  # the Runner cut it back to the checkpoint
        if self.run is not None and path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    self.log(json.loads(line))

    def log(self, record: dict[str, Any]) -> None:
        self._init()
        if self.run is None:
            return
        step = int(record.get("step", 0))
        if step <= self.logged_before:
            return  # an earlier process of this run logged it; wandb would drop it anyway
        self.last_step, self.last_samples = step, int(record.get("samples_seen", 0))
        try:
            key, x = x_value(record)
            if key != self.x_axis:
                self._define_x_axis(key)
            self.run.log({"samples_seen": self.last_samples, key: x, **scalars(record)}, step=step)
        except Exception as e:
            self._fail("wandb.log", e)

    def checkpoint(self, path: str | os.PathLike, step: int) -> None:
        """Upload the checkpoint just written, when ``log_checkpoints`` asks for it."""
        if not self.log_checkpoints:
            return
        self._init()
        if self.run is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(f"checkpoint-{self.run.id}", type="checkpoint",
                                      metadata={"step": int(step), "file": os.path.basename(path)})
            artifact.add_file(str(path))  # copied to wandb's staging area: checkpoint rotation cannot race it
            self.run.log_artifact(artifact, aliases=[f"step-{int(step)}", "latest"])
        except Exception as e:
            self._fail("log_artifact", e)

    def _log_matrix(self) -> None:
        """The accuracy matrix (scores.csv) as a table and a heatmap, once, at the last step."""
        import wandb
        from PIL import Image

        header, rows = read_scores(self.out_dir)
        if not rows:
            return
        # a file of our own (wandb copies it into the run): an array would go through a
        # process-wide temporary folder of wandb's
        png = Path(self.out_dir) / "wandb" / "accuracy_heatmap.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(matrix_image(header, rows)).save(png)
        data: dict[str, Any] = {
            "samples_seen": self.last_samples,
            "eval/accuracy_matrix": wandb.Table(columns=header, data=rows),
            "eval/accuracy_heatmap": wandb.Image(str(png), caption="rows: eval points; columns: tasks"),
        }
        self.run.log(data, step=max(self.last_step, self.logged_before + 1))

    def finish(self, summary: dict[str, Any]) -> None:
        self._init()
        if self.run is None:
            return
        try:
            self._log_matrix()
            clean = json.loads(json.dumps({k: v for k, v in summary.items() if k != "config"},
                                          default=_jsonable))
            self.run.summary.update(clean)
            run, self.run = self.run, None
            run.finish(exit_code=0)
        except Exception as e:
            self._fail("finish", e)

    def abort(self, error: BaseException | None = None) -> None:
        """The run failed: log the matrix so far, mark the wandb run failed (exit code 1), close it."""
        run = self.run
        self.off = True
        if run is None:
            return
        try:
            self._log_matrix()
        except Exception:
            pass
        self.run = None
        try:
            if error is not None:
                run.summary.update({"error": f"{type(error).__name__}: {error}"[:1000]})
            run.finish(exit_code=1)
        except Exception:
            pass


#: characters wandb refuses in a project, entity or group name
WANDB_FORBIDDEN = set("/\\#?%:")


def check_wandb_name(option: str, value: str | None) -> None:
    """Refuse a name wandb would refuse (or silently replace) before any work: empty, over 128
    characters, or with one of ``/ \\ # ? % :`` (null: wandb's default)."""
    if value is None:
        return
    bad = sorted(set(value) & WANDB_FORBIDDEN)
    if not value.strip() or len(value) > 128 or bad:
        why = "is empty" if not value.strip() else "is over 128 characters" if len(value) > 128 \
            else f"contains {' '.join(repr(c) for c in bad)}"
        raise ConfigError(f"loggers.wandb.{option}={value!r} {why}, which wandb does not accept; use letters, "
                          "digits, '-', '_' and '.', or null for the default")


def new_run_id() -> str:
    """A fresh wandb run id: 8 lowercase letters and digits, as wandb makes them."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------------- reading local run files
def _wandb_records(path: str):
    """Payloads of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log-style 32 KiB blocks of chunks (4-byte checksum, 2-byte length, 1-byte type:
    1 full, 2 first, 3 middle, 4 last). Checksums are not verified; a chunk cut short (a
    killed process) ends the file."""
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
        if pos + 7 + length > len(data):
            return
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


def run_files(folder: str | os.PathLike, run_id: str = "*") -> list[str]:
    """The ``.wandb`` files of a run folder (``<folder>/wandb/[offline-]run-<time>-<id>/``), or of
    one such wandb folder, oldest first: one per process that logged to the run."""
    folder = str(folder)
    files = glob.glob(os.path.join(folder, "*.wandb")) or glob.glob(
        os.path.join(folder, "wandb", f"*run-*-{run_id}", "*.wandb"))
    return sorted(files, key=lambda f: (os.path.basename(os.path.dirname(f)).split("-")[-2], f))


def last_logged_step(out_dir: str | os.PathLike, run_id: str) -> int:
    """The highest history step in the local files of wandb run ``run_id`` (-1 when none)."""
    steps = [row.get("_step", -1) for row in read_offline_run(out_dir, run_id)["history"]] \
        if run_files(out_dir, run_id) else []
    return int(max(steps, default=-1))


def read_offline_run(folder: str | os.PathLike, run_id: str = "*") -> dict[str, Any]:
    """Read back the wandb run of a run folder (``<run>/wandb/offline-run-*``, or the wandb
    folder itself), every process that logged to it in order: ``history`` (logged rows, nested
    keys joined by ``/``, ``_step`` the wandb step), ``summary``, ``config``, ``group``,
    ``job_type``, ``name``, ``tags``, ``ids`` (the run id each process logged to) and
    ``artifacts`` (name, type, aliases and metadata of each logged artifact).

    Uses wandb's protobuf record types; for checks and tests, not a public wandb API.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    files = run_files(folder, run_id)
    if not files:
        raise FileNotFoundError(f"no .wandb file in {folder} or {folder}/wandb/*run-*")
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "ids": [], "artifacts": []}

    def key(item: Any) -> str:
        return "/".join(item.nested_key) if item.nested_key else item.key

    for path in files:
        for payload in _wandb_records(path):
            rec = pb.Record()
            try:
                rec.ParseFromString(payload)
            except DecodeError:
                continue
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                out["history"].append({key(i): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary":
                out["summary"].update({key(i): json.loads(i.value_json) for i in rec.summary.update})
            elif kind == "artifact":
                a = rec.artifact
                out["artifacts"].append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                         "metadata": json.loads(a.metadata or "{}")})
            elif kind == "run":
                r = rec.run
                out.update(group=r.run_group, job_type=r.job_type, name=r.display_name,
                           tags=list(r.tags))
                out["ids"].append(r.run_id)
                out["config"].update({key(i): json.loads(i.value_json) for i in r.config.update})
    return out
