"""PyTorch per-task loops for the bench variants the peer script lacks: ANIL and ProtoNet.

Same workload and output as ../shared/peers/torch_maml_bench.py (whose conv4 and batch it
imports): Conv4 (64 filters, batch-statistics BN, 28x28x1), N-way K-shot Q-query random
tasks, a per-task Python loop as learn2learn's examples run them, Adam outer step.
  anil:     body features once per task; S inner SGD steps on the linear head only,
            second order through the head (create_graph), query loss backpropagated.
  protonet: support and query embedded in one pass per task; squared euclidean distance
            to class means; cross-entropy on the query.
Prints one JSON line: median meta-steps/s and tasks/s.
"""
import argparse
import json
from pathlib import Path
import statistics
import sys
import time


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variant", required=True, choices=["anil", "protonet"])
  ap.add_argument("--peers-dir", required=True, help="directory of torch_maml_bench.py")
  ap.add_argument("--ways", type=int, default=5)
  ap.add_argument("--shots", type=int, default=1)
  ap.add_argument("--queries", type=int, default=15)
  ap.add_argument("--meta-batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=1)
  ap.add_argument("--inner-lr", type=float, default=0.4)
  ap.add_argument("--iters", type=int, default=10)
  a = ap.parse_args()
  sys.path.insert(0, str(Path(a.peers_dir).resolve()))
  import torch
  import torch.nn.functional as F
  from torch_maml_bench import conv4, make_batch

  torch.manual_seed(0)
  model = conv4(a.ways)
  body, head = model[:-1], model[-1]
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  xs, ys, xq, yq = make_batch(a)

  def anil_step():
    opt.zero_grad()
    for t in range(a.meta_batch):
      fs, fq = body(xs[t]), body(xq[t])
      w, b = head.weight, head.bias
      for _ in range(a.steps):
        loss = F.cross_entropy(F.linear(fs, w, b), ys[t])
        gw, gb = torch.autograd.grad(loss, (w, b), create_graph=True)
        w, b = w - a.inner_lr * gw, b - a.inner_lr * gb
      (F.cross_entropy(F.linear(fq, w, b), yq[t]) / a.meta_batch).backward()
    opt.step()

  def protonet_step():
    opt.zero_grad()
    n_s = a.ways * a.shots
    for t in range(a.meta_batch):
      z = body(torch.cat([xs[t], xq[t]]))
      protos = z[:n_s].reshape(a.ways, a.shots, -1).mean(1)
      logits = -torch.cdist(z[n_s:], protos) ** 2
      (F.cross_entropy(logits, yq[t]) / a.meta_batch).backward()
    opt.step()

  fn = anil_step if a.variant == "anil" else protonet_step
  fn()  # warm-up
  times = []
  for _ in range(a.iters):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  print(json.dumps({"peer": f"torch-{a.variant}", "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "ways": a.ways, "shots": a.shots,
                    "queries": a.queries, "meta_batch": a.meta_batch, "steps": a.steps,
                    "median_s_per_meta_step": round(med, 4), "meta_steps_per_s": round(1 / med, 3),
                    "tasks_per_s": round(a.meta_batch / med, 2)}))


if __name__ == "__main__":
  main()
