"""The results table of experiments/pretrained, from the runs' eval.json, wall_time.json and
train.log (the line on the image features), beside the from-scratch ProtoNet rows of
experiments/shapes and experiments/omniglot (the same test episodes: eval.seed=1234, 600).

    python experiments/pretrained/make_table.py     # print the table (mmfsl_jax importable)
"""
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
EXPERIMENTS = HERE.parent
FEATURES = re.compile(r"image features of (\S+): (\d+) images through the backbone, (\d+) read "
                      r"from the disk cache, ([\d.]+) s")
SHAPES = [("protonet_image", "ProtoNet", "image"),
          ("protonet_fused", "ProtoNet, fused (weighted)", "image + caption"),
          ("anil_image", "ANIL (head adapted in the inner loop)", "image"),
          ("linear_probe", "linear probe", "image"),
          ("zeroshot", "zero-shot (class text only)", "image vs class text"),
          ("tip_adapter", "Tip-Adapter", "image + class text"),
          ("tip_adapter_f", "Tip-Adapter-F", "image + class text"),
          ("lp_plus_plus", "LP++", "image + class text")]
OMNIGLOT = [("protonet", "ProtoNet"), ("anil", "ANIL (head adapted in the inner loop)"),
            ("linear_probe", "linear probe")]
# The from-scratch rows: (dataset, label, modalities, shot, eval file, run directory).
FROM_SCRATCH = [
    ("shapes", "ProtoNet, Conv4 from scratch", "image", 1,
     "shapes/runs/protonet_image_1shot/eval.json"),
    ("shapes", "ProtoNet, Conv4 from scratch", "image", 5,
     "shapes/runs/protonet_image_5shot/eval.json"),
    ("shapes", "ProtoNet, Conv4 from scratch, fused (weighted)", "image + caption", 1,
     "shapes/runs/protonet_weighted_1shot/eval.json"),
    ("shapes", "ProtoNet, Conv4 from scratch, fused (weighted)", "image + caption", 5,
     "shapes/runs/protonet_weighted_5shot/eval.json"),
    ("omniglot", "ProtoNet, Conv4 from scratch (20-way trained)", "image", 1,
     "omniglot/runs/protonet/eval_5w1s.json"),
    ("omniglot", "ProtoNet, Conv4 from scratch (20-way trained)", "image", 5,
     "omniglot/runs/protonet/eval_5w5s.json"),
]


def cell(result, key="accuracy"):
  return f"{100 * result[key]['mean']:.2f} ± {100 * result[key]['ci95']:.2f}"


def features(run: Path) -> str:
  log = run / "train.log"
  match = FEATURES.search(log.read_text()) if log.exists() else None
  if match is None:
    return ""
  computed, loaded, seconds = int(match[2]), int(match[3]), float(match[4])
  return (f"{computed} computed, {seconds:.0f} s" if computed
          else f"{loaded} read from cache, {seconds:.1f} s")


def row(dataset, method, modalities, shot, run: Path) -> None:
  if not (run / "eval.json").exists() or not (run / "wall_time.json").exists():
    return
  result = json.loads((run / "eval.json").read_text())
  wall = json.loads((run / "wall_time.json").read_text())
  steps = json.loads((run / "config.json").read_text())["run"]["num_steps"]
  print(f"| {dataset} | {method} | {modalities} | {shot} | {cell(result)} | "
        f"{cell(result, 'macro_f1')} | {result['settings']['episodes']} | {steps} | "
        f"{wall['train_seconds'] / 60:.1f} min | {wall['eval_seconds']:.0f} s | "
        f"{features(run)} |")


def from_scratch_row(dataset, method, modalities, shot, path) -> None:
  file = EXPERIMENTS / path
  if not file.exists():
    return
  result = json.loads(file.read_text())
  print(f"| {dataset} | {method} | {modalities} | {shot} | {cell(result)} | "
        f"{cell(result, 'macro_f1')} | {result['settings']['episodes']} | see "
        f"experiments/{path.split('/')[0]} | | | |")


def main():
  print("| data | method | modalities | shots | accuracy % | macro F1 % | episodes | "
        "train steps | train wall time | eval wall time | image features |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for dataset, methods in (("shapes", SHAPES), ("omniglot", OMNIGLOT)):
    for shot in (1, 5):
      for scratch in FROM_SCRATCH:
        if scratch[0] == dataset and scratch[3] == shot:
          from_scratch_row(*scratch)
      for entry in methods:
        name, label = entry[0], entry[1]
        modalities = entry[2] if len(entry) > 2 else "image"
        row(dataset, label, modalities, shot, RUNS / f"{dataset}_{name}_{shot}shot")


if __name__ == "__main__":
  main()
