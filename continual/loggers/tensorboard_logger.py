"""The TensorBoard view of a run: the scalars of metrics.jsonl against samples seen.

Event files go to ``<run folder>/tensorboard``; view a sweep with
``tensorboard --logdir <multirun folder>``. Tags are those of the wandb logger
(``train/loss``, ``train/online_acc``, ``eval/acc``, ``eval/acc_task_0``, ...), the
global step is ``samples_seen``, and the final summary's numbers go under ``summary/``.
"""

from __future__ import annotations

import math
import os
from typing import Any

from continual.loggers import scalars


class TensorBoardLogger:
    """Writes scalars with ``torch.utils.tensorboard.SummaryWriter`` (imported lazily)."""

    def __init__(self, config: dict[str, Any], out_dir: str, names: dict[str, Any],
                 sweep_dir: str | None = None) -> None:
        self.log_dir = os.path.join(out_dir, "tensorboard")
        self.config, self.names = config, names
        self.writer: Any = None
        self.last_samples = 0

    def _open(self) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.log_dir)
            n = self.names
            text = f"{n['stream']} / {n['strategy']} / {n['model']} / seed {n['seed']}"
            self.writer.add_text("run", text)
        return self.writer

    def start(self, runner: Any) -> None:
        self._open()

    def log(self, record: dict[str, Any]) -> None:
        writer = self._open()
        self.last_samples = int(record.get("samples_seen", 0))
        for tag, value in scalars(record).items():
            writer.add_scalar(tag, value, global_step=self.last_samples)

    def finish(self, summary: dict[str, Any]) -> None:
        writer = self._open()
        for key, value in summary.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and math.isfinite(value):
                writer.add_scalar(f"summary/{key}", float(value), global_step=self.last_samples)
        writer.close()
        self.writer = None

    def abort(self, error: BaseException | None = None) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
