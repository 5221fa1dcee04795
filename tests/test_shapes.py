"""The built-in "shapes" benchmark: determinism, disjoint splits, the modality design."""
import numpy as np
import pytest

from mmfsl_jax.data.sources.shapes import ShapesConfig, caption, Concept, shapes_splits
from mmfsl_jax.data.text import UNK, WordVocabulary
from mmfsl_jax.errors import UserError

SMALL = ShapesConfig(examples_per_class=4, classes_per_split=(8, 4, 4), image_size=16)


@pytest.fixture(scope="module")
def splits():
  return shapes_splits(SMALL)


def test_shapes_and_ranges(splits):
  assert [splits[s].num_classes for s in ("train", "val", "test")] == [8, 4, 4]
  images = splits["train"].examples["image"]
  assert images.shape == (32, 16, 16, 3) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert len(splits["train"].examples["text"]) == 32
  assert splits["train"].class_texts["text"].shape == (8,)


def test_deterministic_in_seed(splits):
  again = shapes_splits(SMALL)
  np.testing.assert_array_equal(again["test"].examples["image"], splits["test"].examples["image"])
  assert list(again["test"].examples["text"]) == list(splits["test"].examples["text"])
  other = shapes_splits(SMALL, seed=1)
  assert not np.array_equal(other["test"].examples["image"], splits["test"].examples["image"])


def test_splits_have_disjoint_classes_and_visual_twins(splits):
  names = {s: set(splits[s].class_names) for s in splits}
  assert not names["train"] & names["val"] and not names["train"] & names["test"]
  visual = lambda name: name.split(" that ")[0]
  for ds in splits.values():
    looks = [visual(n) for n in ds.class_names]
    # every look is shared by exactly two classes of the split (differing in sound only)
    assert all(looks.count(l) == 2 for l in looks)
  assert not {visual(n) for n in names["train"]} & {visual(n) for n in names["test"]}


def test_captions_are_incomplete_but_true():
  rng = np.random.default_rng(0)
  concept = Concept("star", "red", "striped", "hums")
  captions = [caption(concept, rng, 0.5) for _ in range(200)]
  words = set(concept.describe().split())
  assert all(set(c.split()) - {"thing", "something", "a"} <= words for c in captions)
  assert sum(c == concept.describe() for c in captions) < 40  # mostly incomplete
  assert sum("hums" in c for c in captions) > 50              # the sound is often named


def test_images_differ_within_a_class(splits):
  images = splits["train"].examples["image"][:4]
  assert np.abs(images[0] - images[1]).mean() > 0.02


def test_bad_configs():
  with pytest.raises(UserError, match="even"):
    shapes_splits(SMALL, classes_per_split=(7, 4, 4))
  with pytest.raises(UserError, match="visual combinations"):
    shapes_splits(SMALL, classes_per_split=(200, 20, 20))


def test_vocabulary_unknown_words_and_padding():
  vocab = WordVocabulary.build(["a red circle", "a blue square"])
  ids = vocab.encode(["a red square", "green"], max_length=5)
  assert ids.shape == (2, 3)
  assert ids[1, 0] == UNK and ids[1, 1] == 0
  assert vocab.decode(ids[0]) == "a red square"
