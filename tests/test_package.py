"""The package's top level: its names load on first use, and `import mmfsl_jax` stays light."""
import importlib
import subprocess
import sys

import pytest

import mmfsl_jax


def test_importing_the_package_and_the_cli_loads_no_jax():
  # The `mmfsl` command restarts itself before doing anything (host_memory.py); that costs
  # little only while importing mmfsl_jax.cli loads neither jax nor flax.
  code = "import sys, mmfsl_jax.cli; print(sorted({'jax', 'flax'} & set(sys.modules)))"
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", mmfsl_jax.__all__)
def test_every_exported_name_is_the_defining_modules(name):
  value = getattr(mmfsl_jax, name)
  home = importlib.import_module(mmfsl_jax._EXPORTS[name])
  assert value is (home if home.__name__ == f"mmfsl_jax.{name}" else getattr(home, name))
  assert name in dir(mmfsl_jax)


def test_subpackages_load_on_first_use_and_unknown_names_fail():
  assert mmfsl_jax.data.ClassDataset is mmfsl_jax.ClassDataset
  with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
    mmfsl_jax.no_such_name
  with pytest.raises(AttributeError):
    mmfsl_jax.__no_such_dunder__
