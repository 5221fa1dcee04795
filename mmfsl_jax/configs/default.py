"""The default job: fused (image + caption) prototypical network on the built-in "shapes".

    mmfsl train --config default --workdir runs/default
    mmfsl eval --workdir runs/default

About 8 minutes on 2 CPU cores. `smoke=True` shrinks it to a few-second run.
"""
import ml_collections

from mmfsl_jax.configs.base import base_config


def get_config() -> ml_collections.ConfigDict:
  return base_config()
