"""Metrics against values computed by hand (the arithmetic is written next to each number)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train import metrics

NAN = float("nan")


def test_f1_per_au_hand_values() -> None:
    # AU a: pred 1,1,0,0 vs true 1,0,1,0 -> TP=1 FP=1 FN=1 -> 2/(2+1+1) = 0.5
    # AU b: pred 1,1,1,0 vs true 1,1,NaN,0 -> third row ignored -> TP=2 FP=0 FN=0 -> 1.0
    # AU c: never labelled -> NaN
    pred = np.array([[0.9, 0.8, 0.7], [0.6, 0.9, 0.1], [0.2, 0.7, 0.9], [0.1, 0.2, 0.9]])
    true = np.array([[1, 1, NAN], [0, 1, NAN], [1, NAN, NAN], [0, 0, NAN]])
    f1 = metrics.f1_per_au(pred, true)
    assert f1[0] == pytest.approx(0.5)
    assert f1[1] == pytest.approx(1.0)
    assert math.isnan(f1[2])
    assert metrics.mean_f1(pred, true) == pytest.approx(0.75)  # (0.5 + 1.0) / 2, NaN skipped


def test_f1_threshold_and_no_positive_column() -> None:
    # threshold 0.95: nothing predicted positive; true has 2 positives -> TP=0 FN=2 -> F1 = 0
    assert metrics.f1_per_au([0.9, 0.9, 0.1], [1, 1, 0], threshold=0.95)[0] == 0.0
    # labelled but no positives anywhere -> zero_division
    assert metrics.f1_per_au([0, 0], [0, 0], zero_division=1.0)[0] == 1.0


def test_icc31_hand_value() -> None:
    # y=[1,2,3,4] (true), x=[1,3,2,4] (pred); k=2, n=4. Row means 1,2.5,2.5,4; grand 2.5.
    # SS_rows = 2*(2.25+0+0+2.25) = 9 -> BMS = 3; column means equal -> SS_cols = 0;
    # SS_total = 5 + 5 = 10 -> SS_err = 1 -> EMS = 1/3; ICC = (3-1/3)/(3+1/3) = 0.8
    icc = metrics.icc31([1, 3, 2, 4], [1, 2, 3, 4])
    assert icc[0] == pytest.approx(0.8)


def test_icc31_is_consistency_not_agreement_and_masks_nan() -> None:
    # a constant offset does not lower ICC(3,1) (consistency); NaN rows are dropped
    icc = metrics.icc31([[2, 0], [3, 1], [4, 2], [9, 7]], [[1, 0], [2, 1], [3, 2], [NAN, NAN]])
    assert icc[0] == pytest.approx(1.0)
    assert icc[1] == pytest.approx(1.0)
    # a column with fewer than two labelled rows is undefined
    assert math.isnan(metrics.icc31([1, 2], [1, NAN])[0])


def test_mse_mae_hand_values() -> None:
    pred = [[1.0, 0.0], [2.0, 5.0], [4.0, 1.0]]
    true = [[0.0, NAN], [2.0, 3.0], [1.0, NAN]]
    # col 0 errors 1, 0, 3 -> MSE (1+0+9)/3 = 10/3, MAE 4/3; col 1 only row 1: err 2 -> 4 and 2
    assert metrics.mse_per_au(pred, true) == pytest.approx([10 / 3, 4.0])
    assert metrics.mae_per_au(pred, true) == pytest.approx([4 / 3, 2.0])


def test_accuracy_and_confusion_matrix_skip_unknown() -> None:
    true = [0, 1, 2, 2, -1, 1]
    pred = [0, 2, 2, 1, 0, 1]
    # labelled rows: (0,0) ok, (1,2) x, (2,2) ok, (2,1) x, (1,1) ok -> 3/5
    assert metrics.accuracy(pred, true) == pytest.approx(0.6)
    cm = metrics.confusion_matrix(pred, true, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
    # per-class recall 1, 0.5, 0.5 -> 2/3
    assert metrics.mean_class_accuracy(cm) == pytest.approx(2 / 3)


def test_bad_shapes_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"pred shape \(2, 1\) must equal target shape \(3, 1\)"):
        metrics.f1_per_au([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="num_classes=2"):
        metrics.confusion_matrix([0, 3], [0, 1], 2)
