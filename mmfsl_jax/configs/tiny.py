"""A few-second run for tests and first checks: small shapes data, small Conv4, few steps."""
import ml_collections

from mmfsl_jax.configs.base import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.data.shapes.update(examples_per_class=12, classes_per_split=(10, 6, 6), image_size=16)
  config.model.image.channels = 8
  config.model.update(embed_dim=16)
  config.model.text.dim = 16
  config.task.update(q_query=3, meta_batch=2)
  config.run.update(num_steps=6, log_every=2, eval_every=3, checkpoint_every=3, val_episodes=4)
  config.eval.update(episodes=10, q_query=3)
  return config
