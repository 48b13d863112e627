"""Continual-learning metrics as functions of the score matrix and the online record.

``R`` is (n_eval_points, n_tasks): R[i, j] is the score on task j's test set at
eval point i. ``task_end_rows[k]`` is the row taken right after the k-th task of
the sequence was trained (so for a plain sequence R[task_end_rows[j], j] is the
usual R_{j,j}); ``init_row`` is the row of the untrained model. Formulas, with
citations, are in docs/metrics.md. Also here: how well a task-free learner found the
boundaries (``boundary_scores``) and handled recurring tasks (``recurrence_scores``), and
CKL's FUAR (``fuar``, ``fuar_multiphase``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from continual.types import ConfigError

Pair = tuple[float, float]


def _rows(R: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    return R[list(rows)]


def average_accuracy(R: np.ndarray, row: int = -1, seen: int | None = None) -> float:
    """Mean score over the first ``seen`` tasks (all tasks if None) at eval point ``row``."""
    r = np.asarray(R, dtype=float)[row]
    return float(np.mean(r if seen is None else r[:seen]))


def final_accuracy(R: np.ndarray) -> float:
    """ACC: mean score over all tasks at the last eval point (Lopez-Paz & Ranzato 2017)."""
    return average_accuracy(R, -1)


def average_incremental_accuracy(R: np.ndarray, task_end_rows: Sequence[int]) -> float:
    """AIA (Rebuffi et al. 2017): mean over k of the mean score on tasks 0..k after task k."""
    E = _rows(R, task_end_rows)
    return float(np.mean([E[k, : k + 1].mean() for k in range(len(E))]))


def forgetting_per_task(R: np.ndarray, task_end_rows: Sequence[int]) -> np.ndarray:
    """f_j = max_{l < T-1} R[l, j] - R[T-1, j] over task-end rows l >= j, for j < T-1
    (Chaudhry et al. 2018, "Riemannian Walk"). Returns (T-1,) values."""
    E = _rows(R, task_end_rows)
    T = len(E)
    return np.array([E[j : T - 1, j].max() - E[T - 1, j] for j in range(T - 1)])


def forgetting(R: np.ndarray, task_end_rows: Sequence[int]) -> float:
    """Average forgetting over all tasks but the last; 0.0 for a single task."""
    f = forgetting_per_task(R, task_end_rows)
    return float(f.mean()) if f.size else 0.0


def backward_transfer(R: np.ndarray, task_end_rows: Sequence[int]) -> float:
    """BWT = mean_{j < T-1} R[T-1, j] - R[j, j] (Lopez-Paz & Ranzato 2017, GEM)."""
    E = _rows(R, task_end_rows)
    T = len(E)
    if T < 2:
        return 0.0
    return float(np.mean([E[T - 1, j] - E[j, j] for j in range(T - 1)]))


def forward_transfer(R: np.ndarray, task_end_rows: Sequence[int], init_row: int) -> float:
    """FWT = mean_{j >= 1} R[j-1, j] - b_j, b_j the randomly initialised model's score
    on task j (Lopez-Paz & Ranzato 2017, GEM)."""
    E = _rows(R, task_end_rows)
    b = np.asarray(R, dtype=float)[init_row]
    T = len(E)
    if T < 2:
        return 0.0
    return float(np.mean([E[j - 1, j] - b[j] for j in range(1, T)]))


def plasticity(R: np.ndarray, task_end_rows: Sequence[int]) -> float:
    """Mean score on the task just trained, right after training it: mean_j R[j, j]."""
    E = _rows(R, task_end_rows)
    return float(np.mean([E[j, j] for j in range(len(E))]))


def online_accuracy(n_correct: float, n_seen: float) -> float:
    """Share of incoming samples classified correctly before the learner trained on them."""
    return float(n_correct / n_seen) if n_seen else 0.0


def stability_gap(
    R: np.ndarray, task_end_rows: Sequence[int], samples: Sequence[int], window: int
) -> float:
    """Largest drop on earlier tasks just after a boundary (De Lange et al. 2023,
    "Continual evaluation for lifelong learning: identifying the stability gap").

    For each boundary k >= 1 (the end of task k-1, row b = task_end_rows[k-1]) and each
    task j <= k-1, the gap is R[b, j] minus the minimum of R[i, j] over eval rows i after
    b whose sample count is within ``window`` samples of b's. The metric is the mean over
    boundaries of the mean over earlier tasks of max(gap, 0). It needs periodic eval
    points (``eval.every``) within ``window`` samples after a boundary: with task-end rows only
    no row falls in the window and there is nothing to measure (the Runner records null then;
    this function returns 0.0).
    """
    R = np.asarray(R, dtype=float)
    samples = np.asarray(samples)
    gaps = []
    for k in range(1, len(task_end_rows)):
        b = task_end_rows[k - 1]
        after = [i for i in range(b + 1, len(R)) if samples[i] - samples[b] <= window]
        if not after:
            continue
        drops = [max(R[b, j] - R[after, j].min(), 0.0) for j in range(k)]
        gaps.append(np.mean(drops))
    return float(np.mean(gaps)) if gaps else 0.0


def boundary_scores(
    detected: Sequence[int], true_boundaries: Sequence[int], tolerance: int
) -> dict[str, float]:
    """Precision, recall and mean delay (in samples) of detected task switches.

    A true boundary b is found by the first detection d with b <= d <= b + tolerance;
    each detection matches at most one boundary. Precision = matched detections /
    detections, recall = matched boundaries / boundaries (1.0 when there is nothing to
    detect or nothing was detected, respectively, as is conventional).
    """
    detected = sorted(int(d) for d in detected)
    used: set[int] = set()
    delays = []
    for b in true_boundaries:
        for i, d in enumerate(detected):
            if i not in used and b <= d <= b + tolerance:
                used.add(i)
                delays.append(d - b)
                break
    precision = len(used) / len(detected) if detected else 1.0
    recall = len(delays) / len(true_boundaries) if true_boundaries else 1.0
    return {
        "boundary_precision": precision,
        "boundary_recall": recall,
        "detection_delay": float(np.mean(delays)) if delays else float("nan"),
    }


def recurrence_scores(
    events: Sequence[tuple[int, str, int]], true_boundaries: Sequence[int],
    task_sequence: Sequence[int], tolerance: int,
) -> dict[str, float | int | None]:
    """How a task-free learner with experts (TAME) handled recurring tasks.

    events: ``TAME.switch_events`` (samples seen, 'reuse' or 'spawn', expert id).
    task_sequence: the task of each segment between boundaries (len(true_boundaries) + 1).
    For each boundary into a task seen before (a recurrence), the first event within
    ``tolerance`` samples after it decides: ``reuse_rate`` = share of recurrences handled by
    reusing an expert; ``same_expert_rate`` = share that picked the expert the task got
    at its first occurrence (expert 0 for the first task).
    """
    if len(task_sequence) != len(true_boundaries) + 1:
        raise ConfigError(
            f"task_sequence needs one task per segment: {len(true_boundaries) + 1} for "
            f"{len(true_boundaries)} boundaries, got {len(task_sequence)}"
        )
    expert_of: dict[int, int] = {int(task_sequence[0]): 0}
    recurrences = reused = same = 0
    for b, task in zip(true_boundaries, task_sequence[1:]):
        hit = next((e for e in events if b <= e[0] <= b + tolerance), None)
        if int(task) in expert_of:
            recurrences += 1
            reused += int(hit is not None and hit[1] == "reuse")
            same += int(hit is not None and hit[2] == expert_of[int(task)])
        elif hit is not None:
            expert_of[int(task)] = int(hit[2])
    return {
        "recurrences": recurrences,
        "reuse_rate": reused / recurrences if recurrences else None,
        "same_expert_rate": same / recurrences if recurrences else None,
    }


def fuar(il_before: float, il_after: float, ul_before: float, ul_after: float,
         nl_before: float, nl_after: float) -> float | None:
    """FUAR (Jang et al. 2022, Sec. 3.3; docs/metrics.md) of one phase, from the exact-match
    scores of M0 (before) and M1 (after); None when not defined (the paper's "n.d.")."""
    return fuar_multiphase([(il_before, il_after)], [(ul_before, ul_after)],
                           [(nl_before, nl_after)])


def fuar_multiphase(retained: Sequence[Pair], updated: Sequence[Pair],
                    acquired: Sequence[Pair]) -> float | None:
    """Multi-phase FUAR; each pair is (score before, score after).

    retained[i] = (score of T^F_i at M_i, at M_n) for i = 0..n-1;
    updated[i] / acquired[i] = (score of T^U_{i+1} / T^A_{i+1} at M_i, at M_n) for the n
    corpora. Returns None (the paper's "n.d.") when nothing was updated or acquired.
    """
    if len(updated) != len(acquired):
        raise ConfigError(
            f"FUAR needs one (before, after) pair of updated and acquired scores per corpus; "
            f"got {len(updated)} updated and {len(acquired)} acquired")
    if not updated:
        raise ConfigError("FUAR needs at least one corpus (one updated and one acquired pair)")
    forgotten = sum(max(0.0, before - after) for before, after in retained)
    gained = sum(max(0.0, after - before) for before, after in updated)
    gained += sum(max(0.0, after - before) for before, after in acquired)
    if gained == 0:
        return None
    return forgotten / gained
