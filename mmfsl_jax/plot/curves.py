"""Training curves of one or more runs: loss, and train / validation accuracy (the validation
mean with its 95% interval as a band), against meta-steps or wall time; the learning rate on
a second axis of the loss plot where it changes."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmfsl_jax.errors import UserError
from mmfsl_jax.plot.figures import new_figure, save
from mmfsl_jax.plot.records import read_curves

X_AXES = {"step": "meta-step", "time": "wall time (s)"}


def plot_curves(workdirs: Sequence, output=None, *, names: Sequence[str] | None = None,
                x: str = "step"):
  """The Figure of `workdirs`' curves (one colour per run), saved to `output` if given.

  Left: training loss (and the learning rate, dashed, on its own axis where it changes);
  right: training accuracy (dotted) and validation accuracy (markers) with its 95% band."""
  if x not in X_AXES:
    raise UserError(f"x={x!r}: choose one of {', '.join(X_AXES)}")
  if not workdirs:
    raise UserError("give at least one workdir")
  if names is not None and len(names) != len(workdirs):
    raise UserError(f"{len(names)} names for {len(workdirs)} workdirs: give one name each")
  runs = [read_curves(w, n) for w, n in zip(workdirs, names or [None] * len(workdirs))]
  figure = new_figure(11, 4)
  loss_axis, accuracy_axis = figure.subplots(1, 2)
  rate_axis = None
  for i, run in enumerate(runs):
    colour = f"C{i}"
    xs, val_xs = ((run.steps, run.val_steps) if x == "step" else
                  (run.seconds, run.val_seconds))
    loss_axis.plot(xs, run.loss, color=colour, label=run.name)
    accuracy_axis.plot(xs, run.accuracy, color=colour, linestyle=":",
                       label=f"{run.name} (train)")
    if len(run.val_steps):
      accuracy_axis.plot(val_xs, run.val_accuracy, color=colour, marker="o",
                         label=f"{run.name} (validation)")
      accuracy_axis.fill_between(val_xs, run.val_accuracy - run.val_ci95,
                                 run.val_accuracy + run.val_ci95, color=colour, alpha=0.2)
    if run.learning_rate is not None and np.ptp(run.learning_rate) > 0:
      rate_axis = rate_axis or loss_axis.twinx()
      rate_axis.plot(xs, run.learning_rate, color=colour, linestyle="--",
                     label=f"{run.name} (learning rate)")
  loss_axis.set(xlabel=X_AXES[x], ylabel="training loss", title="loss")
  accuracy_axis.set(xlabel=X_AXES[x], ylabel="accuracy", title="accuracy (validation: 95% CI)")
  if rate_axis is not None:
    rate_axis.set_ylabel("learning rate")
  loss_axis.legend()
  accuracy_axis.legend(fontsize="small")
  if output is not None:
    save(figure, output)
  return figure
