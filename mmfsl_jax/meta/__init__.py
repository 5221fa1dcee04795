"""Meta-learners: pure functions of (params, task), vmapped over task batches.

Methods by config name are in registry.METHODS: protonet, maml (with MAML++ options),
anil, metasgd, reptile, baselinepp (Baseline++ transfer learning), am3, and the methods of the
shared image-text space (shared_space.py): zeroshot, linear_probe, tip_adapter,
tip_adapter_f, lp_plus_plus.
"""
from mmfsl_jax.meta.am3 import am3
from mmfsl_jax.meta.anil import anil
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.baselinepp import baselinepp
from mmfsl_jax.meta.inner import InnerLoop
from mmfsl_jax.meta.linear_probe import linear_probe
from mmfsl_jax.meta.lp_plus_plus import lp_plus_plus
from mmfsl_jax.meta.maml import maml
from mmfsl_jax.meta.metasgd import metasgd
from mmfsl_jax.meta.paths import path_mask
from mmfsl_jax.meta.protonet import class_means, protonet, prototype_logits
from mmfsl_jax.meta.registry import METHODS, Method
from mmfsl_jax.meta.reptile import reptile
from mmfsl_jax.meta.step import TrainState, batch_loss, init_train_state, make_meta_step
from mmfsl_jax.meta.tip_adapter import tip_adapter, tip_adapter_f
from mmfsl_jax.meta.zeroshot import zeroshot

__all__ = ["METHODS", "InnerLoop", "MetaLearner", "Method", "TrainState", "am3", "anil",
           "baselinepp", "batch_loss", "class_means", "init_train_state", "linear_probe",
           "lp_plus_plus", "make_meta_step", "maml", "metasgd", "path_mask", "prototype_logits",
           "protonet", "reptile", "tip_adapter", "tip_adapter_f", "zeroshot"]
