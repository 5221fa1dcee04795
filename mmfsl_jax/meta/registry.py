"""Meta-learners by config name: `method=NAME` builds METHODS[NAME](config, model, ...).

Each entry is a module's `from_config(config, model, *, for_eval, num_classes)`; adding a
method is adding its module and one line here (and its name to config.CHOICES["method"]).
`for_eval` builds the learner for evaluation (e.g. `eval_inner_steps`); `num_classes` is
the number of training classes (Baseline++'s classifier).
"""
from __future__ import annotations

from mmfsl_jax.meta.am3 import from_config as am3
from mmfsl_jax.meta.anil import from_config as anil
from mmfsl_jax.meta.baselinepp import from_config as baselinepp
from mmfsl_jax.meta.maml import from_config as maml
from mmfsl_jax.meta.metasgd import from_config as metasgd
from mmfsl_jax.meta.protonet import from_config as protonet
from mmfsl_jax.meta.reptile import from_config as reptile

METHODS = {
    "protonet": protonet,
    "maml": maml,
    "anil": anil,
    "metasgd": metasgd,
    "reptile": reptile,
    "baselinepp": baselinepp,
    "am3": am3,
}
