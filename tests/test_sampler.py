"""Episode sampler: layout, disjointness, determinism, and clear errors for impossible asks."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmfsl_jax.data import ClassDataset, EpisodeSampler
from mmfsl_jax.errors import UserError


def make_dataset(counts=(6, 6, 6, 6, 6), with_text=True):
  labels = np.concatenate([np.full(c, i) for i, c in enumerate(counts)]).astype(np.int32)
  n = len(labels)
  ramp = np.arange(n, dtype=np.float32)[:, None, None, None]
  examples = {"image": ramp * np.ones((1, 2, 2, 1), np.float32)}
  if with_text:
    examples["text"] = np.stack([np.arange(n), labels], 1).astype(np.int32)
  return ClassDataset(examples=examples, labels=labels,
                      class_names=tuple(f"c{i}" for i in range(len(counts))),
                      class_texts={"text": np.arange(len(counts))[:, None].astype(np.int32) * 10}
                      if with_text else {})


def example_ids(split):
  return split["image"][..., 0, 0, 0].astype(int)


def test_layout_labels_and_disjointness():
  ds = make_dataset()
  batch = EpisodeSampler(ds, n_way=3, k_shot=2, q_query=3, batch_size=4, seed=0).sample(0)
  assert batch["support"]["image"].shape == (4, 6, 2, 2, 1)
  assert batch["query"]["text"].shape == (4, 9, 2)
  assert batch["class"]["text"].shape == (4, 3, 1)
  np.testing.assert_array_equal(batch["support"]["label"][0], [0, 0, 1, 1, 2, 2])
  for b in range(4):
    s_ids, q_ids = example_ids(batch["support"])[b], example_ids(batch["query"])[b]
    assert not set(s_ids) & set(q_ids)
    true_class_s = ds.labels[s_ids]
    true_class_q = ds.labels[q_ids]
    # one true class per label, the same in support, query and class-level text
    for label in range(3):
      classes = set(true_class_s[batch["support"]["label"][b] == label]) | \
                set(true_class_q[batch["query"]["label"][b] == label])
      assert len(classes) == 1
      assert batch["class"]["text"][b, label, 0] == 10 * classes.pop()
    # modalities stay paired
    np.testing.assert_array_equal(batch["support"]["text"][b][:, 0], s_ids)


def test_label_order_is_random_across_tasks():
  ds = make_dataset()
  batch = EpisodeSampler(ds, n_way=3, k_shot=1, q_query=1, batch_size=30, seed=0).sample(0)
  first_class = ds.labels[example_ids(batch["support"])[:, 0]]
  assert len(set(first_class)) > 1


def test_deterministic_and_independent_of_batch_size():
  ds = make_dataset()
  a = EpisodeSampler(ds, n_way=3, k_shot=1, q_query=2, batch_size=4, seed=7)
  b = EpisodeSampler(ds, n_way=3, k_shot=1, q_query=2, batch_size=2, seed=7)
  np.testing.assert_array_equal(a.sample(1)["query"]["image"], a.sample(1)["query"]["image"])
  np.testing.assert_array_equal(a.sample(0)["support"]["image"][2:],
                                b.sample(1)["support"]["image"])
  c = EpisodeSampler(ds, n_way=3, k_shot=1, q_query=2, batch_size=4, seed=8)
  assert not np.array_equal(a.sample(0)["support"]["image"], c.sample(0)["support"]["image"])


def test_iterating_yields_batches_0_1_2_in_order():
  sampler = EpisodeSampler(make_dataset(), n_way=3, k_shot=1, q_query=2, batch_size=2, seed=3)
  for index, batch in zip(range(3), sampler):
    np.testing.assert_array_equal(batch["support"]["image"],
                                  sampler.sample(index)["support"]["image"])


def test_classes_too_small_are_skipped_when_enough_remain():
  ds = make_dataset(counts=(2, 6, 6, 6))
  batch = EpisodeSampler(ds, n_way=3, k_shot=2, q_query=2, batch_size=20, seed=0).sample(0)
  assert 0 not in set(ds.labels[example_ids(batch["support"]).ravel()])


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_way=6, k_shot=1, q_query=1), "n_way=6 asked, but the test split has only 5 classes"),
    (dict(n_way=3, k_shot=4, q_query=3), "4 + 3 = 7 examples per class asked"),
    (dict(n_way=0, k_shot=1, q_query=1), "n_way must be at least 1"),
    (dict(n_way=2, k_shot=1, q_query=1, modalities=("audio",)), "modalities ['audio'] requested"),
])
def test_impossible_requests_fail_at_once(kwargs, message):
  with pytest.raises(UserError) as error:
    EpisodeSampler(make_dataset(), split_name="test", **kwargs)
  assert message in str(error.value)


def test_empty_modality_is_an_error():
  ds = make_dataset(with_text=False)
  ds = ds.with_modality("text", np.zeros((ds.num_examples, 0), np.int32))
  with pytest.raises(UserError, match="modality 'text' of the train split is empty"):
    EpisodeSampler(ds, n_way=2, k_shot=1, q_query=1, split_name="train")


def test_dataset_validation_messages():
  with pytest.raises(UserError, match="has 3 examples but there are 4 labels"):
    ClassDataset({"image": np.zeros((3, 1))}, np.zeros(4, np.int32), ("a",))
  with pytest.raises(UserError, match="labels must lie in 0..1"):
    ClassDataset({"image": np.zeros((2, 1))}, np.array([0, 5]), ("a", "b"))


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 8), min_size=2, max_size=7),
       n_way=st.integers(1, 7), k_shot=st.integers(1, 4), q_query=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1), index=st.integers(0, 1000))
def test_sampler_properties(counts, n_way, k_shot, q_query, seed, index):
  ds = make_dataset(tuple(counts))
  eligible = sum(c >= k_shot + q_query for c in counts)
  if n_way > len(counts) or eligible < n_way:
    with pytest.raises(UserError):
      EpisodeSampler(ds, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=seed)
    return
  sampler = EpisodeSampler(ds, n_way=n_way, k_shot=k_shot, q_query=q_query, batch_size=2, seed=seed)
  batch = sampler.sample(index)
  for b in range(2):
    s, q = example_ids(batch["support"])[b], example_ids(batch["query"])[b]
    assert len(set(s)) == len(s) == n_way * k_shot and len(set(q)) == len(q) == n_way * q_query
    assert not set(s) & set(q)
    assert len(set(ds.labels[s])) == n_way
    np.testing.assert_array_equal(np.bincount(batch["query"]["label"][b]), [q_query] * n_way)


def test_raw_strings_are_an_error():
  ds = make_dataset(with_text=False)
  ds = ds.with_modality("text", np.array(["a"] * ds.num_examples, dtype=object))
  with pytest.raises(UserError, match="holds raw strings"):
    EpisodeSampler(ds, n_way=2, k_shot=1, q_query=1)


def test_from_lists_names_the_item_with_a_different_shape():
  images = [np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), np.zeros((5, 4, 3))]
  with pytest.raises(UserError,
                     match=r"cat_2.png has shape \(5, 4, 3\), but cat_0.png has \(4, 4, 3\)"):
    ClassDataset.from_lists({"image": images}, [0, 0, 1], ("a", "b"),
                            names=["cat_0.png", "cat_1.png", "cat_2.png"])
  ds = ClassDataset.from_lists({"image": images[:2], "text": ["x", "y"]}, [0, 1], ("a", "b"))
  assert ds.examples["image"].shape == (2, 4, 4, 3) and ds.examples["text"].dtype == object
