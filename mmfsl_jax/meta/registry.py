"""Meta-learners by name, with what each can do: `learner.name=NAME` in a config.

    METHODS[name].constructor(model, n_way=..., ...) -> MetaLearner   (plain arguments)

Capabilities, read by run/build.py and the evaluators instead of lists of names:
- any_way: classifies any number of classes (prototypes, or a head fitted per task); the
  others have a head of n_way outputs and are evaluated at their training way only;
- inner_loop: adapts by gradient steps on the support set at test time (`inner.eval_steps`);
- second_order: a differentiated inner loop, so the MAML++ options and zero_head apply;
- support_loss: takes `support_loss_weight`, the seed objective's weight on the support loss
  at the initial parameters (protonet.py, maml.py).
Adding a method is adding its module and one entry here, and its arguments in
run/build.py's `build_learner`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from mmfsl_jax.meta.am3 import am3
from mmfsl_jax.meta.anil import anil
from mmfsl_jax.meta.baselinepp import baselinepp
from mmfsl_jax.meta.maml import maml
from mmfsl_jax.meta.metasgd import metasgd
from mmfsl_jax.meta.protonet import protonet
from mmfsl_jax.meta.reptile import reptile


class Method(NamedTuple):
  constructor: Callable
  any_way: bool = False
  inner_loop: bool = False
  second_order: bool = False
  support_loss: bool = False


METHODS = {
    "protonet": Method(protonet, any_way=True, support_loss=True),
    "maml": Method(maml, inner_loop=True, second_order=True, support_loss=True),
    "anil": Method(anil, inner_loop=True, second_order=True, support_loss=True),
    "metasgd": Method(metasgd, inner_loop=True, second_order=True, support_loss=True),
    "reptile": Method(reptile, inner_loop=True),
    "baselinepp": Method(baselinepp, any_way=True),
    "am3": Method(am3, any_way=True),
}


def names_with(capability: str) -> tuple[str, ...]:
  """The methods that have `capability` (any_way, inner_loop, second_order or support_loss)."""
  return tuple(name for name, method in METHODS.items() if getattr(method, capability))
