"""ANIL (Raghu et al. 2020): MAML whose inner loop adapts only what comes after the body.

The body (encoders and aligner) embeds the support and the query once per task; the inner
loop then adapts the parameters matched by `inner_params` -- the head by default, or the
head and/or the fuser (paths "head/..." and "model/fuse/...") -- on those features, which
makes each inner step as cheap as a linear layer. The meta-gradient still reaches the body
through the features (second order, unless `first_order`). A pattern that matches any body
parameter is an error: adapting those is MAML (method=maml).

Params, the inner loop's options (InnerLoop: learned rates, multi-step loss, checkpointing),
`per_parameter_lr`, `support_loss_weight` (the seed objective: the head's support loss on the
body's features at the meta-parameters, the first inner step's) and batch_norm are as in
maml.py; with batch_norm="transductive" the support and the query are each embedded with
their own batch statistics, as MAML does.
"""
from __future__ import annotations

import jax

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import (MetaLearner, check_batch_norm, cross_entropy, embed_query,
                                 inputs_of, query_objective)
from mmfsl_jax.meta.inner import InnerLoop
from mmfsl_jax.meta.maml import (adapted_task_loss, check_support_loss_weight, core_params,
                                 family_learner, family_options, head_module)
from mmfsl_jax.meta.paths import merge, path_keys, path_mask

ADAPTABLE = (("head",), ("model", "fuse"))   # path prefixes after the body


def after_body_mask(core, pattern: str):
  """path_mask of `pattern`, checked to match nothing but head and fuser parameters."""
  mask = path_mask(core, pattern)
  flat, _ = jax.tree_util.tree_flatten_with_path(mask)
  body = ["/".join(path_keys(p)) for p, keep in flat
          if keep and not any(path_keys(p)[:len(a)] == a for a in ADAPTABLE)]
  if body:
    raise UserError(f"ANIL adapts only the head and the fuser (paths head/... and "
                     f"model/fuse/...), but inner_params={pattern!r} also matches {body[:3]}"
                     f"{' ...' if len(body) > 3 else ''}; use e.g. 'head/.*' or "
                     f"'head/.*|model/fuse/.*', or the maml learner to adapt the body too")
  return mask


def adapts_fuser(mask) -> bool:
  return any(jax.tree_util.tree_leaves(mask["model"].get("fuse", {})))


def anil(model: MultimodalModel, *, n_way: int, inner: InnerLoop = InnerLoop(),
         inner_params: str = "head/.*", head_init: str = "zeros", align_weight: float = 0.0,
         align_temperature: float = 0.1, batch_norm: str = "transductive",
         zero_head: bool = False, per_parameter_lr: bool = False,
         support_loss_weight: float = 0.0) -> MetaLearner:
  """Arguments as for `maml`; `inner_params` may match only head and fuser parameters."""
  options = family_options(inner, per_parameter_lr)
  check_support_loss_weight(support_loss_weight)
  multi_step_loss = options.multi_step_loss
  check_batch_norm(batch_norm)
  head = head_module(n_way, head_init)

  def run_inner(params, task, key, multi_step_loss, train):
    core = core_params(params)
    mask = after_body_mask(core, inner_params)
    with_fuser = adapts_fuser(mask)
    support, query = task["support"], task["query"]
    k_support, k_query, k_inner = (jax.random.split(key, 3) if key is not None
                                   else (None, None, None))
    fused_s, aligned_s = model.apply(core["model"], inputs_of(support), train=True,
                                     key=k_support)
    fused_q, aligned_q = embed_query(model, core["model"], support, query, train=train,
                                     key=k_query, batch_norm=batch_norm)

    def logits_of(fast, fused, aligned):
      p = merge(core, fast)
      features = model.fuse(p["model"], aligned) if with_fuser else fused
      return head.apply({"params": p["head"]}, features)

    def support_loss(fast, step_key):
      return cross_entropy(logits_of(fast, fused_s, aligned_s), support["label"])

    def query_pass(fast):
      logits = logits_of(fast, fused_q, aligned_q)
      loss, metrics = query_objective(logits, query["label"], aligned_q, align_weight,
                                      align_temperature)
      return loss, dict(metrics, logits=logits)

    return adapted_task_loss(params, mask, support_loss, query_pass, k_inner, options,
                             multi_step_loss, support_loss_weight)

  return family_learner(model, head, lambda core: after_body_mask(core, inner_params),
                        options, multi_step_loss, run_inner, zero_head=zero_head)
