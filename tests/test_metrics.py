import numpy as np
import pytest

from mmfsl_jax.run.evaluators.metrics import episode_metrics, mean_and_ci95


def test_episode_metrics_by_hand():
  labels = np.array([0, 0, 1, 1, 2, 2])
  preds = np.array([0, 1, 1, 1, 0, 2])
  m = episode_metrics(preds, labels, 3)
  assert m["accuracy"] == pytest.approx(4 / 6)
  # recall per class: 1/2, 1, 1/2; precision: 1/2, 2/3, 1
  assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
  f1 = [2 * p * r / (p + r) for p, r in ((0.5, 0.5), (2 / 3, 1.0), (1.0, 0.5))]
  assert m["macro_f1"] == pytest.approx(np.mean(f1))


def test_class_never_predicted_has_zero_f1():
  m = episode_metrics(np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1]), 2)
  assert m["macro_f1"] == pytest.approx((2 * 0.5 * 1 / 1.5 + 0) / 2)


def test_mean_and_ci95():
  values = np.array([0.5, 0.7, 0.6, 0.8])
  s = mean_and_ci95(values)
  assert s["mean"] == pytest.approx(0.65)
  assert s["ci95"] == pytest.approx(1.96 * values.std(ddof=1) / 2)
  assert s["n"] == 4
  with pytest.raises(ValueError):
    mean_and_ci95([])
