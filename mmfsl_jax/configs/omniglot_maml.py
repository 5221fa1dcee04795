"""MAML (second order) on Omniglot (image only, Conv4 on 28x28x1), from the zip files.

    mmfsl train --config omniglot_maml --workdir runs/omniglot_maml data_dir=../shared/data/omniglot
    mmfsl eval --workdir runs/omniglot_maml

Finn et al. 2017's Omniglot settings: 5-way, one inner step with inner_lr=0.4 in training and
three at evaluation, meta-batch 32 (8 here, for CPUs); `first_order=True` gives first-order
MAML. MAML's head has n_way outputs, so `--benchmark omniglot-runs` (20-way) needs a model
trained with n_way=20. `smoke=True` shrinks it to a run of seconds.
"""
import ml_collections

from mmfsl_jax.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.dataset = "omniglot"
  config.modalities = ("image",)
  config.image_size = 28
  config.augment = "none"
  config.image_encoder = "conv4"
  config.conv_channels = 64
  config.embed_dim = 64
  config.method = "maml"
  config.inner_steps = 1
  config.eval_inner_steps = 3
  config.inner_lr = 0.4
  config.first_order = False
  config.n_way = 5
  config.k_shot = 1
  config.q_query = 5
  config.meta_batch = 8
  config.learning_rate = 1e-3
  config.num_steps = 5000
  config.log_every = 50
  config.eval_every = 500
  config.checkpoint_every = 500
  config.val_episodes = 200
  config.eval_episodes = 600
  config.eval_q_query = 15
  return config
