"""The `mmfsl` command: `mmfsl train` and `mmfsl eval`.

User errors (bad config, paths, impossible requests) print one clear message and exit with
status 2; set MMFSL_DEBUG=1 to see the traceback as well.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from mmfsl_jax.errors import UserError

# Bugs raise other exceptions and keep their traceback.
_USER_ERRORS = (UserError, FileNotFoundError, ImportError)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="mmfsl", description="Multimodal few-shot learning in JAX.")
  commands = parser.add_subparsers(dest="command")
  train = commands.add_parser("train", help="meta-train a model (resumes if WORKDIR has a checkpoint)")
  train.add_argument("--config", default="default",
                     help="built-in config name or a .py file with get_config() (default: default)")
  train.add_argument("--workdir", default="runs/default", help="output directory (default: runs/default)")
  train.add_argument("--no-progress", action="store_true", help="no progress bar")
  train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
  evaluate = commands.add_parser("eval", help="evaluate the best checkpoint on meta-test tasks")
  evaluate.add_argument("--workdir", default="runs/default")
  evaluate.add_argument("--episodes", type=int, default=None, help="default: the config's (600)")
  evaluate.add_argument("--queries", type=int, default=None, help="queries per class (default 15)")
  return parser


def _train(args) -> int:
  from mmfsl_jax import config as config_lib
  from mmfsl_jax.train import train_and_evaluate
  config = config_lib.load_config(args.config)
  config_lib.apply_overrides(config, args.overrides)
  record = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
  print(json.dumps(record))
  return 0


def _eval(args) -> int:
  from mmfsl_jax.evaluate import evaluate_workdir
  result = evaluate_workdir(args.workdir, episodes=args.episodes, q_query=args.queries)
  for name in ("accuracy", "macro_recall", "macro_f1"):
    print(f"{name:>13}: {100 * result[name]['mean']:.2f} ± {100 * result[name]['ci95']:.2f} % "
          f"({result[name]['n']} episodes)")
  print(f"wrote {os.path.join(args.workdir, 'eval.json')}")
  return 0


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.command is None:
    args = parser.parse_args(["train", *(argv or [])])
  try:
    return _train(args) if args.command == "train" else _eval(args)
  except _USER_ERRORS as error:
    if os.environ.get("MMFSL_DEBUG"):
      raise
    print(f"mmfsl: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
