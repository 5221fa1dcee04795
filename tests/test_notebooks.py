"""What every notebook shares, without running them (tests/test_notebook_<name>.py run each):
the same first code cell, installing from the repository pyproject.toml names; a Colab
badge in README.md; a test of its own."""
import json
from pathlib import Path
import re
import tomllib

from notebooks import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def _code_cells(path):
  return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]
          if c["cell_type"] == "code"]


def test_the_four_notebooks_are_there():
  assert [p.name for p in NOTEBOOKS] == ["omniglot_maml.ipynb", "own_data.ipynb",
                                         "quickstart.ipynb", "scale.ipynb"]


def test_every_notebook_starts_with_the_same_install_cell_from_the_repository():
  first = {p.name: _code_cells(p)[0] for p in NOTEBOOKS}
  assert len(set(first.values())) == 1, "the notebooks' first code cells differ"
  setup = next(iter(first.values()))
  assert f'REPOSITORY = "{REPOSITORY}"' in setup
  assert 'f"mmfsl_jax @ {REPOSITORY}/archive/refs/heads/main.zip"' in setup
  # it imports nothing heavy: scale.ipynb sets XLA_FLAGS after it, before JAX is imported
  assert not re.search(r"^\s*(import|from) (jax|mmfsl_jax)", setup, re.M)
  assert 'SMALL = os.environ.get("MMFSL_NOTEBOOK_SMALL", "0") == "1"' in setup


def test_readme_has_a_colab_badge_for_every_notebook():
  readme = (ROOT / "README.md").read_text()
  colab = REPOSITORY.replace("https://github.com/", "https://colab.research.google.com/github/")
  for path in NOTEBOOKS:
    link = f"{colab}/blob/main/notebooks/{path.name}"
    assert f"(https://colab.research.google.com/assets/colab-badge.svg)]({link})" in readme, link


def test_every_notebook_has_a_test_that_runs_it():
  for path in NOTEBOOKS:
    test = Path(__file__).parent / f"test_notebook_{path.stem}.py"
    assert test.is_file() and f'run_notebook("{path.name}"' in test.read_text(), path.name
