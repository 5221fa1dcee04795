"""Executing a notebook as a user would: a fresh Jupyter kernel (nbclient), its cells in order,
in a directory of the test's own, at the small size (MMFSL_NOTEBOOK_SMALL=1); and reading back
what each code cell printed and displayed."""
from __future__ import annotations

import base64
import dataclasses
import io
import os
from pathlib import Path
import re

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# "image+text: 40.8 ± 4.6 %", the rows every notebook prints its accuracies as
ACCURACY_ROW = re.compile(r"^ *([\w+ .-]+): (\S+) ± (\S+) %$")


@dataclasses.dataclass
class CellOutput:
  source: str
  stdout: str
  stderr: str
  images: list   # PIL images of the cell's image/png outputs


def run_notebook(name: str, workdir: Path, timeout: int = 600) -> list[CellOutput]:
  """Runs notebooks/`name` in a new kernel with `workdir` as its working directory; one
  CellOutput per code cell. A cell that raises fails the call with its traceback."""
  import nbclient
  import nbformat
  from PIL import Image

  notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
  stored = [o for c in notebook.cells for o in c.get("outputs", [])]
  assert not [o for o in stored if o["output_type"] == "error"], f"{name} stores an error"
  client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                   resources={"metadata": {"path": str(workdir)}})
  previous = os.environ.get("MMFSL_NOTEBOOK_SMALL")
  os.environ["MMFSL_NOTEBOOK_SMALL"] = "1"   # the kernel inherits this process's environment
  try:
    client.execute()
  finally:
    if previous is None:
      del os.environ["MMFSL_NOTEBOOK_SMALL"]
    else:
      os.environ["MMFSL_NOTEBOOK_SMALL"] = previous
  cells = []
  for cell in notebook.cells:
    if cell.cell_type != "code":
      continue
    streams = {"stdout": "", "stderr": ""}
    images = []
    for output in cell.outputs:
      if output.output_type == "stream":
        streams[output.name] += output.text
      elif "image/png" in output.get("data", {}):
        images.append(Image.open(io.BytesIO(base64.b64decode(output.data["image/png"]))))
    cells.append(CellOutput(cell.source, streams["stdout"], streams["stderr"], images))
  return cells


def printed_lines(cells: list[CellOutput]) -> list[str]:
  return [line for cell in cells for line in cell.stdout.splitlines()]


def accuracy_rows(cells: list[CellOutput]) -> dict[str, tuple[float, float]]:
  """{row name: (mean %, 95% CI %)} of the accuracy rows printed, in order."""
  rows = {}
  for line in printed_lines(cells):
    match = ACCURACY_ROW.match(line)
    if match:
      assert match[1].strip() not in rows, f"accuracy row {match[1]!r} printed twice"
      rows[match[1].strip()] = (float(match[2]), float(match[3]))
  return rows


def check_plots_shown(cells: list[CellOutput]) -> None:
  """Every cell that draws (calls a plot_* function) shows at least one non-blank image."""
  for i, cell in enumerate(cells):
    if re.search(r"\bplot_\w+\(", cell.source):
      assert cell.images, f"code cell {i} draws but shows no image"
      for image in cell.images:
        extrema = image.convert("L").getextrema()
        assert image.width > 200 and extrema[0] < extrema[1], f"code cell {i}: blank image"


def check_training(workdir: Path, steps: int) -> None:
  """The run in `workdir` logged up to `steps`, with finite losses that fell."""
  import numpy as np

  from mmfsl_jax.plot.records import read_curves
  curves = read_curves(workdir)
  assert curves.steps[-1] == steps, (workdir, curves.steps)
  assert np.isfinite(curves.loss).all() and (curves.loss > 0).all(), (workdir, curves.loss)
  assert curves.loss[-1] < curves.loss[0], (workdir, curves.loss)
  assert len(curves.val_steps) >= 2, workdir
