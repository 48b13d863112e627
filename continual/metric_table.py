"""Every metric of a run, declared once: its name, what it means (one line), which way is
better, whether ``report --percent`` may show it as a percentage, how summary.json computes it
and where it is shown.

``METRICS`` is read when it is needed, never copied at import: ``Evaluator.summary`` (which
entries summary.json gets, computed how, in which order), the report (its default and extra
columns: ``continual.report.runs``; best cells and percentages: ``continual.report.format``),
the console's final table (``ConsoleLogger.finish``) and the table of docs/metrics.md
(``python3 -m continual.metric_table --markdown`` prints it). So a metric added here (or
monkeypatched in, as tests/test_metric_table.py does) shows up in all of them.

Torch-free: it reads the eval rows' attributes but imports nothing of the training code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from continual import metrics as M

#: which way is better: ``score`` follows the stream's score (higher for accuracy and exact
#: match, lower for a loss); ``none``: never ranked (it describes the run, e.g. its speed)
DIRECTIONS = ("higher", "lower", "score", "none")
#: whether a value is a fraction of 1 (``--percent`` shows it as %): ``score``: when the
#: stream is scored by accuracy (metrics of the score matrix, in the score's units)
FRACTIONS = ("yes", "no", "score")
#: who computes a metric: ``Evaluator.summary`` on every run (``summary``), on classification
#: runs only (``classification``), on classification runs with a validation split
#: (``validation``); the stream's own ``summary_metrics`` (``stream``); the runner or strategy
#: (``runner``). The first three have a ``compute``; the others only declare the metric.
SOURCES = ("summary", "classification", "validation", "stream", "runner")
COMPUTED = ("summary", "classification", "validation")


@dataclass(frozen=True)
class SummaryInputs:
    """What ``Evaluator.summary`` hands each metric's ``compute``.

    T: (eval rows, tasks) per-task scores in their own units; S: the same, negated when lower
    is better (so forgetting > 0 and BWT < 0 mean "worse" for every score); ends: the task-end
    rows (``Evaluator.metric_rows``); samples: samples seen at each row; window:
    stability_gap's, in samples; online_acc: test-then-train accuracy (None: not counted);
    rows: the eval rows (``EvalRow``); classification: scored by accuracy here (else the
    stream scores its own eval sets); V: the validation split's accuracy matrix (None without one).
    """

    T: np.ndarray
    S: np.ndarray
    ends: list[int]
    samples: list[int]
    window: int
    online_acc: float | None
    rows: Sequence[Any]
    classification: bool
    V: np.ndarray | None = None

    @property
    def several(self) -> bool:
        """At least two tasks ended: forgetting and transfer are defined."""
        return len(self.ends) > 1

    @property
    def periodic(self) -> bool:
        """Some eval point is periodic (``eval.every``): stability_gap can be measured."""
        return any(r.kind == "periodic" for r in self.rows)


@dataclass(frozen=True)
class Metric:
    """One metric. ``compute`` (for the sources in ``COMPUTED``) maps ``SummaryInputs`` to
    the value, None when unmeasured. ``report``: a default column of the report's table;
    ``extra``: a column when some run reports it; ``console``: a row of the console's final
    table. ``accuracy_only``: meaningful on streams scored by accuracy only (the report leaves
    it out for the others). ``hidden_by``: not shown where that metric has a value (``score``
    is ``acc`` on classification runs)."""

    name: str
    description: str
    direction: str
    fraction: str
    compute: Callable[[SummaryInputs], Any] | None = None
    source: str = "summary"
    report: bool = False
    extra: bool = False
    console: bool = False
    accuracy_only: bool = False
    hidden_by: str | None = None

    def lower_is_better(self, score_name: str = "accuracy") -> bool:
        if self.direction == "score":
            return score_name == "loss"
        return self.direction == "lower"

    def is_fraction(self, score_name: str = "accuracy") -> bool:
        if self.fraction == "score":
            return score_name == "accuracy"
        return self.fraction == "yes"

    @property
    def ranked(self) -> bool:
        return self.direction != "none"


def _val(fn: Callable[[np.ndarray, list[int]], float], several: bool = False) -> Callable[[SummaryInputs], Any]:
    def compute(x: SummaryInputs) -> Any:
        if x.V is None or (several and not x.several):
            return None
        return fn(x.V, x.ends)
    return compute


def _protocol(attr: str) -> Callable[[SummaryInputs], float]:
    return lambda x: M.final_accuracy(np.array([getattr(r, attr) for r in x.rows]))


METRICS: tuple[Metric, ...] = (
    # headline scores (metrics of the score matrix are in the stream's score units)
    Metric("score", "Mean score over all tasks at the last eval point, in the stream's units (score_name).",
           "score", "score", lambda x: M.final_accuracy(x.T), extra=True, console=True, hidden_by="acc"),
    Metric("acc", "ACC: mean accuracy over all tasks at the last eval point (Lopez-Paz & Ranzato 2017); "
           "null on streams not scored by accuracy.", "higher", "score",
           lambda x: M.final_accuracy(x.T) if x.classification else None,
           report=True, console=True, accuracy_only=True),
    # the knowledge stream's (CKL, Jang et al. 2022): exact match in percent
    Metric("IL", "Exact match (0-100) on the invariant knowledge probes at the end (CKL).",
           "higher", "no", source="stream", extra=True, console=True),
    Metric("UL", "Exact match (0-100) on the updated knowledge probes at the end, mean over phases (CKL).",
           "higher", "no", source="stream", extra=True, console=True),
    Metric("NL", "Exact match (0-100) on the new knowledge probes at the end, mean over phases (CKL).",
           "higher", "no", source="stream", extra=True, console=True),
    Metric("FUAR", "Forgotten / (updated + acquired) knowledge over M_0..M_n (CKL eq. 1); null when undefined.",
           "lower", "no", source="stream", extra=True, console=True),
    # the corpora stream's (continual pre-training): held-out losses in nats
    Metric("final_avg_loss", "Mean held-out loss over the corpora at the end (nats).",
           "lower", "no", source="stream", extra=True, console=True),
    Metric("final_avg_bpb", "Mean held-out bits per byte over the corpora at the end (comparable across "
           "tokenizers).", "lower", "no", source="stream", extra=True, console=True),
    Metric("final_bpb", "Held-out bits per byte of each corpus at the end (per corpus; bpb/<corpus> in every "
           "eval record).", "lower", "no", source="stream"),
    Metric("final_ppl", "Held-out perplexity of each corpus at the end (per corpus; ppl/<corpus> in every "
           "eval record).", "lower", "no", source="stream"),
    Metric("final_loss", "Held-out loss of each corpus at the end (nats; per corpus).",
           "lower", "no", source="stream"),
    Metric("adaptation_loss", "Held-out loss of each corpus right after its own task (nats; per corpus).",
           "lower", "no", source="stream"),
    Metric("forgetting_by_corpus", "forgetting_per_task keyed by corpus (nats; the same numbers, one "
           "definition).", "lower", "no", source="stream"),
    Metric("acc_class_il", "Final mean accuracy with argmax over all classes (class-incremental protocol).",
           "higher", "yes", _protocol("scores_class_il"), source="classification", accuracy_only=True),
    Metric("acc_task_il", "Final mean accuracy with argmax over the true task's classes (task-incremental "
           "protocol).", "higher", "yes", _protocol("scores_task_il"), source="classification",
           report=True, console=True, accuracy_only=True),
    # forgetting and transfer, on the signed matrix (higher is better there for every score)
    Metric("forgetting", "Mean over tasks but the last of the best earlier task-end score minus the final "
           "one (Chaudhry et al. 2018); > 0 is worse.", "lower", "score",
           lambda x: M.forgetting(x.S, x.ends) if x.several else None, report=True, console=True),
    Metric("forgetting_per_task", "forgetting of each task but the last (a list).", "lower", "score",
           lambda x: M.forgetting_per_task(x.S, x.ends).tolist()),
    Metric("bwt", "BWT: mean change on each earlier task from right after training it to the end "
           "(Lopez-Paz & Ranzato 2017); < 0 is worse.", "higher", "score",
           lambda x: M.backward_transfer(x.S, x.ends) if x.several else None, report=True, console=True),
    Metric("fwt", "FWT: mean score on each task just before training it minus the untrained model's "
           "(Lopez-Paz & Ranzato 2017).", "higher", "score",
           lambda x: M.forward_transfer(x.S, x.ends, init_row=0) if x.several else None,
           report=True, console=True),
    Metric("plasticity", "Mean score on each task right after training it.", "score", "score",
           lambda x: M.plasticity(x.T, x.ends), console=True),
    Metric("online_acc", "Test-then-train accuracy: incoming samples classified correctly before training "
           "on them (null when not counted).", "higher", "yes", lambda x: x.online_acc,
           report=True, console=True, accuracy_only=True),
    Metric("aia", "AIA: mean over tasks k of the mean score on tasks 0..k after task k (Rebuffi et al. 2017).",
           "score", "score", lambda x: M.average_incremental_accuracy(x.T, x.ends), report=True, console=True),
    Metric("stability_gap", "Mean largest drop on earlier tasks just after a boundary (De Lange et al. 2023); "
           "null without periodic eval points (eval.every).", "lower", "score",
           lambda x: M.stability_gap(x.S, x.ends, x.samples, x.window) if x.several and x.periodic else None,
           report=True, console=True),
    # the held-out validation split of the training data (stream.val_fraction)
    Metric("val_acc", "Final mean accuracy on the tasks' validation splits.", "higher", "yes",
           _val(lambda V, ends: M.final_accuracy(V)), source="validation", extra=True, accuracy_only=True),
    Metric("val_aia", "AIA on the validation splits.", "higher", "yes",
           _val(M.average_incremental_accuracy), source="validation", accuracy_only=True),
    Metric("val_forgetting", "forgetting on the validation splits.", "lower", "yes",
           _val(M.forgetting, several=True), source="validation", extra=True, accuracy_only=True),
    Metric("val_bwt", "BWT on the validation splits.", "higher", "yes",
           _val(M.backward_transfer, several=True), source="validation", accuracy_only=True),
    # task-free learners that report the task switches they detected
    Metric("boundary_precision", "Share of detected task switches that match a true boundary.",
           "higher", "yes", source="runner"),
    Metric("boundary_recall", "Share of true boundaries found by a detected switch.", "higher", "yes", source="runner"),
    Metric("detection_delay", "Mean samples from a true boundary to the detection that found it.",
           "lower", "no", source="runner"),
    Metric("switches_detected", "Number of task switches the strategy detected.", "none", "no", source="runner"),
    # facts of the run
    Metric("steps", "Training steps taken.", "none", "no", source="runner"),
    Metric("samples_seen", "Training samples seen.", "none", "no", source="runner"),
    Metric("train_seconds", "Seconds spent training (steps and hooks, without evaluation).",
           "none", "no", source="runner", console=True),
    Metric("eval_seconds", "Seconds spent evaluating.", "none", "no", source="runner"),
    Metric("tokens_seen", "Training tokens seen, padding left out (language streams; their x-axis).",
           "none", "no", source="runner"),
    Metric("tokens_per_second", "Training throughput in tokens: tokens_seen / train_seconds (language streams).",
           "none", "no", source="runner", console=True),
    Metric("samples_per_second", "Training throughput: samples_seen / train_seconds.", "none", "no",
           source="runner", report=True, console=True),
    Metric("peak_rss_mb", "Peak resident memory in MiB (peak_rss_scope says of what).", "none", "no",
           source="runner", console=True),
    Metric("params", "Parameters of the strategy's model(s).", "none", "no", source="runner", console=True),
    Metric("trainable_params", "Trainable parameters of the strategy's model(s).", "none", "no", source="runner"),
)


# ---------------------------------------------------------------------- reading the table
def metrics() -> tuple[Metric, ...]:
    """The table as it is now (``METRICS``, read at call time)."""
    return METRICS


def get(name: str) -> Metric | None:
    """The metric called ``name``; None when the table has no such metric."""
    return next((m for m in METRICS if m.name == name), None)


def names(**flags: Any) -> tuple[str, ...]:
    """The names of the metrics whose fields equal ``flags`` (``report=True``,
    ``source="stream"`` ...), in the table's order."""
    return tuple(m.name for m in METRICS if all(getattr(m, k) == v for k, v in flags.items()))


