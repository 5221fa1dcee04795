"""The results table of experiments/omniglot, from the runs' eval_*.json and wall_time.json,
with the published figures of ../shared/docs/ANCHORS.md beside them.

    python experiments/omniglot/make_table.py            # print the tables
    python experiments/omniglot/make_table.py --readme   # write README.md from README.md.in

(with mmfsl_jax importable). Each run's config.json is read through
`mmfsl_jax.run.config.saved_config`, so runs saved in the old flat layout (`n_way`) and in the
sectioned one (`task.n_way`) read alike; keys a run's version did not have read as their
defaults.
"""
import contextlib
import io
import json
import sys
from pathlib import Path

from mmfsl_jax.meta.registry import METHODS as LEARNERS
from mmfsl_jax.run.config import saved_config

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


def inner_loop(config) -> bool:
  """Whether the run's learner adapts by inner-loop steps at test time (meta/registry.py)."""
  return LEARNERS[config["learner"]["name"]].inner_loop


def runs():
  """(run dir, method, config, wall time) of the finished runs, in METHODS' order."""
  done = [(run, run.name.split("_")[0]) for run in sorted(RUNS.glob("*"))
          if (run / "wall_time.json").exists()]
  for method in METHODS:
    for run, _ in [d for d in done if d[1] == method]:
      yield run, method, saved_config(json.loads((run / "config.json").read_text())), \
          json.loads((run / "wall_time.json").read_text())


def wall(wall_time) -> str:
  minutes = f"{wall_time['train_seconds'] / 60:.0f} min"
  if wall_time.get("paused_seconds"):
    minutes += f" ({wall_time['paused_seconds'] / 60:.0f} of them paused)"
  return minutes


def trained_as(config, wall_time) -> str:
  task, evaluation, optim = config["task"], config["eval"], config["optim"]
  image, omniglot = config["model"]["image"], config["data"]["omniglot"]
  steps = config["run"]["num_steps"]
  if wall_time.get("stopped_at_step"):   # stopped early for CPU time: its best checkpoint
    steps = f"{wall_time['stopped_at_step']} (stopped; of {steps})"
  text = f"{task['n_way']}-way {task['k_shot']}-shot, {steps} steps"
  if evaluation["n_way"] or evaluation["k_shot"]:
    text += (f", validated {evaluation['n_way'] or task['n_way']}-way "
             f"{evaluation['k_shot'] or task['k_shot']}-shot")
  if inner_loop(config):
    text += f", inner lr {config['inner']['lr']}"
  if config["run"]["val_episodes"] == 0:
    held_out = omniglot["val_alphabets"] or omniglot["test_alphabets"]
    text += ", no validation" + ("" if held_out else ", all 8 alphabets")
  if optim["schedule"] == "step":
    text += f", lr x{optim['decay_factor']} every {optim['decay_every']} steps"
  elif optim["schedule"] == "cosine":
    text += ", cosine lr"
  if config["model"]["embed_dim"] == 0:
    text += ", no projection"
  if image["pool"] == "floor":
    text += ", floor pooling (64 features)"
  if omniglot["resize"] == "bilinear":
    text += ", bilinear downsampling"
  if image["init"] == "torch":
    text += ", PyTorch's init"
  if config["seed"]:
    text += f", seed {config['seed']}"
  return text + (", zero head" if config["learner"]["zero_head"] else "")


def test_steps(config, result) -> str:
  """The inner steps at test time ('-' for learners without an inner loop); evaluations
  written before eval.json recorded them used the config's."""
  if not inner_loop(config):
    return "-"
  steps = result["settings"].get("inner_steps")
  return str(steps or config["inner"]["eval_steps"] or config["inner"]["steps"])


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
        print(f"| {label} | {trained_as(config, wall_time)} | {setting} | "
              f"{test_steps(config, r)} | {accuracy_cell(r)} | "
              f"{published_cell(published, source, setting)} | {r['settings']['episodes']} | "
              f"{wall(wall_time)} |")
  print()
  print("| method | trained | test inner steps | test batch norm | 20 one-shot runs of Lake et "
        "al. % | error % |")
  print("| --- | --- | --- | --- | --- | --- |")
  for run, method, config, wall_time in runs():
    for r in evaluations(run, "runs"):
      norm = r["settings"].get("batch_norm", config["learner"]["batch_norm"])
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
