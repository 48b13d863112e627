"""Metrics on hand-made matrices with values worked out by hand."""

import numpy as np
import pytest

from continual import metrics as M

# rows: init, after task 0, after task 1, after task 2; columns: tasks 0..2
R = np.array([
    [0.1, 0.2, 0.3],
    [0.9, 0.3, 0.2],
    [0.6, 0.8, 0.4],
    [0.5, 0.7, 0.9],
])
ENDS = [1, 2, 3]


def test_final_accuracy_is_mean_of_last_row():
    assert M.final_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_average_incremental_accuracy():
    # after t0: 0.9; after t1: (0.6+0.8)/2=0.7; after t2: 0.7
    assert M.average_incremental_accuracy(R, ENDS) == pytest.approx((0.9 + 0.7 + 0.7) / 3)


def test_forgetting_uses_the_best_earlier_score():
    # task 0: max(0.9, 0.6) - 0.5 = 0.4; task 1: max(0.8) - 0.7 = 0.1
    assert M.forgetting_per_task(R, ENDS) == pytest.approx([0.4, 0.1])
    assert M.forgetting(R, ENDS) == pytest.approx(0.25)


def test_backward_transfer():
    # (0.5-0.9 + 0.7-0.8) / 2
    assert M.backward_transfer(R, ENDS) == pytest.approx(-0.25)


def test_forward_transfer_against_the_untrained_model():
    # task1: R[t0,1]=0.3 - b=0.2 ; task2: R[t1,2]=0.4 - b=0.3
    assert M.forward_transfer(R, ENDS, init_row=0) == pytest.approx(0.1)


def test_plasticity_is_mean_diagonal():
    assert M.plasticity(R, ENDS) == pytest.approx((0.9 + 0.8 + 0.9) / 3)


def test_single_task_has_no_forgetting_or_transfer():
    assert M.forgetting(R[:2], [1]) == 0.0
    assert M.backward_transfer(R[:2], [1]) == 0.0


def test_stability_gap_measures_the_dip_after_a_boundary():
    # rows: init, end t0 (0.9), dips to 0.5 and 0.7 shortly after, end t1
    S = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.3], [0.7, 0.6], [0.8, 0.9]])
    samples = [0, 100, 110, 120, 200]
    assert M.stability_gap(S, [1, 4], samples, window=50) == pytest.approx(0.4)
    # a window that sees only the first eval point after the boundary
    assert M.stability_gap(S, [1, 4], samples, window=10) == pytest.approx(0.4)
    assert M.stability_gap(S, [1, 4], samples, window=5) == 0.0


def test_online_accuracy():
    assert M.online_accuracy(30, 40) == 0.75
    assert M.online_accuracy(0, 0) == 0.0


def test_fuar_on_the_papers_table_2_rows():
    # Jang et al. 2022, Table 2 (T5-large): initial IL 24.17, UL 1.62, NL 1.88
    assert M.fuar(24.17, 12.89, 1.62, 10.17, 1.88, 3.77) == pytest.approx(1.08, abs=0.005)
    assert M.fuar(24.17, 16.58, 1.62, 12.77, 1.88, 4.52) == pytest.approx(0.55, abs=0.005)


def test_fuar_is_undefined_when_nothing_was_learned():
    assert M.fuar(20.0, 10.0, 5.0, 4.0, 3.0, 3.0) is None


def test_boundary_scores_count_detections_within_tolerance():
    s = M.boundary_scores(detected=[105, 300, 620], true_boundaries=[100, 600, 900], tolerance=50)
    assert s["boundary_precision"] == pytest.approx(2 / 3)
    assert s["boundary_recall"] == pytest.approx(2 / 3)
    assert s["detection_delay"] == pytest.approx((5 + 20) / 2)
