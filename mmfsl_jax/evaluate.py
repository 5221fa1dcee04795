"""Evaluation over many episodes: accuracy, macro recall, macro F1 with 95% intervals."""
from __future__ import annotations

import math

import jax
import numpy as np

from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.metrics import episode_metrics, summarise


def make_batched_predict(learner: MetaLearner):
  """jit(vmap(predict)): (params, task batch) -> logits [B, N*Q, N]. Build once, reuse."""
  return jax.jit(jax.vmap(lambda p, t: learner.predict(p, t, None), in_axes=(None, 0)))


def evaluate_episodes(predict, params, sampler: EpisodeSampler, num_episodes: int) -> dict:
  """Summary over `num_episodes` tasks from `sampler` (its batch size is the chunk size).

  `predict` comes from `make_batched_predict`. Episode i is the same task for a given
  sampler seed whatever the chunk size, so results do not depend on it.
  """
  per_episode = []
  for chunk in range(math.ceil(num_episodes / sampler.batch_size)):
    batch = sampler.sample(chunk)
    logits = np.asarray(predict(params, batch))
    labels = batch["query"]["label"]
    for i in range(len(labels)):
      if len(per_episode) < num_episodes:
        per_episode.append(episode_metrics(logits[i].argmax(-1), labels[i], sampler.n_way))
  return summarise(per_episode)


def evaluate_workdir(workdir, *, episodes: int | None = None, q_query: int | None = None,
                     seed: int | None = None, write: bool = True) -> dict:
  """Evaluates the best checkpoint of a training workdir on meta-test tasks.

  Writes workdir/eval.json: accuracy, macro recall and macro F1 (mean, 95% CI, n) and the
  settings used.
  """
  import json
  import time
  from pathlib import Path

  from mmfsl_jax import config as config_lib
  from mmfsl_jax.checkpoint import Checkpoints
  from mmfsl_jax.data.prepare import prepare_splits
  from mmfsl_jax.errors import CheckpointError
  from mmfsl_jax.factory import build_learner, build_model, build_optimizer
  from mmfsl_jax.meta.step import init_train_state

  workdir = Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise CheckpointError(f"{workdir} has no config.json: it is not a training workdir "
                          f"(run `mmfsl train --workdir {workdir}` first)")
  config = config_lib.config_from_dict(json.loads(config_path.read_text()))
  episodes = config.eval_episodes if episodes is None else episodes
  q_query = config.eval_q_query if q_query is None else q_query
  seed = config.eval_seed if seed is None else seed
  if episodes < 1 or q_query < 1:
    raise CheckpointError(f"episodes and q_query must be positive, got {episodes}, {q_query}")
  if not Checkpoints.exist(workdir):
    raise CheckpointError(f"no checkpoint in {workdir}: run `mmfsl train --workdir {workdir}` "
                          f"first (or let it reach its first checkpoint)")
  t0 = time.time()
  splits, text_info = prepare_splits(config)
  model = build_model(config, text_info, splits["train"])
  learner = build_learner(config, model, for_eval=True)
  test = EpisodeSampler(splits["test"], n_way=config.n_way, k_shot=config.k_shot,
                        q_query=q_query, batch_size=min(config.eval_batch, episodes), seed=seed,
                        split_name="test")
  example = jax.tree_util.tree_map(lambda x: x[0], test.sample(0))
  like = init_train_state(learner, build_optimizer(config), example, config.seed)
  checkpoints = Checkpoints(workdir, create=False)
  try:
    state = checkpoints.restore_best(like)
  finally:
    checkpoints.close()
  summary = evaluate_episodes(make_batched_predict(learner), state.params, test, episodes)
  result = {**summary, "settings": {
      "checkpoint_step": int(state.step), "split": "test", "episodes": episodes,
      "n_way": config.n_way, "k_shot": config.k_shot, "q_query": q_query, "seed": seed,
      "method": config.method, "modalities": list(config.modalities), "fuser": config.fuser,
      "dataset": config.dataset, "seconds": round(time.time() - t0, 2)}}
  if write:
    (workdir / "eval.json").write_text(json.dumps(result, indent=2))
  return result
