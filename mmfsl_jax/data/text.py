"""Word-level tokenisation for the small trainable text encoders.

The vocabulary is built from meta-train texts only; words never seen there map to UNK, so
meta-test text cannot leak into the model's inputs. Id 0 is padding, 1 is UNK.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
import re

import numpy as np

PAD, UNK = 0, 1
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


class WordVocabulary:
  """Maps words to ids 2.. in order of first appearance; 0 = PAD, 1 = UNK."""

  def __init__(self, tokens: Sequence[str]):
    self.tokens = tuple(tokens)
    self._ids = {t: i + 2 for i, t in enumerate(self.tokens)}

  @classmethod
  def build(cls, texts: Iterable[str]) -> WordVocabulary:
    seen: dict[str, None] = {}
    for text in texts:
      for w in words(text):
        seen.setdefault(w, None)
    return cls(list(seen))

  @property
  def size(self) -> int:
    return len(self.tokens) + 2

  def encode(self, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
    """Token ids int32 [n, L], L = longest text (or max_length), padded with 0."""
    encoded = [[self._ids.get(w, UNK) for w in words(t)] for t in texts]
    length = max([len(e) for e in encoded] + [1])
    if max_length is not None:
      length = min(length, max_length)
    out = np.zeros((len(encoded), length), np.int32)
    for i, ids in enumerate(encoded):
      ids = ids[:length]
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids: Sequence[int]) -> str:
    return " ".join("<unk>" if i == UNK else self.tokens[i - 2] for i in ids if i != PAD)
