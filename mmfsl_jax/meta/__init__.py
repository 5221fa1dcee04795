"""Meta-learners: pure functions of (params, task), vmapped over task batches."""
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.maml import maml, path_mask
from mmfsl_jax.meta.protonet import class_means, prototype_logits, protonet
from mmfsl_jax.meta.step import TrainState, batch_loss, init_train_state, make_meta_step

__all__ = ["MetaLearner", "TrainState", "batch_loss", "class_means", "init_train_state",
           "make_meta_step", "maml", "path_mask", "prototype_logits", "protonet"]
