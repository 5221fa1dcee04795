"""Runs every notebook's code cells in order, at the small size (MMFSL_NOTEBOOK_SMALL=1), and
checks the figures they print: finite training losses that fall, accuracies of the meta-test
evaluation that are real percentages well above chance and above the untrained model's, no
errors, a figure from each plot cell."""
import ast
import contextlib
import io
import json
import math
from pathlib import Path
import re

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _quickstart_untrained(namespace, modalities) -> float:
  """Quickstart's last evaluation (same test tasks) for `modalities`, in %, with the
  parameters before meta-training (its init_train_state, seed 0)."""
  mm, test = namespace["mm"], namespace["test"]
  sampler = mm.EpisodeSampler(test.dataset, n_way=test.n_way, k_shot=test.k_shot,
                              q_query=test.q_query, batch_size=test.batch_size, seed=test.seed,
                              modalities=modalities)
  params = mm.init_train_state(namespace["learner"], namespace["optimizer"],
                               namespace["first_task"], seed=0).params
  summary = mm.evaluate_episodes(namespace["predict"], params, sampler, namespace["episodes"])
  return 100 * summary["accuracy"]["mean"]


# What each notebook prints: its tasks' way (chance is 100 / way %), the modalities of its
# evaluation rows, in order, and how to score its first row before meta-training.
FIGURES = {"quickstart.ipynb": {"way": 5, "rows": ("image+text", "image", "text"),
                                "untrained": _quickstart_untrained}}
# A training log line, "30 {'accuracy': 0.55, ..., 'loss': 1.069, ...}", and an evaluation
# row, "image+text: 40.8 ± 4.6 %".
TRAIN_LINE = re.compile(r"^(\d+) (\{.*\})$")
ACCURACY_LINE = re.compile(r"^ *([a-z+]+): (\S+) ± (\S+) %$")
# The first (image+text) row is above chance by this many points, and above the same model
# before meta-training by LEARNED (random encoders of the captions are well above chance
# already); each row's 95% interval is above chance.
MARGIN, LEARNED = 10.0, 5.0


def _run(path: Path) -> tuple[list[dict], dict]:
  """Executes the code cells in one namespace: each cell's {"stdout", "stderr"}, the namespace."""
  cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
  namespace, outputs = {"__name__": "__notebook__"}, []
  for i, cell in enumerate(cells):
    source = "".join(cell["source"])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      exec(compile(source, f"{path.name}[code cell {i}]", "exec"), namespace)
    if re.search(r"\bplt\.|matplotlib", source):   # a plot cell must draw something
      import matplotlib.pyplot as plt
      assert plt.get_fignums(), f"{path.name} code cell {i} plots but drew no figure"
      plt.close("all")
    outputs.append({"stdout": out.getvalue(), "stderr": err.getvalue()})
  return outputs, namespace


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_its_figures_are_sensible(path, monkeypatch):
  monkeypatch.setenv("MMFSL_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  stored = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
  assert not [o for c in stored for o in c.get("outputs", []) if o["output_type"] == "error"]
  outputs, namespace = _run(path)
  assert namespace["SMALL"] is True           # the small size ran, not the full one
  for i, output in enumerate(outputs):
    assert "Traceback" not in output["stderr"], f"code cell {i}: {output['stderr'][-2000:]}"
  lines = [l for output in outputs for l in output["stdout"].splitlines()]

  # Training: the logged steps go up to the last one; losses finite and falling.
  logged = [(int(m[1]), ast.literal_eval(m[2])) for m in map(TRAIN_LINE.match, lines) if m]
  assert len(logged) >= 2
  steps = [s for s, _ in logged]
  assert steps == sorted(set(steps)) and steps[-1] == namespace["steps"]
  for _, metrics in logged:
    assert math.isfinite(metrics["loss"]) and 0 < metrics["loss"] < 20, metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0, metrics
  assert logged[-1][1]["loss"] < logged[0][1]["loss"]

  # Evaluation: one row per modality set, real percentages, well above chance.
  expected = FIGURES[path.name]
  rows = [(m[1], float(m[2]), float(m[3])) for m in map(ACCURACY_LINE.match, lines) if m]
  assert [name for name, _, _ in rows] == list(expected["rows"])
  chance = 100.0 / expected["way"]
  for name, mean, ci95 in rows:
    assert math.isfinite(mean) and math.isfinite(ci95), name
    assert 0.0 <= mean <= 100.0 and 0.0 < ci95 < 50.0, (name, mean, ci95)
    assert mean - ci95 > chance, (name, mean, ci95)
  assert rows[0][1] >= chance + MARGIN, rows[0]
  modalities = tuple(rows[0][0].split("+"))
  untrained = expected["untrained"](namespace, modalities)
  assert rows[0][1] >= untrained + LEARNED, (rows[0], untrained)
  # the last row printed is the figure the last evaluation computed
  assert rows[-1][1] == pytest.approx(100 * namespace["summary"]["accuracy"]["mean"], abs=0.051)


def test_there_is_a_notebook_and_each_says_what_it_prints():
  assert NOTEBOOKS
  assert sorted(FIGURES) == [p.name for p in NOTEBOOKS]
