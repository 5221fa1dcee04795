"""Task batches prepared ahead in a background thread, so the meta-step never waits on numpy."""
from __future__ import annotations

from collections.abc import Callable, Iterator
import queue
import threading

_DONE = object()


def prefetch(make_batch: Callable[[int], dict], start: int, stop: int,
             size: int = 2) -> Iterator[tuple[int, dict]]:
  """Yields (index, make_batch(index)) for index in [start, stop), `size` batches ahead.

  An exception in the producer is re-raised in the consumer; closing the iterator early
  stops the producer.
  """
  buffer: queue.Queue = queue.Queue(maxsize=size)
  stopped = threading.Event()

  def produce():
    try:
      for index in range(start, stop):
        item = (index, make_batch(index))
        while not stopped.is_set():
          try:
            buffer.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stopped.is_set():
          return
      buffer.put(_DONE)
    except BaseException as error:  # handed to the consumer, which re-raises it
      buffer.put(error)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = buffer.get()
      if item is _DONE:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stopped.set()
