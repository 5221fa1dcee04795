"""Meta-learners by name, with what each can do: `learner.name=NAME` in a config.

    METHODS[name].constructor(model, n_way=..., ...) -> MetaLearner   (plain arguments)

Capabilities, read by run/build.py and the evaluators instead of lists of names:
- any_way: classifies any number of classes (prototypes, or a head fitted per task); the
  others have a head of n_way outputs and are evaluated at their training way only;
- inner_loop: adapts by gradient steps on the support set at test time (`inner.eval_steps`);
- second_order: a differentiated inner loop, so the MAML++ options and zero_head apply;
- support_loss: takes `support_loss_weight`, the seed objective's weight on the support loss
  at the initial parameters (protonet.py, maml.py);
- class_text: reads each class's own text (task["class"]["text"]) in every task;
- shared_space: classifies image features against class text or fitted per task in the
  shared space (shared_space.py), with no meta-learned parameters of its own.
Adding a method is adding its module and one entry here, and its arguments in
run/build.py's `build_learner`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from mmfsl_jax.meta.am3 import am3
from mmfsl_jax.meta.anil import anil
from mmfsl_jax.meta.baselinepp import baselinepp
from mmfsl_jax.meta.linear_probe import linear_probe
from mmfsl_jax.meta.lp_plus_plus import lp_plus_plus
from mmfsl_jax.meta.maml import maml
from mmfsl_jax.meta.metasgd import metasgd
from mmfsl_jax.meta.protonet import protonet
from mmfsl_jax.meta.reptile import reptile
from mmfsl_jax.meta.tip_adapter import tip_adapter, tip_adapter_f
from mmfsl_jax.meta.zeroshot import zeroshot


class Method(NamedTuple):
  constructor: Callable
  any_way: bool = False
  inner_loop: bool = False
  second_order: bool = False
  support_loss: bool = False
  class_text: bool = False
  shared_space: bool = False


METHODS = {
    "protonet": Method(protonet, any_way=True, support_loss=True),
    "maml": Method(maml, inner_loop=True, second_order=True, support_loss=True),
    "anil": Method(anil, inner_loop=True, second_order=True, support_loss=True),
    "metasgd": Method(metasgd, inner_loop=True, second_order=True, support_loss=True),
    "reptile": Method(reptile, inner_loop=True),
    "baselinepp": Method(baselinepp, any_way=True),
    "am3": Method(am3, any_way=True, class_text=True),
    "zeroshot": Method(zeroshot, any_way=True, class_text=True, shared_space=True),
    "linear_probe": Method(linear_probe, any_way=True, shared_space=True),
    "tip_adapter": Method(tip_adapter, any_way=True, class_text=True, shared_space=True),
    "tip_adapter_f": Method(tip_adapter_f, any_way=True, class_text=True, shared_space=True),
    "lp_plus_plus": Method(lp_plus_plus, any_way=True, class_text=True, shared_space=True),
}


def names_with(capability: str) -> tuple[str, ...]:
  """The methods that have `capability` (a field of Method)."""
  return tuple(name for name, method in METHODS.items() if getattr(method, capability))
