"""Prototypical network on Omniglot (image only, Conv4 on 28x28x1), from the zip files.

    mmfsl train --config omniglot_protonet --workdir runs/og_proto data_dir=../shared/data/omniglot
    mmfsl eval --workdir runs/og_proto                             # 5-way 1-shot meta-test
    mmfsl eval --workdir runs/og_proto --benchmark omniglot-runs   # the 20 runs of Lake et al.

data_dir may instead come from $MMFSL_OMNIGLOT_DIR. Train on 652 classes (163 characters of 5
background alphabets, each at 0/90/180/270 degrees), validate on Early_Aramaic, test on Korean
and Tagalog (mmfsl_jax/data/sources/omniglot.py). Other settings: `k_shot=5`, `n_way=20`, or a
higher training way for the 20-way runs (Snell et al. train 60-way); `dataset=tfds_omniglot`
reads TFDS's omniglot instead. `smoke=True` shrinks it to a run of seconds.
"""
import ml_collections

from mmfsl_jax.run.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.dataset = "omniglot"
  config.modalities = ("image",)
  config.image_size = 28
  config.augment = "none"           # rotations are classes of their own
  config.image_encoder = "conv4"
  config.conv_channels = 64
  config.embed_dim = 64
  config.method = "protonet"
  config.distance = "euclidean"
  config.n_way = 5
  config.k_shot = 1
  config.q_query = 5
  config.meta_batch = 4
  config.learning_rate = 1e-3
  config.num_steps = 5000
  config.log_every = 50
  config.eval_every = 500
  config.checkpoint_every = 500
  config.val_episodes = 200
  config.eval_episodes = 600
  config.eval_q_query = 15
  return config
