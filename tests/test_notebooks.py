"""Runs every notebook's code cells in order, at the small size (MMFSL_NOTEBOOK_SMALL=1)."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, capsys):
  monkeypatch.setenv("MMFSL_NOTEBOOK_SMALL", "1")
  cells = json.loads(path.read_text())["cells"]
  namespace = {"__name__": "__notebook__"}
  for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
    source = "".join(cell["source"])
    exec(compile(source, f"{path.name}[code cell {i}]", "exec"), namespace)
  out = capsys.readouterr().out
  assert "image+text" in out and "%" in out


def test_there_is_a_notebook():
  assert NOTEBOOKS
