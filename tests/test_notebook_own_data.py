"""notebooks/own_data.ipynb in a fresh kernel at the small size: a manifest written, a model
trained on it, new classes predicted from one support example each (with and without
captions) above chance, the predictions file written, and its plots shown."""
import csv
import re

import pytest

from notebooks import accuracy_rows, check_plots_shown, check_training, printed_lines, run_notebook

NEW_CLASSES = 6   # the small size's test classes


@pytest.mark.slow
def test_own_data_notebook_trains_on_a_manifest_and_predicts_new_classes(tmp_path):
  cells = run_notebook("own_data.ipynb", tmp_path)
  check_plots_shown(cells)
  text = "\n".join(printed_lines(cells))
  assert "rows, columns ['image', 'text', 'label', 'split']" in text
  check_training(tmp_path / "runs" / "mine", steps=30)

  assert f"{NEW_CLASSES} support examples of {NEW_CLASSES} new classes" in text
  scored = {m[1]: (float(m[2]), int(m[3]), int(m[4])) for m in re.finditer(
      r"queries with ([a-z+]+): (\S+) % correct \((\d+)/(\d+)\)", text)}
  assert sorted(scored) == ["image", "image+text"]   # every second query had no caption
  with open(tmp_path / "predictions.csv", newline="") as f:
    predictions = list(csv.DictReader(f))
  for modalities, (percent, right, total) in scored.items():
    mine = [p for p in predictions if p["modalities"] == modalities]
    assert total == len(mine) and right == sum(p["label"] == p["predicted"] for p in mine)
    assert percent == pytest.approx(100 * right / total, abs=0.051)
    assert percent > 1.5 * 100 / NEW_CLASSES, (modalities, percent)   # above chance
  assert all(p["text"] == "" for p in predictions if p["modalities"] == "image")

  (name, (mean, ci95)), = accuracy_rows(cells).items()
  assert name == "5-way 1-shot test episodes" and mean - ci95 > 100 / 5
