"""Evaluations side by side: accuracy, macro recall and macro F1 with their 95% intervals as
error bars, one cluster of bars per eval file, clusters grouped by a setting."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmfsl_jax.errors import UserError
from mmfsl_jax.plot.figures import new_figure, save
from mmfsl_jax.plot.records import METRICS, read_evaluation

GROUP_BY = ("method", "modalities", "fuser", "none")
NAMES = {"accuracy": "accuracy", "macro_recall": "macro recall", "macro_f1": "macro F1"}


def _group(evaluation, group_by: str) -> str:
  settings = evaluation.settings
  if group_by == "none":
    return ""
  if group_by == "modalities":
    return " + ".join(settings.get("modalities", [])) or "?"
  return str(settings.get(group_by, "?"))


def _name(evaluation) -> str:
  """The workdir's name, and the file's where it is not eval.json."""
  path = evaluation.path
  return path.parent.name + ("" if path.name == "eval.json" else f" / {path.stem}")


def plot_compare(eval_files: Sequence, output=None, *, labels: Sequence[str] | None = None,
                 group_by: str = "method", metrics: Sequence[str] = METRICS):
  """The Figure comparing `eval_files` (`mmfsl eval` outputs), saved to `output` if given.

  Clusters are ordered by their group (the eval settings' method, modalities or fuser), in
  the order the groups first appear; each bar is a metric's mean, its error bar the 95% CI."""
  if group_by not in GROUP_BY:
    raise UserError(f"group_by={group_by!r}: choose one of {', '.join(GROUP_BY)}")
  unknown = [m for m in metrics if m not in METRICS]
  if unknown or not metrics:
    raise UserError(f"metrics {list(metrics)}: choose among {', '.join(METRICS)}")
  if not eval_files:
    raise UserError("give at least one eval file")
  if labels is not None and len(labels) != len(eval_files):
    raise UserError(f"{len(labels)} labels for {len(eval_files)} eval files: give one each")
  evaluations = [read_evaluation(f) for f in eval_files]
  names = list(labels) if labels is not None else [_name(e) for e in evaluations]
  groups = [_group(e, group_by) for e in evaluations]
  first = {g: i for i, g in reversed(list(enumerate(groups)))}
  order = sorted(range(len(evaluations)), key=lambda i: (first[groups[i]], i))
  figure = new_figure(max(6.0, 1.2 * len(order) + 2), 4.5)
  axis = figure.subplots()
  width = 0.8 / len(metrics)
  positions = np.arange(len(order))
  for j, metric in enumerate(metrics):
    means = [100 * evaluations[i].means[metric] for i in order]
    errors = [100 * evaluations[i].ci95[metric] for i in order]
    axis.bar(positions + (j - (len(metrics) - 1) / 2) * width, means, width, yerr=errors,
             capsize=3, label=NAMES[metric], color=f"C{j}")
  ticks = [names[i] if not groups[i] else f"{names[i]}\n({groups[i]})" for i in order]
  axis.set_xticks(positions, ticks, rotation=30 if len(order) > 4 else 0, ha="right"
                  if len(order) > 4 else "center", fontsize="small")
  for k in range(1, len(order)):   # a line between groups
    if groups[order[k]] != groups[order[k - 1]]:
      axis.axvline(k - 0.5, color="grey", linewidth=0.8)
  axis.set(ylabel="% (mean over episodes, 95% CI)",
           title="evaluation" + (f", grouped by {group_by}" if group_by != "none" else ""))
  axis.legend()
  if output is not None:
    save(figure, output)
  return figure
