"""Huge pages for the host allocator: a compiled step's fresh memory without 4 KB page faults.

XLA's CPU runtime allocates every execution's temporary buffers anew (one block, 130 MB for
the canonical Conv4 MAML step at meta-batch 8, 900 MB for a 600-image ProtoNet task) and
frees them after it. glibc's malloc serves blocks that large with a fresh `mmap` each time,
so every step first touches, and the kernel zero-fills, its memory one 4 KB page at a time:
33,000 page faults a canonical MAML step and 230,000 a 600-image ProtoNet step. With the
glibc tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent huge
pages on those blocks (`madvise(MADV_HUGEPAGE)`), and the same steps take about 160 and
3,000 faults, 2 MB each; the 600-image step ran 27-31% faster (experiments/bench/README.md).

glibc reads its tunables once, when a process starts, so the `mmfsl` command restarts itself
with the tunable set (`restart_with_huge_page_malloc`), before it imports any data or
compiles anything. Library users set it before starting Python:

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python my_script.py

Nothing changes where it cannot help (not Linux with glibc, transparent huge pages "never"),
where the tunable is already set, or where MMFSL_HUGE_PAGES=0.
"""
from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path
import sys

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "MMFSL_HUGE_PAGES"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def transparent_huge_pages_available(setting_file: Path = THP_SETTING) -> bool:
  """Whether the kernel gives transparent huge pages to memory that asks (the selected mode
  of `setting_file`, e.g. "always [madvise] never", is not "never")."""
  try:
    return "[never]" not in setting_file.read_text()
  except OSError:
    return False


def environment_with_huge_page_malloc(environ: Mapping[str, str], *, glibc: bool,
                                      huge_pages: bool) -> dict[str, str] | None:
  """`environ` with `glibc.malloc.hugetlb=1` added to GLIBC_TUNABLES, or None where nothing
  should change: not glibc, no transparent huge pages, the tunable already set (to anything:
  the user's choice stands), or MMFSL_HUGE_PAGES=0."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if (not glibc or not huge_pages or environ.get(OPT_OUT) == "0"
      or any(t.partition("=")[0] == TUNABLE for t in tunables.split(":"))):
    return None
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))}


def _is_glibc() -> bool:
  try:
    return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
  except (ValueError, OSError, AttributeError):   # not a glibc system
    return False


def restart_with_huge_page_malloc() -> None:
  """Replaces this process by the same command with the tunable set, where it helps (see
  `environment_with_huge_page_malloc`); else returns. Only for a program's entry point:
  whatever the process did before is lost."""
  environ = environment_with_huge_page_malloc(
      os.environ, glibc=_is_glibc(), huge_pages=transparent_huge_pages_available())
  if environ is not None and sys.executable:   # (an embedded interpreter has none to run)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)
