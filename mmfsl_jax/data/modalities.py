"""Modality names and their kinds.

A modality is named by its kind, "image", "text" or "vector", alone or followed by "_" and a
name of the user's own: "image", "image_ct", "text_note", "vector_labs". The kind says how
its data are read and encoded (images: float [n, H, W, C] through a CNN; text: raw strings,
then word ids or pretrained features; vectors: float [n, F] through an MLP); the name keeps
two modalities of one kind apart (each gets its own encoder).
"""
from __future__ import annotations

from mmfsl_jax.errors import UserError

KINDS = ("image", "text", "vector")


def kind_of(name: str) -> str | None:
  """The kind of modality `name` ("image_ct" -> "image"), None for a name of no kind."""
  return next((kind for kind in KINDS if name == kind
               or (name.startswith(kind + "_") and len(name) > len(kind) + 1)), None)


def modality_kind(name: str) -> str:
  """The kind of modality `name`; UserError for a name of no kind."""
  kind = kind_of(name)
  if kind is None:
    raise UserError(f"modality {name!r} has no kind: name a modality image, text or vector, "
                    f"or one of those followed by _<your name> (e.g. image_ct, text_note, "
                    f"vector_labs)")
  return kind


def of_kind(modalities, kind: str) -> tuple[str, ...]:
  """The modalities of one kind, in their order."""
  return tuple(m for m in modalities if modality_kind(m) == kind)
