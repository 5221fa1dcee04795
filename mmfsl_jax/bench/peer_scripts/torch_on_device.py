"""Runs a PyTorch peer script (torch_maml_bench.py, torch_peer_extra.py) on a chosen device.

    python torch_on_device.py --device cuda SCRIPT [SCRIPT'S ARGUMENTS...]

The peer scripts create their model and random tasks with torch's factory functions and no
device argument, so making `--device` torch's default device moves the whole workload there
unchanged. CUDA runs asynchronously: the scripts time a meta-step with two reads of
`time.perf_counter`, so each read first waits for the device's queued work, and a timed step
includes every kernel it launched.
"""
import argparse
import runpy
import sys
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--device", required=True, help="torch device, e.g. cuda, cuda:1, cpu")
  parser.add_argument("script")
  parser.add_argument("script_args", nargs=argparse.REMAINDER)
  args = parser.parse_args()

  import torch
  device = torch.device(args.device)
  if device.type == "cuda" and not torch.cuda.is_available():
    sys.exit(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
  torch.set_default_device(device)

  clock = time.perf_counter

  def synchronized_clock():
    if device.type == "cuda":
      torch.cuda.synchronize(device)
    return clock()

  time.perf_counter = synchronized_clock

  sys.argv = [args.script, *args.script_args]
  runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
  main()
