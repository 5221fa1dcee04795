"""Meta-SGD (Li et al. 2017): MAML whose inner learning rate is a learned array per parameter.

The rates have the shapes of the adapted parameters, start at `inner_lr` and are
meta-trained with the initialisation (params["inner_lr"], a pytree like the adapted part).
With `InnerLoop.per_step_lr` there is one such array per inner step. Everything else -- the
inner-loop subset, MAML++ options, batch norm, `support_loss_weight` -- is MAML's (maml.py);
with all rates equal and fixed it is MAML.
"""
from __future__ import annotations

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.maml import maml


def metasgd(model: MultimodalModel, *, n_way: int, **kwargs) -> MetaLearner:
  """Keyword arguments as for `maml` (`per_parameter_lr` is always True)."""
  return maml(model, n_way=n_way, per_parameter_lr=True, **kwargs)
