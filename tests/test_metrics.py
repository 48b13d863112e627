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


# Three tasks, eval points every few samples. Rows (samples seen): 0 init (0), 1 end of t0 (100),
# 2 (105), 3 (110), 4 (111), 5 end of t1 (200), 6 (204), 7 (208), 8 (220), 9 end of t2 (300).
GAP_R = np.array([
    [0.1, 0.1, 0.1],
    [0.9, 0.1, 0.1],   # end of t0: t0 at 0.9
    [0.8, 0.3, 0.1],   # +5 samples
    [0.6, 0.5, 0.1],   # +10: exactly at the edge of a 10-sample window, and t0's lowest in it
    [0.2, 0.6, 0.1],   # +11: a deeper dip just outside it
    [0.8, 0.9, 0.5],   # end of t1: t0 at 0.8, t1 at 0.9 (t2, not yet trained, at 0.5)
    [0.7, 0.5, 0.2],   # +4
    [0.75, 0.8, 0.3],  # +8
    [0.1, 0.1, 0.4],   # +20: far outside a 10-sample window
    [0.8, 0.8, 0.9],
])
GAP_SAMPLES = [0, 100, 105, 110, 111, 200, 204, 208, 220, 300]
GAP_ENDS = [1, 5, 9]


@pytest.mark.parametrize(("window", "expected"), [
    # boundary 1 (t0): rows 2, 3 -> 0.9 - 0.6 = 0.3; boundary 2: rows 6, 7 -> t0 0.8 - 0.7 = 0.1,
    # t1 0.9 - 0.5 = 0.4, mean 0.25 (t2, the task about to start, does not count); (0.3 + 0.25) / 2
    (10, 0.275),
    # one sample less: row 3 drops out of boundary 1's window -> 0.9 - 0.8 = 0.1; (0.1 + 0.25) / 2
    (9, 0.175),
    # one sample more: row 4's dip joins boundary 1's window -> 0.9 - 0.2 = 0.7; (0.7 + 0.25) / 2
    (11, 0.475),
    # no eval point within 4 samples of boundary 1: it is left out of the mean (not a zero)
    (4, 0.25),
])
def test_stability_gap_takes_the_lowest_point_inside_the_window_after_each_boundary(window, expected):
    assert M.stability_gap(GAP_R, GAP_ENDS, GAP_SAMPLES, window=window) == pytest.approx(expected)


def test_stability_gap_is_zero_when_no_eval_point_falls_in_any_window():
    assert M.stability_gap(GAP_R, GAP_ENDS, GAP_SAMPLES, window=3) == 0.0
    assert M.stability_gap(GAP_R[[0, 1, 5, 9]], [1, 2, 3], [0, 100, 200, 300], window=50) == 0.0


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