def report_metrics() -> tuple[str, ...]:
    """The report table's default columns, in order."""
    return names(report=True)


def extra_metrics() -> tuple[str, ...]:
    """The report's columns added when some run reports them, in order."""
    return names(extra=True)


def console_metrics() -> tuple[str, ...]:
    """The rows of the console's final table, in order."""
    return names(console=True)


def lower_is_better(name: str, score_name: str = "accuracy") -> bool:
    """Whether a smaller ``name`` is better (``score_name``: the stream's score); False for a
    name the table does not know."""
    m = get(name)
    return m is not None and m.lower_is_better(score_name)


def is_fraction(name: str, score_name: str = "accuracy") -> bool:
    """Whether ``name`` is a fraction of 1 on a stream scored by ``score_name``, so that
    ``--percent`` may show it as a percentage; False for a name the table does not know."""
    m = get(name)
    return m is not None and m.is_fraction(score_name)


def is_ranked(name: str) -> bool:
    """Whether the report may mark a best ``name`` (every metric but those describing the run)."""
    m = get(name)
    return m is None or m.ranked


def summary_values(x: SummaryInputs, source: str) -> dict[str, Any]:
    """``{name: value}`` of every metric from ``source`` (``summary``, ``classification`` or
    ``validation``) computed on ``x``, in the table's order."""
    if source not in COMPUTED:
        raise ValueError(f"source must be one of {COMPUTED}, got {source!r}")
    return {m.name: m.compute(x) for m in METRICS if m.source == source and m.compute is not None}


# ---------------------------------------------------------------------- the docs' table
MARKDOWN_START = "<!-- metric-table:start (python3 -m continual.metric_table --markdown) -->"
MARKDOWN_END = "<!-- metric-table:end -->"
_FROM = {"summary": "evaluator", "classification": "evaluator (classification)",
         "validation": "evaluator (validation split)", "stream": "stream", "runner": "runner"}


def markdown_table() -> str:
    """Every metric as a markdown table (name, direction, fraction, who computes it, where it
    shows, description): what docs/metrics.md holds between its marker comments."""
    lines = ["| metric | better | fraction | from | shown | description |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m in METRICS:
        shown = ", ".join(w for w, on in (("report", m.report), ("report (extra)", m.extra),
                                          ("console", m.console)) if on)
        lines.append(f"| `{m.name}` | {m.direction} | {m.fraction} | {_FROM[m.source]} | {shown} | "
                     f"{m.description.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["--markdown"]:
        print("usage: python3 -m continual.metric_table --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
