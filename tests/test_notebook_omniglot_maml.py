"""notebooks/omniglot_maml.ipynb in a fresh kernel at the small size, on the real Omniglot zips:
every method trained (falling, finite losses), its curves and comparison shown, its 5-way
1-shot accuracy above chance and equal to the eval file it wrote, and the one-shot runs
scored above chance."""
import json
import re

import pytest

from notebooks import accuracy_rows, check_plots_shown, check_training, printed_lines, run_notebook
from omniglot_data import DATA_DIR, needs_data

METHODS = ("maml", "fomaml", "anil", "protonet_20way")


@pytest.mark.slow
@needs_data
def test_omniglot_notebook_trains_the_maml_family_and_scores_the_runs(tmp_path, monkeypatch):
  monkeypatch.setenv("MMFSL_OMNIGLOT_DIR", str(DATA_DIR))
  cells = run_notebook("omniglot_maml.ipynb", tmp_path)
  check_plots_shown(cells)
  text = "\n".join(printed_lines(cells))
  assert "train: 652 classes, 13040 drawings" in text   # 163 characters x 4 rotations x 20

  rows = accuracy_rows(cells)
  assert list(rows) == list(METHODS)
  for name, (mean, ci95) in rows.items():
    check_training(tmp_path / "runs" / name, steps=40)
    assert mean - ci95 > 100 / 5, (name, mean, ci95)   # above 5-way chance
    written = json.loads((tmp_path / "runs" / name / "eval_5w1s.json").read_text())
    assert written["settings"]["n_way"] == 5 and written["settings"]["k_shot"] == 1
    assert mean == pytest.approx(100 * written["accuracy"]["mean"], abs=0.051), name

  runs = re.search(r"one-shot runs \(protonet_20way, 20-way\): (\S+) % correct, error rate "
                   r"(\S+) %", text)
  written = json.loads((tmp_path / "runs" / "protonet_20way" / "eval.json").read_text())
  assert written["benchmark"] == "omniglot-runs" and len(written["per_run"]) == 20
  assert float(runs[1]) == pytest.approx(100 * written["accuracy"], abs=0.051)
  assert float(runs[1]) + float(runs[2]) == pytest.approx(100.0, abs=0.11)
  assert float(runs[1]) > 2 * 100 / 20   # well above 20-way chance after 40 steps
