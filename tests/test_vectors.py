"""Vector cells of manifests (data/sources/vectors.py) and modality kinds (data/modalities.py)."""
from __future__ import annotations

import numpy as np
import pytest

from mmfsl_jax.data.modalities import modality_kind, of_kind
from mmfsl_jax.data.sources.vectors import read_vector, read_vectors
from mmfsl_jax.errors import UserError


def test_kinds_of_modality_names():
  assert [modality_kind(m) for m in ("image", "image_ct", "text_note", "vector", "vector_labs")
          ] == ["image", "image", "text", "vector", "vector"]
  assert of_kind(("image", "text", "image_side", "vector_x"), "image") == ("image", "image_side")
  for bad in ("audio", "images", "image_", "ct_image"):
    with pytest.raises(UserError, match="has no kind"):
      modality_kind(bad)


def test_vector_cells_in_every_form(tmp_path):
  np.save(tmp_path / "a.npy", np.asarray([1.5, -2.0, 3.0]))
  np.save(tmp_path / "row.npy", np.asarray([[1.5, -2.0, 3.0]]))
  want = np.asarray([1.5, -2.0, 3.0], np.float32)
  for cell in ("1.5 -2 3", "1.5,-2,3", " 1.5; -2 ;3 ", "[1.5, -2, 3]", [1.5, -2, 3], "a.npy",
               "row.npy", str(tmp_path / "a.npy")):
    got = read_vector(cell, tmp_path, "row 1")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
  stacked = read_vectors(["1 2", "[3, 4]"], tmp_path, ["row 1", "row 2"], "labs")
  np.testing.assert_array_equal(stacked, [[1, 2], [3, 4]])


def test_vector_errors_name_the_row(tmp_path):
  np.save(tmp_path / "matrix.npy", np.zeros((2, 3)))
  (tmp_path / "broken.npy").write_bytes(b"not numpy")
  cases = {"1 x 3": "cannot read the vector", "1 nan 3": "NaN or infinite",
           "[1, [2]]": "not numbers|one non-empty row", "gone.npy": "does not exist",
           "matrix.npy": "one non-empty row", "broken.npy": "cannot read vector file",
           "[]": "one non-empty row"}
  for cell, message in cases.items():
    with pytest.raises(UserError, match=f"row 7.*({message})"):
      read_vector(cell, tmp_path, "row 7")
  with pytest.raises(UserError, match="row 2: the vector of column 'labs' has 3 values, but "
                                      "the first row's has 2"):
    read_vectors(["1 2", "1 2 3"], tmp_path, ["row 1", "row 2"], "labs")
