"""The TensorBoard view of a run: scalars against samples seen, hparams, config, accuracy matrix.

Event files go to ``<run folder>/tensorboard``; view a sweep with
``tensorboard --logdir <multirun folder>``. What it writes:

- Scalars: the tags of the wandb logger (``train/loss``, ``train/online_acc``, ``eval/acc``,
  ``eval/acc_task_0``, ``eval/forgetting_task_0``, ``eval/bwt``, ...) at global step =
  ``samples_seen``, and the final summary's numbers under ``summary/``.
- HParams dashboard: the run is one session whose hparams are the settings a sweep compares
  (``choices.strategy``, ``strategy.lr``, ``seed``, the swept overrides; see
  ``continual.loggers.hparams``) and whose metrics are its scalars (``summary/acc``, ...). No
  experiment summary is written, so TensorBoard builds the table from every run's session: runs
  with different settings keep all their columns.
- Text: ``run`` (stream / strategy / model / seed) and ``config`` (the resolved config as YAML).
- Image: ``eval/accuracy_matrix`` (the heatmap of scores.csv), once, at the end of the run.

A resumed run (from a checkpoint) writes a new event file into the same folder with
``purge_step`` set just past the checkpoint, so TensorBoard hides what the killed process
logged after it and the curves continue without doubled points.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from continual.loggers import Logger, hparams, scalars, x_value
from continual.loggers.matrix import matrix_image, read_scores


class TensorBoardLogger(Logger):
    """Writes with ``torch.utils.tensorboard.SummaryWriter`` (imported lazily)."""

    def __init__(self, config: dict[str, Any], out_dir: str, names: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.log_dir = os.path.join(out_dir, "tensorboard")
        self.config, self.names = config, names
        self.writer: Any = None
        self.last_samples = 0

    def _open(self, purge_step: int | None = None) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.log_dir, purge_step=purge_step)
            n = self.names
            text = f"{n['stream']} / {n['strategy']} / {n['model']} / seed {n['seed']}"
            self.writer.add_text("run", text)
            self.writer.add_text("config", _yaml_block(self.config))
            self._write_session_start()
        return self.writer

    def _write_session_start(self) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        _, session_start, _ = hparams_summaries(hparams(self.config, self.names), {})
        self.writer.file_writer.add_summary(session_start)

    def _write_session_end(self, success: bool) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams.api_pb2 import Status
        from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_END_INFO_TAG
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

        status = Status.Value("STATUS_SUCCESS" if success else "STATUS_FAILURE")
        content = HParamsPluginData(session_end_info=SessionEndInfo(status=status), version=PLUGIN_DATA_VERSION)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content.SerializeToString()))
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=meta)]))

    def start(self, runner: Any) -> None:
        """A resumed run purges what the killed process wrote after the checkpoint."""
        resumed = bool(getattr(runner, "resume_info", {}).get("resumed_from"))
        at = runner.state.tokens if runner.counts_tokens else runner.state.samples  # the x-axis (x_value)
        self._open(purge_step=int(at) + 1 if resumed else None)

    def log(self, record: dict[str, Any]) -> None:
        writer = self._open()
        self.last_samples = x_value(record)[1]  # samples seen, or tokens for language models
        for tag, value in scalars(record).items():
            writer.add_scalar(tag, value, global_step=self.last_samples)

    def _write_matrix(self) -> None:
        image = matrix_image(*read_scores(self.out_dir))
        if image is not None:
            self.writer.add_image("eval/accuracy_matrix", image, global_step=self.last_samples,
                                  dataformats="HWC")

    def finish(self, summary: dict[str, Any]) -> None:
        writer = self._open()
        for key, value in summary.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and math.isfinite(value):
                writer.add_scalar(f"summary/{key}", float(value), global_step=self.last_samples)
        self._write_matrix()
        self._write_session_end(success=True)
        writer.close()
        self.writer = None

    def abort(self, error: BaseException | None = None) -> None:
        if self.writer is not None:
            try:
                self._write_matrix()
                self._write_session_end(success=False)
            finally:
                self.writer.close()
                self.writer = None


def _yaml_block(config: dict[str, Any]) -> str:
    """The config as YAML in a Markdown code block (TensorBoard renders text as Markdown)."""
    import yaml

    try:
        text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    except yaml.YAMLError:  # a value YAML cannot represent: JSON shows it as text
        text = json.dumps(config, indent=2, default=str)
    return "\n".join("    " + line for line in text.splitlines())
