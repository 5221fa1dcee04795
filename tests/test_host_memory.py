"""The `mmfsl` command's restart with huge-page malloc (mmfsl_jax/run/host_memory.py)."""
import os
import subprocess
import sys

import pytest

from mmfsl_jax.run import host_memory
from mmfsl_jax.run.host_memory import environment_with_huge_page_malloc as with_huge_pages

ON = {"glibc": True, "huge_pages": True}
PRINT_TUNABLES = ("from mmfsl_jax.run.host_memory import restart_with_huge_page_malloc as r; r(); "
                  "import os; print(os.environ.get('GLIBC_TUNABLES'))")


def test_adds_the_tunable_and_keeps_everything_else():
  env = with_huge_pages({"HOME": "/h"}, **ON)
  assert env == {"HOME": "/h", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **ON)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ, where", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, ON),                      # already on
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0:x.y=1"}, ON),                # the user's choice
    ({"MMFSL_HUGE_PAGES": "0"}, ON),                                          # opted out
    ({}, {"glibc": False, "huge_pages": True}),                               # not glibc
    ({}, {"glibc": True, "huge_pages": False}),                               # THP "never"
])
def test_changes_nothing_where_it_should_not(environ, where):
  assert with_huge_pages(environ, **where) is None


@pytest.mark.parametrize("setting, available", [
    ("always [madvise] never\n", True), ("[always] madvise never\n", True),
    ("always madvise [never]\n", False)])
def test_reads_the_kernel_setting(tmp_path, setting, available):
  path = tmp_path / "enabled"
  path.write_text(setting)
  assert host_memory.transparent_huge_pages_available(path) is available
  assert not host_memory.transparent_huge_pages_available(tmp_path / "missing")


def _python(code: str, **env) -> str:
  environ = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", host_memory.OPT_OUT)}
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env={**environ, **env}, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout.strip()


def test_restart_runs_the_same_command_with_the_tunable():
  if not (host_memory._is_glibc() and host_memory.transparent_huge_pages_available()):
    pytest.skip("no glibc or no transparent huge pages on this machine: nothing to restart")
  assert _python(PRINT_TUNABLES) == "glibc.malloc.hugetlb=1"
  assert _python(PRINT_TUNABLES, MMFSL_HUGE_PAGES="0") == "None"
  kept = _python(PRINT_TUNABLES, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
  assert kept == "glibc.malloc.hugetlb=0"
