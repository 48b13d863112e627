"""Console view of a run: a rich progress bar while training and a final table."""

from __future__ import annotations

import time
from typing import Any

from continual import metric_table
from continual.types import Logger


class ConsoleLogger(Logger):
    """Progress (task, samples/s, running online accuracy or train loss, the latest eval score,
    ETA) and a summary table."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console()
        self.progress_bar = None
        self.task_id = None
        self.runner = None
        self.t0 = time.perf_counter()
        self.last_acc = float("nan")
        self.last_loss = float("nan")
        self.counts_online = True

    def start(self, runner: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.runner = runner
        self.counts_online = runner.counts_online
        score = runner.evaluator.score_name
        eval_label = "eval acc" if score == "accuracy" else f"eval {score}"
        self.progress_bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[speed]:>8.0f} samples/s"),
            TextColumn(("online acc" if self.counts_online else "train loss") + " {task.fields[online]:.3f}"),
            TextColumn(eval_label + " {task.fields[acc]:.3f}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.progress_bar.start()
        self.task_id = self.progress_bar.add_task(
            "task", total=runner.stream.n_steps(), completed=runner.state.step,
            speed=0.0, online=0.0, acc=self.last_acc,
        )
        self.t0 = time.perf_counter()
        self.samples0 = runner.state.samples

    def progress(self, state: Any) -> None:
        if self.progress_bar is None:
            return
        segments = self.runner.stream.segments
        seg = segments[min(state.segment, len(segments) - 1)]
        speed = (state.samples - self.samples0) / max(time.perf_counter() - self.t0, 1e-9)
        if self.counts_online:
            online = state.online_correct / state.online_seen if state.online_seen else 0.0
        else:
            online = self.last_loss
        self.progress_bar.update(
            self.task_id, completed=state.step, speed=speed, online=online, acc=self.last_acc,
            description=f"task {seg.task + 1}/{self.runner.stream.n_tasks}",
        )

    def log(self, record: dict[str, Any]) -> None:
        if record.get("type") == "eval":
            self.last_acc = record["acc"] if "acc" in record else record.get("score", float("nan"))
        elif "loss" in record:
            self.last_loss = record["loss"]

    def finish(self, summary: dict[str, Any]) -> None:
        from rich.table import Table

        if self.progress_bar is not None:
            self.progress(self.runner.state)
            self.progress_bar.stop()
        title = f"{summary.get('stream')} / {summary.get('strategy', '')} / seed {summary.get('seed')}"
        table = Table(title=title)
        table.add_column("metric")
        table.add_column("value", justify="right")
        # the metric table's console rows (continual/metric_table.py), those the run reports;
        # a metric hidden_by another with a value is left out (score is acc on classification runs)
        for m in metric_table.metrics():
            key, value = m.name, summary.get(m.name)
            if m.console and value is not None and (m.hidden_by is None or summary.get(m.hidden_by) is None):
                table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        self.console.print(table)
        self.console.print(f"run folder: {self.runner.out_dir}")
