"""Prototypical network on Omniglot (image only, Conv4 on 28x28x1), from the zip files.

    mmfsl train --config omniglot_protonet --workdir runs/og_proto data.dir=../shared/data/omniglot
    mmfsl eval --workdir runs/og_proto                             # 5-way 1-shot meta-test
    mmfsl eval --workdir runs/og_proto --benchmark omniglot-runs   # the 20 runs of Lake et al.

data.dir may instead come from $MMFSL_OMNIGLOT_DIR. Train on 652 classes (163 characters of 5
background alphabets, each at 0/90/180/270 degrees), validate on Early_Aramaic, test on Korean
and Tagalog (mmfsl_jax/data/sources/omniglot.py). Other settings: `task.k_shot=5`,
`task.n_way=20`, or a higher training way for the 20-way runs (Snell et al. train 60-way);
`data.name=tfds_omniglot` reads TFDS's omniglot instead. `smoke=True` shrinks it to a run of
seconds.
"""
import ml_collections

from mmfsl_jax.configs.base import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  # No augmentation: rotations are classes of their own.
  config.data.update(name="omniglot", modalities=("image",), image_size=28, augment="none")
  config.model.image.update(encoder="conv4", channels=64)
  config.model.embed_dim = 64
  config.learner.update(name="protonet", distance="euclidean")
  config.task.update(n_way=5, k_shot=1, q_query=5, meta_batch=4)
  config.optim.lr = 1e-3
  config.run.update(num_steps=5000, log_every=50, eval_every=500, checkpoint_every=500,
                    val_episodes=200)
  config.eval.update(episodes=600, q_query=15)
  return config
