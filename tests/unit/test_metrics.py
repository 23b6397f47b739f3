"""Metric functions against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from facekeys.evaluation.metrics import auc_at, ced_curve, nme_per_image, rmse, score


def shapes_68(errors_px: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Targets with outer eye corners 40 px apart; predictions shifted right by each error."""
    target = np.zeros((len(errors_px), 68, 2))
    target[:, :, 0] = np.arange(68)
    target[:, 36] = [10.0, 20.0]
    target[:, 45] = [50.0, 20.0]
    pred = target.copy()
    pred[:, :, 0] += np.asarray(errors_px)[:, None]
    return pred, target


def test_nme_rmse_and_failure_rates_by_hand():
    pred, target = shapes_68([2.0, 4.0, 6.0])  # NME 5 %, 10 %, 15 %
    assert np.allclose(nme_per_image(pred, target, (36, 45)), [0.05, 0.10, 0.15])
    assert rmse(pred, target) == pytest.approx(np.sqrt((4 + 16 + 36) / 3 / 2))
    result = score(pred, target, "youtube68")
    assert result["nme_mean"] == pytest.approx(0.10)
    assert result["nme_median"] == pytest.approx(0.10)
    assert result["failure_rate_8"] == pytest.approx(2 / 3)
    assert result["failure_rate_10"] == pytest.approx(1 / 3)  # 10 % itself is not a failure
    assert result["auc_10"] == pytest.approx((0.05 + 0 + 0) / 3 / 0.10)
    assert result["mean_error_px"] == pytest.approx(4.0)
    assert result["nme_by_region"]["jaw"] == pytest.approx(0.10)
    assert result["nme_by_landmark"][0] == pytest.approx(0.10)


def test_missing_points_and_missing_normaliser():
    pred, target = shapes_68([2.0, 2.0])
    target = target.copy()
    pred[0, 5] += 100.0
    target[0, 5] = np.nan  # unlabelled: its error does not count
    target[1, 45] = np.nan  # no normaliser: no NME for that image
    nme = nme_per_image(pred, target, (36, 45))
    assert nme[0] == pytest.approx(0.05) and np.isnan(nme[1])
    result = score(pred, target, "youtube68")
    assert (result["images"], result["nme_images"]) == (2, 1)
    assert result["rmse_px"] == pytest.approx(np.sqrt(4 / 2))


def test_auc_and_ced_curve():
    nme = np.array([0.0, 0.02, 0.2, np.nan])
    assert auc_at(nme, 0.1) == pytest.approx((0.1 + 0.08 + 0.0) / 3 / 0.1)
    curve = ced_curve(nme, 0.1, steps=11)
    assert curve[0] == {"nme": 0.0, "share": pytest.approx(1 / 3)}
    assert curve[2]["share"] == pytest.approx(2 / 3) and curve[-1]["share"] == pytest.approx(2 / 3)


def test_a_nan_or_infinite_prediction_is_a_failure_never_a_free_pass():
    pred, target = shapes_68([2.0, 2.0, 2.0])
    pred[0] = np.nan  # a model that gave up on one face
    pred[1, 3] = np.inf  # and on one point of another
    nme = nme_per_image(pred, target, (36, 45))
    assert np.isinf(nme[:2]).all() and nme[2] == pytest.approx(0.05)
    assert np.isinf(rmse(pred, target))
    result = score(pred, target, "youtube68")
    assert result["non_finite_points"] == 68 + 1
    assert result["nme_mean"] is None and result["mean_error_px"] is None  # JSON has no inf
    assert result["nme_median"] is None  # two of three images are infinite
    assert result["failure_rate_8"] == pytest.approx(2 / 3)
    assert result["auc_10"] == pytest.approx(0.05 / 3 / 0.10)
    everything_nan = score(np.full_like(pred, np.nan), target, "youtube68")
    assert everything_nan["failure_rate_10"] == 1.0 and everything_nan["auc_10"] == 0.0
    assert everything_nan["nme_mean"] is None


def test_a_nan_prediction_where_no_label_exists_does_not_count():
    pred, target = shapes_68([2.0])
    target[0, 5] = np.nan
    pred[0, 5] = np.nan
    result = score(pred, target, "youtube68")
    assert result["non_finite_points"] == 0 and result["nme_mean"] == pytest.approx(0.05)


def test_the_paired_bootstrap_tells_a_real_gain_from_noise():
    from facekeys.evaluation.metrics import gate_metric_function, paired_bootstrap_gain

    rng = np.random.default_rng(0)
    pred, target = shapes_68([2.0] * 40)
    champion = pred + rng.normal(0, 1.0, pred.shape)
    metric = gate_metric_function("nme_mean", "youtube68")
    people = [f"person{i // 4}" for i in range(40)]  # ten people, four frames each
    same = paired_bootstrap_gain(metric, champion, champion.copy(), target, people, draws=300)
    assert same["gain"] == 0 and same["low"] <= 0 <= same["high"] and same["clusters"] == 10
    better = champion - (champion - target) * 0.5  # halves every error
    found = paired_bootstrap_gain(metric, champion, better, target, people, draws=300)
    assert found["gain"] > 0 and found["low"] > 0
    # A gain carried by one person out of ten is not beyond noise.
    lucky = champion.copy()
    lucky[:4] = target[:4]
    noisy = paired_bootstrap_gain(metric, champion, lucky, target, people, draws=300)
    assert noisy["gain"] > 0 and noisy["low"] <= 0
    assert gate_metric_function("kaggle_rmse_96px", "kaggle15") is rmse
    assert gate_metric_function("auc_10", "youtube68") is None
