"""Prints the results table of experiments/shapes from the runs' eval.json and wall_time.json.

    python experiments/shapes/make_table.py > /tmp/table.md
"""
import json
from pathlib import Path

RUNS = Path(__file__).resolve().parent / "runs"
VARIANTS = [("image", "image only"), ("text", "text only"),
            ("weighted", "fused: weighted average (learned)"), ("gated", "fused: gated (AM3-style)")]


def cell(result, key="accuracy"):
  return f"{100 * result[key]['mean']:.2f} ± {100 * result[key]['ci95']:.2f}"


def default_row():
  run = RUNS / "default"
  if not (run / "eval.json").exists() or not (run / "wall_time.json").exists():
    return
  result = json.loads((run / "eval.json").read_text())
  config = json.loads((run / "config.json").read_text())
  wall = json.loads((run / "wall_time.json").read_text())
  print(f"| ProtoNet (`mmfsl train`, default config) | fused: {config['fuser']} | "
        f"{config['k_shot']} | {cell(result)} | {cell(result, 'macro_f1')} | "
        f"{result['settings']['episodes']} | {config['num_steps']} | "
        f"{wall['train_seconds'] / 60:.1f} min | {wall['eval_seconds']:.0f} s |")


def main():
  print("| method | modalities | shots | accuracy % | macro F1 % | episodes | train steps | "
        "train wall time | eval wall time |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for shot in (1, 5):
    for method in ("protonet", "maml"):
      for variant, label in VARIANTS:
        run = RUNS / f"{method}_{variant}_{shot}shot"
        if not (run / "eval.json").exists():
          continue
        result = json.loads((run / "eval.json").read_text())
        config = json.loads((run / "config.json").read_text())
        wall = json.loads((run / "wall_time.json").read_text())
        print(f"| {'ProtoNet' if method == 'protonet' else 'MAML (2nd order)'} | {label} | "
              f"{shot} | {cell(result)} | {cell(result, 'macro_f1')} | "
              f"{result['settings']['episodes']} | {config['num_steps']} | "
              f"{wall['train_seconds'] / 60:.1f} min | {wall['eval_seconds']:.0f} s |")
  default_row()


if __name__ == "__main__":
  main()
