"""MAML (second order) on Omniglot (image only, Conv4 on 28x28x1), from the zip files.

    mmfsl train --config omniglot_maml --workdir runs/omniglot_maml data.dir=../shared/data/omniglot
    mmfsl eval --workdir runs/omniglot_maml

Finn et al. 2017's Omniglot settings: 5-way, one inner step with inner.lr=0.4 in training and
three at evaluation, meta-batch 32 (8 here, for CPUs); `inner.first_order=True` gives first-order
MAML. MAML's head has n_way outputs, so `--benchmark omniglot-runs` (20-way) needs a model
trained with task.n_way=20. `smoke=True` shrinks it to a run of seconds.
"""
import ml_collections

from mmfsl_jax.configs import omniglot_protonet


def get_config() -> ml_collections.ConfigDict:
  config = omniglot_protonet.get_config()   # data, encoder and schedule as there
  config.learner.name = "maml"
  config.inner.steps = 1
  config.inner.eval_steps = 3
  config.inner.lr = 0.4
  config.inner.first_order = False
  config.task.meta_batch = 8
  return config
