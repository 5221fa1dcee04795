"""What a run's fuser learned, drawn from its best checkpoint:

- weighted: the weight of each modality on the simplex (learned, or the fixed
  model.fuse_weights);
- gated: the weight l it gives the main modality, per class, as a histogram over the classes
  of a split (l of each class's mean gate-modality embedding, what fuse_level=class mixes;
  the per-example l beside it);
- attention: the weights of the learned query over the modalities, averaged over heads, on
  one sampled episode's examples (a heatmap, examples by class);
- concat: each modality's share of the fusing Dense kernel's norm (its input block);
and for an am3 learner, also AM3's l_c per class (from each class's own text) as a histogram.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mmfsl_jax.plot.embeddings import sample_examples
from mmfsl_jax.plot.figures import new_figure, save


@dataclasses.dataclass(frozen=True)
class FusionReading:
  """The numbers `plot_fusion` draws (fields a fuser does not have are None)."""
  fuser: str
  modalities: tuple[str, ...]
  weights: dict[str, float] | None = None       # weighted (how: "learned" or "fixed"), concat
  how: str = ""
  class_names: tuple[str, ...] = ()
  gate_per_class: np.ndarray | None = None      # gated: l [C] of each class
  gate_per_example: np.ndarray | None = None    # gated: l [n]
  attention: np.ndarray | None = None           # attention: [n, M], mean over heads
  attention_labels: np.ndarray | None = None    # attention: each row's class index
  am3_per_class: np.ndarray | None = None       # am3: l_c [C]


def read_fusion(workdir, *, split: str = "test", classes: int = 50, seed: int = 0
                ) -> FusionReading:
  """The fusion of `workdir`'s best checkpoint (module docstring), on up to `classes`
  classes of its `split` (the attention on one episode: task.n_way classes of them, k_shot +
  q_query examples each)."""
  from mmfsl_jax.meta.am3 import class_mixing
  from mmfsl_jax.nn import fuse
  from mmfsl_jax.run.workdir import workdir_config
  config = workdir_config(workdir)
  modalities, name = tuple(config.data.modalities), config.model.fuser
  episode = name == "attention"
  sample = sample_examples(
      workdir, split=split, seed=seed,
      classes=config.task.n_way if episode else classes,
      per_class=config.task.k_shot + config.task.q_query if episode else 20)
  params = sample.trained.params
  fuse_params = params["model"]["fuse"]
  fields: dict = {}
  if name == "weighted":
    fixed = tuple(config.model.fuse_weights) or None
    weights = fuse.simplex_weights(fuse_params, modalities, fixed)
    fields.update(weights={m: float(w) for m, w in weights.items()},
                  how="fixed" if fixed else "learned")
  elif name == "concat":
    kernel = np.asarray(fuse_params["kernel"])              # [M * d, d]
    norms = [np.linalg.norm(block) for block in np.split(kernel, len(modalities))]
    fields.update(weights=dict(zip(modalities, np.asarray(norms) / np.sum(norms))),
                  how="share of the kernel's norm")
  if name in ("gated", "attention") or config.learner.name == "am3":
    _, aligned = sample.embed()
  if name == "gated":
    gate = aligned[modalities[1]]
    means = np.stack([gate[sample.labels == c].mean(0) for c in range(len(sample.classes))])
    fields.update(gate_per_class=np.asarray(fuse.gate_weight(fuse_params, means))[:, 0],
                  gate_per_example=np.asarray(fuse.gate_weight(fuse_params, gate))[:, 0])
  elif name == "attention":
    weights = fuse.attention_weights(fuse_params, aligned, modalities)
    fields.update(attention=np.asarray(weights).mean(1), attention_labels=sample.labels)
  if config.learner.name == "am3":
    text = sample.dataset.class_texts["text"][sample.classes]
    model = sample.trained.model
    _, class_aligned = model.apply(params["model"], {"text": np.asarray(text)})
    _, lam = class_mixing(params["am3"], class_aligned["text"])
    fields["am3_per_class"] = np.asarray(lam)[:, 0]
  return FusionReading(fuser=name, modalities=modalities, class_names=sample.class_names,
                       **fields)


def _histogram(axis, values, *, title: str, xlabel: str, extra=None, extra_label=""):
  bins = np.linspace(0, 1, 21)
  axis.hist(values, bins=bins, color="C0", label=f"per class ({len(values)} classes)")
  if extra is not None:
    axis.hist(extra, bins=bins, color="C1", alpha=0.4, density=False,
              weights=np.full(len(extra), len(values) / len(extra)), label=extra_label)
  axis.axvline(float(np.mean(values)), color="black", linestyle="--",
               label=f"mean {np.mean(values):.2f}")
  axis.set(title=title, xlabel=xlabel, ylabel="classes", xlim=(0, 1))
  axis.legend(fontsize="small")


def plot_fusion(workdir, output=None, *, split: str = "test", classes: int = 50,
                seed: int = 0):
  """The Figure of `read_fusion(workdir)`: the fuser's panel, and AM3's beside it for an
  am3 learner; saved to `output` if given."""
  reading = read_fusion(workdir, split=split, classes=classes, seed=seed)
  panels = 1 + (reading.am3_per_class is not None)
  figure = new_figure(5.5 * panels, 4)
  axes = np.atleast_1d(figure.subplots(1, panels))
  axis = axes[0]
  main, *others = reading.modalities
  if reading.weights is not None:
    names = list(reading.weights)
    bars = axis.bar(names, [reading.weights[m] for m in names],
                    color=[f"C{i}" for i in range(len(names))])
    axis.bar_label(bars, fmt="%.2f")
    axis.set(title=f"{reading.fuser} fuser: {reading.how} weights", ylabel="weight",
             ylim=(0, 1))
  elif reading.gate_per_class is not None:
    _histogram(axis, reading.gate_per_class, title=f"gated fuser on {split} classes",
               xlabel=f"weight of {main} (1 - weight of {others[0]})",
               extra=reading.gate_per_example, extra_label="per example (scaled)")
  elif reading.attention is not None:
    image = axis.imshow(reading.attention, aspect="auto", vmin=0, vmax=1, cmap="viridis",
                        interpolation="nearest")
    axis.set_xticks(range(len(reading.modalities)), reading.modalities)
    starts = [int(np.argmax(reading.attention_labels == c))
              for c in range(len(reading.class_names))]
    axis.set_yticks(starts, reading.class_names, fontsize="x-small")
    axis.set(title="attention fuser: weights on one episode", ylabel="examples, by class")
    figure.colorbar(image, ax=axis, label="attention weight (mean over heads)")
  if reading.am3_per_class is not None:
    _histogram(axes[-1], reading.am3_per_class, title=f"AM3 on {split} classes",
               xlabel="weight of the example prototype (1 - weight of the class text)")
  if output is not None:
    save(figure, output)
  return figure
