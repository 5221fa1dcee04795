import jax
import pytest

_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                  "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent JAX compilation cache for the whole session (and its subprocesses).

  Many tests build the same tiny models; with the cache each program compiles once. Yields
  the environment variables that give a subprocess the same cache.
  """
  from jax.experimental.compilation_cache import compilation_cache as cc
  path = str(tmp_path_factory.mktemp("jax_cache"))
  previous = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
  for name, value in zip(_CACHE_OPTIONS, (path, 0.0, -1)):
    jax.config.update(name, value)
  cc.reset_cache()  # the cache is set up at the first compile; make it see the new dir
  yield {"JAX_COMPILATION_CACHE_DIR": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
  for name, value in previous.items():
    jax.config.update(name, value)
  cc.reset_cache()
