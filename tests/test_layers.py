"""The layers import only downwards, and only run/ reads a config.

    core  <-  nn  <-  meta            data (on its own)            run, bench, cli (on top)
"""
import ast
from pathlib import Path

import pytest

import mmfsl_jax

PACKAGE = Path(mmfsl_jax.__file__).parent
# Layer -> the mmfsl_jax layers its modules may import (besides itself and errors.py).
ALLOWED = {
    "core": set(),
    "nn": {"core"},
    "meta": {"core", "nn"},
    "data": set(),
}
CONFIG_MODULES = ("ml_collections", "mmfsl_jax.configs", "mmfsl_jax.run")


def modules(layer: str) -> list[Path]:
  return sorted((PACKAGE / layer).rglob("*.py"))


def imported(path: Path) -> set[str]:
  """Every module an import statement of `path` names (at any depth of the file)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module)
  return names


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
  assert modules(layer)
  for path in modules(layer):
    for name in imported(path):
      parts = name.split(".")
      if parts[0] != "mmfsl_jax" or name == "mmfsl_jax.errors":
        continue
      other = parts[1] if len(parts) > 1 else ""
      assert other in ALLOWED[layer] | {layer}, f"{path.relative_to(PACKAGE)} imports {name}"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_module_below_run_reads_a_config(layer):
  for path in modules(layer):
    tree = ast.parse(path.read_text())
    for name in imported(path):
      assert not name.startswith(CONFIG_MODULES), f"{path.relative_to(PACKAGE)} imports {name}"
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.Lambda)):
        arguments = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
        assert "config" not in {a.arg for a in arguments}, (
            f"{path.relative_to(PACKAGE)}: a function takes a config")


def test_the_checker_sees_a_forbidden_import(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  from mmfsl_jax.run import build\n")
  assert "mmfsl_jax.run" in imported(bad)
