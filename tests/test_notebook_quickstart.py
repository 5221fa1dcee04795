"""notebooks/quickstart.ipynb in a fresh kernel at the small size: finite training losses that
fall, and accuracies of the meta-test evaluation that are real percentages, well above chance
and above the same model's before meta-training."""
import ast
import math
import re

import pytest

from notebooks import accuracy_rows, printed_lines, run_notebook

# A training log line: "30 {'accuracy': 0.55, ..., 'loss': 1.069, ...}"
TRAIN_LINE = re.compile(r"^(\d+) (\{.*\})$")
WAY = 5
# The fused row is above chance by MARGIN points and above the untrained model by LEARNED
# (random encoders of the captions are well above chance already).
MARGIN, LEARNED = 10.0, 5.0


@pytest.mark.slow
def test_quickstart_learns_and_prints_its_accuracies(tmp_path):
  cells = run_notebook("quickstart.ipynb", tmp_path)
  for i, cell in enumerate(cells):
    assert "Traceback" not in cell.stderr, f"code cell {i}: {cell.stderr[-2000:]}"
  lines = printed_lines(cells)

  logged = [(int(m[1]), ast.literal_eval(m[2])) for m in map(TRAIN_LINE.match, lines) if m]
  steps = [s for s, _ in logged]
  assert len(logged) == 5 and steps == sorted(set(steps)) and steps[-1] == 30
  for _, metrics in logged:
    assert math.isfinite(metrics["loss"]) and 0 < metrics["loss"] < 20, metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0, metrics
  assert logged[-1][1]["loss"] < logged[0][1]["loss"]

  rows = accuracy_rows(cells)
  assert list(rows) == ["untrained image+text", "image+text", "image", "text"]
  chance = 100.0 / WAY
  for name, (mean, ci95) in rows.items():
    assert 0.0 <= mean <= 100.0 and 0.0 < ci95 < 50.0, (name, mean, ci95)
    if name != "untrained image+text":
      assert mean - ci95 > chance, (name, mean, ci95)
  assert rows["image+text"][0] >= chance + MARGIN, rows
  assert rows["image+text"][0] >= rows["untrained image+text"][0] + LEARNED, rows
