"""Where the tests find the real Omniglot zips: $MMFSL_OMNIGLOT_DIR, else ../shared/data/omniglot
next to the repository. Tests that need them are marked `needs_data` and skip without them."""
from __future__ import annotations

import os
import pathlib

import pytest

from mmfsl_jax.data.sources import omniglot


def _data_dir() -> pathlib.Path | None:
  env = os.environ.get(omniglot.OMNIGLOT_ENV)
  path = pathlib.Path(env) if env else (
      pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot")
  if all((path / name).is_file() for name in omniglot.OMNIGLOT_FILES):
    return path
  return None


DATA_DIR = _data_dir()
needs_data = pytest.mark.skipif(
    DATA_DIR is None, reason=f"Omniglot zips not found: set {omniglot.OMNIGLOT_ENV} or place "
                             f"them in ../shared/data/omniglot next to the repository")
