"""A headless matplotlib Figure, and saving it as PNG or SVG."""
from __future__ import annotations

from pathlib import Path

from mmfsl_jax.errors import UserError

FORMATS = (".png", ".svg")


def new_figure(width: float, height: float):
  """A Figure not bound to pyplot (no display, no global state): drawn with Agg."""
  try:
    from matplotlib.figure import Figure
  except ImportError as error:
    raise UserError("plotting needs matplotlib: pip install matplotlib") from error
  return Figure(figsize=(width, height), layout="constrained")


def check_output(output) -> Path:
  path = Path(output)
  if path.suffix.lower() not in FORMATS:
    raise UserError(f"--output {str(output)!r}: give a .png or .svg file")
  return path


def save(figure, output) -> Path:
  """Writes `figure` to `output` (its suffix says PNG or SVG), whole or not at all."""
  path = check_output(output)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(f".{path.name}.partial{path.suffix}")
  figure.savefig(partial, dpi=150)
  partial.replace(path)
  return path
