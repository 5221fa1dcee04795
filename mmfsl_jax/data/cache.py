"""A disk cache of decoded arrays (one .npz file a dataset version), shared by the sources.

    path = cache_path(cache_dir, "omniglot_background_28px_box", [version, file stats, ...])
    arrays = cached_arrays(path, keys, build)   # stored arrays, or build()'s (then stored)

The file name carries a digest of everything the arrays depend on (the source files' names,
sizes and modification times, the decoding settings), so a changed source or setting gets a
new file; writes go to a temporary name and are renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import warnings
from collections.abc import Callable, Sequence

import numpy as np


def default_cache_dir() -> pathlib.Path:
  """$XDG_CACHE_HOME/mmfsl_jax, else ~/.cache/mmfsl_jax."""
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "mmfsl_jax"


def file_stats(paths: Sequence[pathlib.Path]) -> list[tuple[str, int, int]]:
  """(name, size, mtime_ns) of each file: what a cache key says of its source files."""
  return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def cache_path(cache_dir, stem: str, key: Sequence) -> pathlib.Path:
  """`<cache_dir or default_cache_dir()>/<stem>_<digest of key>.npz` (key: JSON-able)."""
  digest = hashlib.sha1(json.dumps(list(key)).encode()).hexdigest()[:16]
  directory = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  return directory / f"{stem}_{digest}.npz"


def cached_arrays(cache_file: pathlib.Path, keys: Sequence[str],
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """The arrays in `cache_file`, or `build()`'s (then stored there; failures only warn)."""
  try:
    with np.load(cache_file, allow_pickle=False) as stored:
      return {key: stored[key] for key in keys}
  except Exception:  # missing, truncated or foreign: rebuild it
    pass
  arrays = build()
  temp = None
  try:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_file.parent, suffix=".tmp", delete=False) as f:
      temp = pathlib.Path(f.name)
      np.savez(f, **arrays)
    os.replace(temp, cache_file)
  except OSError as error:
    warnings.warn(f"could not write the cache {str(cache_file)!r}: {error}", stacklevel=2)
    if temp is not None:
      temp.unlink(missing_ok=True)
  return arrays
