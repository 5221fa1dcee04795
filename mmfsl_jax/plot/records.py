"""The files a workdir holds, read back for plotting."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from mmfsl_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class TrainingCurves:
  """One run's metrics.jsonl as arrays (train records every run.log_every steps, validation
  records every run.eval_every steps)."""
  name: str
  steps: np.ndarray              # int [T]
  seconds: np.ndarray            # float [T], wall time since the run's first step (resumes added)
  loss: np.ndarray               # float [T]
  accuracy: np.ndarray           # float [T]
  learning_rate: np.ndarray | None   # float [T], where the records carry it
  val_steps: np.ndarray          # int [V]
  val_seconds: np.ndarray        # float [V], the wall time of the train record at that step
  val_accuracy: np.ndarray       # float [V], mean over validation episodes
  val_ci95: np.ndarray           # float [V]


def _lines(path: Path) -> list[dict]:
  records = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except ValueError:
      continue   # a line cut short by a kill (training drops it on resume)
    if isinstance(record, dict) and isinstance(record.get("step"), int):
      records.append(record)
  return records


def read_curves(workdir, name: str | None = None) -> TrainingCurves:
  """The training curves of `workdir` (its metrics.jsonl); UserError when it has none."""
  workdir = Path(workdir)
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    raise UserError(f"{workdir} has no metrics.jsonl: it is not a training workdir, or its run "
                    f"has not logged yet (run `mmfsl train --workdir {workdir}`)")
  records = _lines(path)
  train = [r for r in records if r.get("split") == "train" and r.get("loss") is not None]
  val = [r for r in records if r.get("split") == "val"]
  if not train:
    raise UserError(f"{path} holds no training records yet; plot it once the run has logged "
                    f"(every run.log_every steps)")
  seconds, offset, last = [], 0.0, 0.0
  for r in train:   # "time" restarts at 0 when a run resumes: add the segments up
    t = float(r.get("time", 0.0))
    if t < last:
      offset += last
    seconds.append(offset + t)
    last = t
  at_step = dict(zip((r["step"] for r in train), seconds))
  rates = [r.get("learning_rate") for r in train]
  return TrainingCurves(
      name=name or workdir.name,
      steps=np.asarray([r["step"] for r in train]), seconds=np.asarray(seconds),
      loss=np.asarray([r["loss"] for r in train], float),
      accuracy=np.asarray([r["accuracy"] for r in train], float),
      learning_rate=None if any(v is None for v in rates) else np.asarray(rates, float),
      val_steps=np.asarray([r["step"] for r in val], int),
      val_seconds=np.asarray([at_step.get(r["step"], np.nan) for r in val], float),
      val_accuracy=np.asarray([r["accuracy"]["mean"] for r in val], float),
      val_ci95=np.asarray([r["accuracy"]["ci95"] for r in val], float))


METRICS = ("accuracy", "macro_recall", "macro_f1")


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """One eval JSON file (`mmfsl eval`): each metric's mean and 95% CI, and its settings."""
  path: Path
  means: dict[str, float]
  ci95: dict[str, float]
  settings: dict


def read_evaluation(path) -> Evaluation:
  path = Path(path)
  if not path.is_file():
    raise UserError(f"no evaluation file {str(path)!r}: `mmfsl eval --workdir DIR` writes "
                    f"DIR/eval.json")
  try:
    data = json.loads(path.read_text())
    means = {m: float(data[m]["mean"]) for m in METRICS}
    ci95 = {m: float(data[m]["ci95"]) for m in METRICS}
  except (ValueError, KeyError, TypeError) as error:
    raise UserError(f"{str(path)!r} is not an evaluation file of `mmfsl eval` ({error!r} "
                    f"missing or unreadable)") from None
  return Evaluation(path, means, ci95, dict(data.get("settings", {})))


@dataclasses.dataclass(frozen=True)
class ShotCurve:
  """One model's evaluations at several shots (`mmfsl eval --shots`), or at one (a plain
  eval file): point i is n_way[i]-way k_shot[i]-shot, its metrics' means and 95% CIs."""
  path: Path
  n_way: np.ndarray                  # int [P]
  k_shot: np.ndarray                 # int [P]
  means: dict[str, np.ndarray]       # metric -> float [P]
  ci95: dict[str, np.ndarray]        # metric -> float [P]
  settings: dict


def read_shots(path) -> ShotCurve:
  """The points of an `mmfsl eval --shots` file, or the one point of a plain eval file."""
  path = Path(path)
  if not path.is_file():
    raise UserError(f"no evaluation file {str(path)!r}: `mmfsl eval --workdir DIR --shots "
                    f"1,5` writes DIR/eval_shots.json")
  try:
    data = json.loads(path.read_text())
  except ValueError:
    data = None
  if isinstance(data, dict) and "results" in data:
    rows, settings = data["results"], dict(data.get("settings", {}))
  else:
    single = read_evaluation(path)
    rows = [{**{m: {"mean": single.means[m], "ci95": single.ci95[m]} for m in METRICS},
             "n_way": single.settings.get("n_way"), "k_shot": single.settings.get("k_shot")}]
    settings = single.settings
  try:
    n_way = np.asarray([int(r["n_way"]) for r in rows])
    k_shot = np.asarray([int(r["k_shot"]) for r in rows])
    means = {m: np.asarray([float(r[m]["mean"]) for r in rows]) for m in METRICS}
    ci95 = {m: np.asarray([float(r[m]["ci95"]) for r in rows]) for m in METRICS}
  except (KeyError, TypeError, ValueError) as error:
    raise UserError(f"{str(path)!r}: a result without its way, shot or metrics ({error!r}); "
                    f"it is not a file of `mmfsl eval`") from None
  if not len(rows):
    raise UserError(f"{str(path)!r} holds no results")
  return ShotCurve(path, n_way, k_shot, means, ci95, settings)
