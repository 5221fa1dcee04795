"""The results table of experiments/shapes, from the runs' eval.json and wall_time.json.

    python experiments/shapes/make_table.py            # print the table
    python experiments/shapes/make_table.py --readme   # write README.md from README.md.in

(with mmfsl_jax importable). Each run's config.json is read through
`mmfsl_jax.run.config.saved_config`, so runs saved in the old flat layout (`num_steps`) and in
the sectioned one (`run.num_steps`) read alike.
"""
import contextlib
import io
import json
import sys
from pathlib import Path

from mmfsl_jax.run.config import saved_config

RUNS = Path(__file__).resolve().parent / "runs"
VARIANTS = [("image", "image only"), ("text", "text only"),
            ("weighted", "fused: weighted average (learned)"),
            ("gated", "fused: gated (AM3-style)")]
# The rest of the method family (run.sh's FAMILY rows): run name prefix, method label, and the
# modalities label of each variant.
FAMILY = [("anil", "ANIL (2nd order)"), ("metasgd", "Meta-SGD (2nd order)"),
          ("mamlpp", "MAML++ (3 steps, per-step rates, multi-step loss)"),
          ("reptile", "Reptile (5 steps)"), ("baselinepp", "Baseline++ (transfer)"),
          ("am3", "AM3 (class-name text)")]
FAMILY_VARIANTS = {"image": "image only", "gated": "fused: gated (AM3-style)"}
AM3_VARIANTS = {"image": "image examples + class text", "gated": "fused: gated + class text"}


def read_config(run: Path) -> dict:
  """A run's config.json as a sectioned config dict, whichever layout it was saved in."""
  return saved_config(json.loads((run / "config.json").read_text()))


def cell(result, key="accuracy"):
  return f"{100 * result[key]['mean']:.2f} ± {100 * result[key]['ci95']:.2f}"


def row(run: Path, method: str, modalities: str, shot: int) -> None:
  """Prints the table row of one finished run (nothing if it has no eval.json yet)."""
  if not (run / "eval.json").exists() or not (run / "wall_time.json").exists():
    return
  result = json.loads((run / "eval.json").read_text())
  config = read_config(run)
  wall = json.loads((run / "wall_time.json").read_text())
  print(f"| {method} | {modalities} | {shot} | {cell(result)} | {cell(result, 'macro_f1')} | "
        f"{result['settings']['episodes']} | {config['run']['num_steps']} | "
        f"{wall['train_seconds'] / 60:.1f} min | {wall['eval_seconds']:.0f} s |")


def main():
  print("| method | modalities | shots | accuracy % | macro F1 % | episodes | train steps | "
        "train wall time | eval wall time |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for shot in (1, 5):
    for method in ("protonet", "maml"):
      for variant, label in VARIANTS:
        row(RUNS / f"{method}_{variant}_{shot}shot",
            "ProtoNet" if method == "protonet" else "MAML (2nd order)", label, shot)
  for shot in (1, 5):
    for method, label in FAMILY:
      for variant, modalities in (AM3_VARIANTS if method == "am3" else FAMILY_VARIANTS).items():
        row(RUNS / f"{method}_{variant}_{shot}shot", label, modalities, shot)
  for weight, name in (("0", "seedobj0"), ("0.5", "seedobj05")):   # run.sh's last rows
    run = RUNS / f"{name}_protonet_gated_1shot"
    if (run / "config.json").exists():
      row(run, f"ProtoNet, `learner.support_loss_weight={weight}`", "fused: gated (AM3-style)", 1)
  default = RUNS / "default"
  if (default / "config.json").exists():
    config = read_config(default)
    row(default, "ProtoNet (`mmfsl train`, default config)", f"fused: {config['model']['fuser']}",
        config["task"]["k_shot"])

if __name__ == "__main__":
  if "--readme" in sys.argv:
    here = Path(__file__).resolve().parent
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
      main()
    template = (here / "README.md.in").read_text()
    (here / "README.md").write_text(template.replace("TABLE", table.getvalue().rstrip()))
  else:
    main()
