"""Per-episode classification metrics and their mean with a 95% confidence interval."""
from __future__ import annotations

import numpy as np


def episode_metrics(predictions: np.ndarray, labels: np.ndarray, n_way: int) -> dict[str, float]:
  """Accuracy, macro recall and macro F1 of one episode ([M] predicted and true labels)."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  confusion = np.zeros((n_way, n_way), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  true_pos = np.diag(confusion).astype(np.float64)
  support = confusion.sum(1)
  predicted = confusion.sum(0)
  recall = np.divide(true_pos, support, out=np.zeros(n_way), where=support > 0)
  precision = np.divide(true_pos, predicted, out=np.zeros(n_way), where=predicted > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n_way), where=denom > 0)
  present = support > 0
  return {"accuracy": float(true_pos.sum() / max(len(labels), 1)),
          "macro_recall": float(recall[present].mean()),
          "macro_f1": float(f1[present].mean())}


def mean_and_ci95(values) -> dict[str, float]:
  """Mean and the half-width of its 95% normal confidence interval, 1.96 * std / sqrt(n)."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    raise ValueError("no values to summarise")
  std = values.std(ddof=1) if values.size > 1 else 0.0
  return {"mean": float(values.mean()), "ci95": float(1.96 * std / np.sqrt(values.size)),
          "n": int(values.size)}


def summarise(per_episode: list[dict[str, float]]) -> dict[str, dict[str, float]]:
  return {k: mean_and_ci95([e[k] for e in per_episode]) for k in per_episode[0]}
