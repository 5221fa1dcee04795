"""The package's top level: explicit names (in __init__.pyi) that load on first use, and
`import mmfsl_jax` stays light."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import mmfsl_jax

STUB = Path(mmfsl_jax.__file__).with_name("__init__.pyi")


def stub_exports() -> dict[str, tuple[str, str]]:
  """name -> (module, attribute) of every `from .module import attribute as name` in the stub."""
  exports = {}
  for node in ast.parse(STUB.read_text()).body:
    if isinstance(node, ast.ImportFrom):
      module = "mmfsl_jax" + ("." + node.module if node.module else "")
      for alias in node.names:
        exports[alias.asname or alias.name] = (module, alias.name)
  return exports


def test_importing_the_package_and_the_cli_loads_no_jax():
  # The `mmfsl` command restarts itself before doing anything (run/host_memory.py); that costs
  # little only while importing mmfsl_jax.cli loads neither jax nor flax.
  code = "import sys, mmfsl_jax.cli; print(sorted({'jax', 'flax'} & set(sys.modules)))"
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "[]"


def test_the_stub_lists_every_exported_name():
  assert sorted(stub_exports()) == sorted(mmfsl_jax.__all__)
  assert len(mmfsl_jax.__all__) > 20


@pytest.mark.parametrize("name", sorted(stub_exports()))
def test_every_exported_name_is_the_defining_modules(name):
  module, attribute = stub_exports()[name]
  home = importlib.import_module(module)
  expected = getattr(home, attribute, None)
  if expected is None:   # `from . import data`: the subpackage itself
    expected = importlib.import_module(f"{module}.{attribute}")
  assert getattr(mmfsl_jax, name) is expected
  assert name in dir(mmfsl_jax)


def test_subpackages_load_on_first_use_and_unknown_names_fail():
  assert mmfsl_jax.data.ClassDataset is mmfsl_jax.ClassDataset
  with pytest.raises(AttributeError, match="no_such_name"):
    _ = mmfsl_jax.no_such_name
  with pytest.raises(AttributeError):
    _ = mmfsl_jax.__no_such_dunder__


def test_the_files_an_installed_package_needs_are_package_data():
  # A wheel holds the package's modules and only the other files pyproject.toml names:
  # the stub the names load from and the peer scripts `mmfsl bench --peer-python` runs.
  import tomllib
  from mmfsl_jax.bench import runner
  root = Path(mmfsl_jax.__file__).parents[1]
  globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
      "package-data"]
  shipped = {path for package, patterns in globs.items() for pattern in patterns
             for path in (root / package.replace(".", "/")).glob(pattern)}
  needed = {STUB, runner.BENCH_SCRIPTS / "torch_on_device.py",
            runner.BENCH_SCRIPTS / "torch_peer_extra.py"}
  assert all(path.is_file() for path in needed)
  assert needed <= shipped
  assert runner.BENCH_SCRIPTS.is_relative_to(Path(mmfsl_jax.__file__).parent)
