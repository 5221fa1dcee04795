"""The results table of experiments/omniglot, from the runs' eval_*.json and wall_time.json,
with the published figures of ../shared/docs/ANCHORS.md beside them.

    python experiments/omniglot/make_table.py            # print the tables
    python experiments/omniglot/make_table.py --readme   # write README.md from README.md.in
"""
import contextlib
import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
# run name prefix -> (label, published 5w1s / 5w5s / 20w1s, from ANCHORS.md)
METHODS = {
    "protonet": ("ProtoNet", "Snell et al. 2017", {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0}),
    "maml": ("MAML (2nd order)", "Finn et al. 2017", {"5w1s": 98.7, "5w5s": 99.9, "20w1s": 95.8}),
    "fomaml": ("first-order MAML", "Finn et al. 2017", {"5w1s": 98.3, "5w5s": 99.2, "20w1s": 89.4}),
    "anil": ("ANIL (2nd order)", "Raghu et al. 2019", {"20w1s": 96.2}),
    "metasgd": ("Meta-SGD", "Li et al. 2017", {"5w1s": 99.53, "5w5s": 99.93, "20w1s": 95.93}),
    "mamlpp": ("MAML++ (3 steps, per-step rates, multi-step loss)", "", {}),
    "reptile": ("Reptile (5 steps)", "", {}),
    "baselinepp": ("Baseline++ (transfer)", "", {}),
}
SETTINGS = ("5w1s", "5w5s", "20w1s")
INNER_LOOP_METHODS = ("maml", "anil", "metasgd", "reptile")   # as mmfsl_jax.run.evaluators.episodic


def runs():
  """(run dir, method, config, wall time) of the finished runs, in METHODS' order."""
  done = [(run, run.name.split("_")[0]) for run in sorted(RUNS.glob("*"))
          if (run / "wall_time.json").exists()]
  for method in METHODS:
    for run, _ in [d for d in done if d[1] == method]:
      yield run, method, json.loads((run / "config.json").read_text()), json.loads(
          (run / "wall_time.json").read_text())


def wall(wall_time) -> str:
  minutes = f"{wall_time['train_seconds'] / 60:.0f} min"
  if wall_time.get("paused_seconds"):
    minutes += f" ({wall_time['paused_seconds'] / 60:.0f} of them paused)"
  return minutes


def trained_as(config, wall_time) -> str:
  steps = config["num_steps"]
  if wall_time.get("stopped_at_step"):   # stopped early for CPU time: its best checkpoint
    steps = f"{wall_time['stopped_at_step']} (stopped; of {steps})"
  text = f"{config['n_way']}-way {config['k_shot']}-shot, {steps} steps"
  if config.get("eval_n_way") or config.get("eval_k_shot"):
    text += (f", validated {config.get('eval_n_way') or config['n_way']}-way "
             f"{config.get('eval_k_shot') or config['k_shot']}-shot")
  if config["method"] in INNER_LOOP_METHODS:
    text += f", inner lr {config['inner_lr']}"
  if config.get("val_episodes") == 0:
    held_out = config["omniglot"]["val_alphabets"] or config["omniglot"]["test_alphabets"]
    text += ", no validation" + ("" if held_out else ", all 8 alphabets")
  if config.get("lr_schedule") == "step":
    text += f", lr x{config['lr_decay_factor']} every {config['lr_decay_every']} steps"
  elif config.get("lr_schedule") == "cosine":
    text += ", cosine lr"
  if config.get("embed_dim") == 0:
    text += ", no projection"
  if config.get("conv_pool") == "floor":
    text += ", floor pooling (64 features)"
  if config.get("omniglot", {}).get("resize") == "bilinear":
    text += ", bilinear downsampling"
  if config.get("conv_init") == "torch":
    text += ", PyTorch's init"
  if config.get("seed"):
    text += f", seed {config['seed']}"
  return text + (", zero head" if config.get("zero_head") else "")


def test_steps(config, result) -> str:
  """The inner steps at test time ('-' for learners without an inner loop); evaluations
  written before eval.json recorded them used the config's."""
  if config["method"] not in INNER_LOOP_METHODS:
    return "-"
  steps = result["settings"].get("inner_steps")
  return str(steps or config.get("eval_inner_steps") or config["inner_steps"])


def published_cell(published, source, setting) -> str:
  return f"{published[setting]} ({source})" if setting in published else "-"


def accuracy_cell(result) -> str:
  return f"{100 * result['accuracy']['mean']:.2f} ± {100 * result['accuracy']['ci95']:.2f}"


def evaluations(run, name):
  """eval_<name>.json, eval_<name>_<S>step.json and eval_<name>_population.json of a run, in
  that order."""
  paths = [run / f"eval_{name}.json", *sorted(run.glob(f"eval_{name}_*step.json")),
           run / f"eval_{name}_population.json"]
  return [json.loads(path.read_text()) for path in paths if path.exists()]


def main():
  print("| method | trained | test setting | test inner steps | accuracy % (95% CI) | "
        "published % | episodes | train wall time |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for run, method, config, wall_time in runs():
    label, source, published = METHODS[method]
    for setting in SETTINGS:
      for r in evaluations(run, setting):
        print(f"| {label} | {trained_as(config, wall_time)} | {setting} | {test_steps(config, r)} | "
              f"{accuracy_cell(r)} | {published_cell(published, source, setting)} | {r['settings']['episodes']} | "
              f"{wall(wall_time)} |")
  print()
  print("| method | trained | test inner steps | test batch norm | 20 one-shot runs of Lake et "
        "al. % | error % |")
  print("| --- | --- | --- | --- | --- | --- |")
  for run, method, config, wall_time in runs():
    for r in evaluations(run, "runs"):
      norm = r["settings"].get("batch_norm", config.get("batch_norm", "transductive"))
      print(f"| {METHODS[method][0]} | {trained_as(config, wall_time)} | {test_steps(config, r)} | "
            f"{norm} | {100 * r['accuracy']:.2f} | {100 * r['error_rate']:.2f} |")
  print("| people (Lake et al. 2015) | | | | 95.5 | 4.5 |")
  print("| plain PyTorch ProtoNet on the same data (../shared/peers, 2,000 60-way 5-shot "
        "episodes, 37 min) | | | running averages | 88.25 | 11.75 |")
  print()
  print("Validation alphabet (Early_Aramaic), for choosing the test inner steps "
        "(`mmfsl eval --split val`):")
  print()
  print("| method | trained | setting | inner steps | validation accuracy % (95% CI) | episodes |")
  print("| --- | --- | --- | --- | --- | --- |")
  for run, method, config, wall_time in runs():
    for path in sorted(run.glob("eval_val_*.json")):
      r = json.loads(path.read_text())
      setting = f"{r['settings']['n_way']}w{r['settings']['k_shot']}s"
      print(f"| {METHODS[method][0]} | {trained_as(config, wall_time)} | {setting} | "
            f"{r['settings']['inner_steps']} | {accuracy_cell(r)} | {r['settings']['episodes']} |")


if __name__ == "__main__":
  if "--readme" in sys.argv:
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
      main()
    template = (HERE / "README.md.in").read_text()
    (HERE / "README.md").write_text(template.replace("TABLE", table.getvalue().rstrip()))
  else:
    main()
