"""Accuracy against k-shot: one line per model and way, each point's 95% interval an error
bar, from `mmfsl eval --shots` files (or plain eval files, a point each)."""
from __future__ import annotations

from collections.abc import Sequence

from mmfsl_jax.errors import UserError
from mmfsl_jax.plot.compare import NAMES
from mmfsl_jax.plot.figures import new_figure, save
from mmfsl_jax.plot.records import METRICS, read_shots


def _name(curve) -> str:
  """The workdir's name: the eval files of one run are one model."""
  return curve.path.parent.name


def plot_shots(eval_files: Sequence, output=None, *, labels: Sequence[str] | None = None,
               metric: str = "accuracy"):
  """The Figure of `metric` (in %) against k-shot, saved to `output` if given.

  Files with the same label (default: the workdir's name) are one model; each model has one
  line per n-way, its points sorted by shot; the x axis is logarithmic, ticked at the shots."""
  if metric not in METRICS:
    raise UserError(f"metric={metric!r}: choose one of {', '.join(METRICS)}")
  if not eval_files:
    raise UserError("give at least one eval file")
  if labels is not None and len(labels) != len(eval_files):
    raise UserError(f"{len(labels)} labels for {len(eval_files)} eval files: give one each")
  curves = [read_shots(f) for f in eval_files]
  names = list(labels) if labels is not None else [_name(c) for c in curves]
  lines: dict[tuple[str, int], dict[int, tuple[float, float]]] = {}
  for name, curve in zip(names, curves):
    for n, k, mean, ci in zip(curve.n_way, curve.k_shot, curve.means[metric],
                              curve.ci95[metric]):
      points = lines.setdefault((name, int(n)), {})
      if int(k) in points:
        raise UserError(f"{name!r} has two {n}-way {k}-shot results (in {curve.path} and "
                        f"another file); give each model's files one label of its own")
      points[int(k)] = (100 * float(mean), 100 * float(ci))
  ways = sorted({n for _, n in lines})
  models = list(dict.fromkeys(name for name, _ in lines))
  figure = new_figure(6.5, 4.5)
  axis = figure.subplots()
  for (name, n), points in lines.items():
    shots = sorted(points)
    colour = f"C{models.index(name) % 10}"
    style = ("-", "--", ":", "-.")[ways.index(n) % 4]
    axis.errorbar(shots, [points[k][0] for k in shots], yerr=[points[k][1] for k in shots],
                  color=colour, linestyle=style, marker="o", capsize=3,
                  label=name if len(ways) == 1 else f"{name}, {n}-way")
  if metric == "accuracy":
    for n in ways:
      axis.axhline(100 / n, color="grey", linewidth=0.8, linestyle=("-", "--", ":", "-.")[
          ways.index(n) % 4], label=f"chance ({n}-way)")
  all_shots = sorted({k for points in lines.values() for k in points})
  axis.set_xscale("log")
  axis.set_xticks(all_shots, [str(k) for k in all_shots])
  axis.minorticks_off()
  way = f"{ways[0]}-way " if len(ways) == 1 else ""
  axis.set(xlabel="shots (support examples per class)",
           ylabel=f"{NAMES[metric]} (%, 95% CI)", title=f"{way}{NAMES[metric]} by shot")
  axis.legend()
  if output is not None:
    save(figure, output)
  return figure
