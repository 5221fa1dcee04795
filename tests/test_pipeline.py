import threading

import pytest

from mmfsl_jax.data.pipeline import prefetch


def test_prefetch_yields_in_order_from_another_thread():
  threads = []
  def make(i):
    threads.append(threading.get_ident())
    return {"i": i}
  out = list(prefetch(make, 3, 8, size=2))
  assert [i for i, _ in out] == [3, 4, 5, 6, 7] and [b["i"] for _, b in out] == [3, 4, 5, 6, 7]
  assert threading.get_ident() not in threads


def test_prefetch_reraises_producer_errors():
  def make(i):
    if i == 2:
      raise RuntimeError("bad batch 2")
    return i
  got = []
  with pytest.raises(RuntimeError, match="bad batch 2"):
    for i, _ in prefetch(make, 0, 5):
      got.append(i)
  assert got == [0, 1]


def test_prefetch_stops_when_consumer_stops():
  calls = []
  it = prefetch(lambda i: calls.append(i) or i, 0, 10_000, size=2)
  next(it)
  it.close()
  assert len(calls) < 50
