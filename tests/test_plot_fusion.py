"""`mmfsl plot fusion` and `mmfsl eval --shots` on tiny shapes runs (2 meta-steps each, one
per fuser): each figure shows the numbers of the checkpoint, computed here another way."""
from __future__ import annotations

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfsl_jax.cli import main
from mmfsl_jax.nn import fuse
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.train import train_and_evaluate

KEY = jax.random.PRNGKey(0)


def test_attention_weights_are_the_softmax_of_query_key_products():
  """By hand: tokens + modality embedding, q = W_q query, k = W_k tokens per head, softmax
  of q.k / sqrt(head_dim) over the present modalities."""
  mods = ("image", "text", "audio")
  z = {m: jax.random.normal(jax.random.fold_in(KEY, i), (4, 8)) for i, m in enumerate(mods)}
  fuser = fuse.attention(mods, heads=2)
  params = fuser.init(KEY, z)
  attention = params["MultiHeadDotProductAttention_0"]
  tokens = jnp.stack([z[m] for m in mods], 1) + params["modality_embedding"]
  project = lambda x, p: jnp.einsum("...d,dhk->...hk", x, p["kernel"]) + p["bias"]
  q = project(jnp.broadcast_to(params["query"][0], (4, 1, 8)), attention["query"])[:, 0]
  k = project(tokens, attention["key"])                               # [n, M, heads, 4]
  expected = jax.nn.softmax(jnp.einsum("nhk,nmhk->nhm", q, k) / 2.0, axis=-1)
  np.testing.assert_allclose(fuse.attention_weights(params, z, mods), expected, atol=1e-5)
  partial = fuse.attention_weights(params, {"image": z["image"], "audio": z["audio"]}, mods)
  np.testing.assert_allclose(partial[..., 1], 0.0)
  np.testing.assert_allclose(partial.sum(-1), 1.0, atol=1e-6)


def _run(root, name, **overrides):
  config = config_lib.load_config("tiny")
  config.run.update(num_steps=2, val_episodes=0, checkpoint_every=2, log_every=1)
  config_lib.apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    train_and_evaluate(config, root / name, progress=False)
  return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compilation_cache):
  root = tmp_path_factory.mktemp("fusion_runs")
  return {"weighted": _run(root, "weighted"),
          "gated": _run(root, "gated", **{"model.fuser": "gated"}),
          "attention": _run(root, "attention", **{"model.fuser": "attention"}),
          "am3": _run(root, "am3", **{"learner.name": "am3", "model.fuser": "concat"})}


@pytest.mark.slow
def test_fusion_of_each_fuser_is_its_checkpoints(runs, tmp_path):
  from mmfsl_jax.meta.am3 import class_mixing
  from mmfsl_jax.plot.embeddings import sample_examples
  from mmfsl_jax.plot.fusion import plot_fusion, read_fusion

  weighted = read_fusion(runs["weighted"])
  logits = sample_examples(runs["weighted"], classes=1, per_class=1).trained.params[
      "model"]["fuse"]["logits"]
  np.testing.assert_allclose(list(weighted.weights.values()), jax.nn.softmax(logits),
                             rtol=1e-6)
  assert weighted.how == "learned" and not np.allclose(logits, 0)   # trained off equal
  figure = plot_fusion(runs["weighted"], tmp_path / "w.png")
  bars = figure.axes[0].containers[0]
  np.testing.assert_allclose([b.get_height() for b in bars], list(weighted.weights.values()))
  assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["image", "text"]

  gated = read_fusion(runs["gated"])
  sample = sample_examples(runs["gated"], classes=50, per_class=20)
  _, aligned = sample.embed()
  params = sample.trained.params["model"]["fuse"]
  for c in range(len(sample.classes)):
    lam = jax.nn.sigmoid(jax.nn.relu(aligned["text"][sample.labels == c].mean(0)
                                     @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
                         @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"])
    np.testing.assert_allclose(gated.gate_per_class[c], lam[0], rtol=1e-5)
  assert len(gated.gate_per_class) == 6 and len(gated.gate_per_example) == len(sample.rows)
  axis = plot_fusion(runs["gated"]).axes[0]
  assert sum(p.get_height() for p in axis.containers[0].patches) == 6   # one count per class
  assert axis.get_xlabel() == "weight of image (1 - weight of text)"

  attention = read_fusion(runs["attention"])
  assert attention.attention.shape == (5 * (1 + 3), 2)        # one episode, its 2 modalities
  np.testing.assert_allclose(attention.attention.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(np.bincount(attention.attention_labels), [4] * 5)
  image = plot_fusion(runs["attention"]).axes[0].get_images()[0]
  np.testing.assert_allclose(image.get_array(), attention.attention)

  am3 = read_fusion(runs["am3"])
  assert am3.weights is not None and sum(am3.weights.values()) == pytest.approx(1.0)
  sample = sample_examples(runs["am3"], classes=50)
  model, params = sample.trained.model, sample.trained.params
  text = sample.dataset.class_texts["text"][sample.classes]
  _, lam = class_mixing(params["am3"], model.apply(params["model"], {"text": text})[1]["text"])
  np.testing.assert_allclose(am3.am3_per_class, lam[:, 0], rtol=1e-5)
  figure = plot_fusion(runs["am3"])
  assert [a.get_title() for a in figure.axes] == [
      "concat fuser: share of the kernel's norm weights", "AM3 on test classes"]


@pytest.mark.slow
def test_eval_shots_writes_one_file_equal_to_single_evaluations(runs, tmp_path):
  from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
  workdir = runs["weighted"]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert main(["eval", "--workdir", str(workdir), "--shots", "1,3", "--episodes", "4"]) == 0
    assert main(["plot", "shots", "--eval", str(workdir / "eval_shots.json"), "--output",
                 str(tmp_path / "s.png")]) == 0
  written = json.loads((workdir / "eval_shots.json").read_text())
  assert [(r["n_way"], r["k_shot"]) for r in written["results"]] == [(5, 1), (5, 3)]
  assert written["settings"]["shots"] == [1, 3] and written["settings"]["episodes"] == 4
  for row in written["results"]:
    alone = evaluate_workdir(workdir, k_shot=row["k_shot"], episodes=4, write=False)
    assert row["accuracy"] == alone["accuracy"]
  assert "5-way 3-shot      accuracy" in out.getvalue()
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    assert main(["eval", "--workdir", str(workdir), "--shots", "1,x"]) == 2
    assert main(["eval", "--workdir", str(workdir), "--ways", "5"]) == 2
    assert main(["eval", "--workdir", str(workdir), "--shots", "1", "--k-shot", "2"]) == 2
  assert "whole numbers" in err.getvalue() and "--ways goes with --shots" in err.getvalue()
