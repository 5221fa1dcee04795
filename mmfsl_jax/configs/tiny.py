"""A few-second run for tests and first checks: small shapes data, small Conv4, few steps."""
import ml_collections

from mmfsl_jax.run.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.shapes.examples_per_class = 12
  config.shapes.classes_per_split = (10, 6, 6)
  config.shapes.image_size = 16
  config.conv_channels = 8
  config.embed_dim = 16
  config.text_dim = 16
  config.q_query = 3
  config.meta_batch = 2
  config.num_steps = 6
  config.log_every = 2
  config.eval_every = 3
  config.checkpoint_every = 3
  config.val_episodes = 4
  config.eval_episodes = 10
  config.eval_q_query = 3
  return config
