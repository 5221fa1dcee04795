"""What every evaluator of a workdir does before scoring: the test-time config, the checks
of its options, the learner's restored state and test-time batch-norm moments."""
from __future__ import annotations

from mmfsl_jax.data.modalities import of_kind
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.registry import METHODS, names_with
from mmfsl_jax.nn.encoders.batch_norm import Moments
from mmfsl_jax.run import build
from mmfsl_jax.run.evaluators.population_norm import estimate_population_moments
from mmfsl_jax.run.workdir import workdir_config

# Test-time batch norm: as in training (learner.batch_norm: each task's own statistics), or
# the training population's moments (population_norm.py; PyTorch's model.eval()).
TEST_BATCH_NORM = ("trained", "population")


def check_test_batch_norm(batch_norm: str, population_batches: int) -> None:
  if batch_norm not in TEST_BATCH_NORM:
    raise UserError(f"test-time batch norm {batch_norm!r} is not valid; choose one of "
                    f"{', '.join(TEST_BATCH_NORM)}")
  if batch_norm == "population" and population_batches < 1:
    raise UserError(f"--population-batches must be at least 1, got {population_batches}")


def test_time_config(workdir, *, inner_steps: int | None = None, batch_norm: str = "trained",
                     population_batches: int = 50):
  """The workdir's config with the test-time inner steps set (None keeps
  inner.eval_steps); checks the options. The evaluator checks its own options next, then
  `workdir.require_checkpoint`, so that a bad request is told so before a missing run."""
  check_test_batch_norm(batch_norm, population_batches)
  config = workdir_config(workdir)
  if inner_steps is not None:
    name = config.learner.name
    if not METHODS[name].inner_loop:
      raise UserError(f"--inner-steps applies to {', '.join(names_with('inner_loop'))}; the "
                      f"model was trained with learner.name={name}, which has no inner loop")
    if inner_steps < 1:
      raise UserError(f"--inner-steps must be at least 1, got {inner_steps}")
    config.inner.eval_steps = inner_steps
  return config


def test_time_moments(batch_norm: str, population_batches: int, config, model, params,
                      train_split, seed: int) -> tuple[dict[str, Moments] | None, str]:
  """(moments for `make_batched_predict`, a description for the settings record): None and
  the training's mode for batch_norm="trained"; else the population moments of
  `population_batches` tasks shaped as the config's training tasks."""
  if batch_norm == "trained":
    return None, config.learner.batch_norm
  sampler = build.task_sampler(config, train_split, role="population", seed=seed,
                               modalities=of_kind(config.data.modalities, "image"))
  moments = estimate_population_moments(model, params["model"], sampler,
                                         population_batches)
  task = config.task
  images = task.n_way * (task.k_shot + task.q_query)
  return moments, f"population ({population_batches} training batches of {images} images)"
