"""The `mmfsl` command: train, eval, predict, embed, data, bench.

    mmfsl train --config CONFIG --workdir DIR [--distributed ...] [key=value ...]
    mmfsl eval --workdir DIR [--benchmark episodic|omniglot-runs] [--data-dir DIR]
               [--n-way N] [--k-shot K] [--inner-steps S] [--output FILE]
               [--batch-norm trained|population [--population-batches B]]
               [--data MANIFEST [--image-column C] [--text-column C] [--label-column C]
                [--column MODALITY=COLUMN ...]]
    mmfsl predict --workdir DIR --support S --query Q [--output predictions.csv]
    mmfsl embed --workdir DIR --input M [--output embeddings.npz]
    mmfsl plot curves --workdir DIR [DIR ...] [--x step|time] [--output curves.png]
    mmfsl plot compare --eval FILE [FILE ...] [--group-by method|modalities|fuser]
    mmfsl plot embed --workdir DIR [--classes 10] [--per-class 20] [--projection pca|tsne]
    mmfsl data prepare NAME [--data-dir DIR]     TFDS download-and-prepare; omniglot: check zips
    mmfsl data export shapes|omniglot DIR [--config C] [key=value ...]
                                                 a built-in set as image files plus a manifest
    mmfsl data throughput --config CONFIG [key=value ...]   tasks/s of the data pipeline alone
    mmfsl bench [--variants maml,fomaml,...] [--peer-python PY --peers-dir DIR]
                [--peer-device cuda] [--pipeline]
                                                 meta-step speed (and input pipeline speed)

User errors (bad config, paths, impossible requests, data that is not there) print one clear
message and exit with status 2; set MMFSL_DEBUG=1 to see the traceback as well. The command
first restarts itself with huge pages for malloc (host_memory.py says why; MMFSL_HUGE_PAGES=0
keeps it from doing so).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from mmfsl_jax.errors import UserError
from mmfsl_jax.run.host_memory import restart_with_huge_page_malloc

# Bugs raise other exceptions and keep their traceback.
_USER_ERRORS = (UserError, FileNotFoundError, ImportError)
_BENCHMARKS = ("episodic", "omniglot-runs")


def _add_distributed_flags(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("several processes (hosts)")
  group.add_argument("--distributed", action="store_true",
                     help="join a multi-process run (jax.distributed.initialize); the cluster "
                          "is detected on Cloud TPU, SLURM and Open MPI, else give the three "
                          "flags below. Tasks split over the devices of all processes; only "
                          "process 0 writes logs and files")
  group.add_argument("--coordinator", default=None, help="host:port of process 0")
  group.add_argument("--num-processes", type=int, default=None)
  group.add_argument("--process-id", type=int, default=None)


def _join_if_distributed(args) -> None:
  given = [args.coordinator, args.num_processes, args.process_id]
  if not args.distributed:
    if any(v is not None for v in given):
      raise UserError("--coordinator, --num-processes and --process-id need --distributed")
    return
  if any(v is None for v in given) and any(v is not None for v in given):
    raise UserError("give all of --coordinator, --num-processes and --process-id, or none "
                    "(to let JAX detect the cluster)")
  from mmfsl_jax.run.sharding import initialize_distributed
  initialize_distributed(*given)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="mmfsl", description="Multimodal few-shot learning in JAX.")
  commands = parser.add_subparsers(dest="command")
  train = commands.add_parser(
      "train", help="meta-train a model (resumes if WORKDIR has a checkpoint)")
  train.add_argument("--config", default="default",
                     help="built-in config name or a .py file with get_config() (default: default)")
  train.add_argument("--workdir", default="runs/default",
                     help="output directory (default: runs/default)")
  train.add_argument("--no-progress", action="store_true", help="no progress bar")
  train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
  _add_distributed_flags(train)
  evaluate = commands.add_parser("eval", help="evaluate the best checkpoint")
  evaluate.add_argument("--workdir", default="runs/default")
  evaluate.add_argument("--benchmark", choices=_BENCHMARKS, default="episodic",
                        help="episodic: meta-test tasks of the config's way and shot (default); "
                             "omniglot-runs: the 20 one-shot runs of Lake et al. 2015 "
                             "(image-only Omniglot models)")
  evaluate.add_argument("--episodes", type=int, default=None, help="default: the config's (600)")
  evaluate.add_argument("--queries", type=int, default=None, help="queries per class (default 15)")
  evaluate.add_argument("--n-way", type=int, default=None,
                        help="episodic: evaluate at this way (default: the config's "
                             "eval.n_way, else the training way; learners with a fixed head "
                             "need their training way)")
  evaluate.add_argument("--k-shot", type=int, default=None,
                        help="episodic: evaluate at this shot (default: the config's "
                             "eval.k_shot, else the training shot)")
  evaluate.add_argument("--inner-steps", type=int, default=None,
                        help="MAML family: inner steps at test time (default: the config's "
                             "inner.eval_steps, else inner.steps)")
  evaluate.add_argument("--split", choices=("test", "val"), default="test",
                        help="episodic: classes the tasks are drawn from (default test; val, "
                             "to choose settings such as --inner-steps without the test classes)")
  _add_batch_norm_flags(evaluate, "test-time batch norm: trained (as in training: each task's "
                                  "own statistics, the config's batch_norm; default) or "
                                  "population (the moments of training tasks, as PyTorch's "
                                  "model.eval())")
  evaluate.add_argument("--shots", default=None, metavar="K,K,...",
                        help="episodic: evaluate at each of these shots (e.g. 1,2,5,10), on "
                             "tasks of one seed, into one file (default eval_shots.json; "
                             "`mmfsl plot shots` draws it)")
  evaluate.add_argument("--ways", default=None, metavar="N,N,...",
                        help="with --shots: and at each of these ways (default: the "
                             "evaluation way)")
  evaluate.add_argument("--output", default=None,
                        help="file name written in WORKDIR (default eval.json; "
                             "eval_shots.json with --shots)")
  evaluate.add_argument("--data-dir", default=None,
                        help="data directory, if not the config's (omniglot-runs: the directory "
                             "of one_shot_runs.zip; default: data.dir or $MMFSL_OMNIGLOT_DIR)")
  evaluate.add_argument("--data", default=None, metavar="MANIFEST",
                        help="episodic: draw the tasks from all the classes of your own "
                             "labelled data instead (cross-domain evaluation): a CSV, TSV or "
                             "JSON-lines manifest or an ImageFolder, as data.name=files reads "
                             "them, preprocessed as the model's training data")
  _add_column_flags(evaluate, "--data: the manifest's")
  _add_class_texts_flag(evaluate, "--data's classes")
  _add_predict_commands(commands)
  _add_plot_commands(commands)
  data = commands.add_parser("data", help="datasets: prepare them, measure the input pipeline")
  data_commands = data.add_subparsers(dest="data_command")
  prepare = data_commands.add_parser(
      "prepare", help="download and prepare a TFDS dataset (needs internet); for omniglot, "
                      "check the zip files")
  prepare.add_argument("name", help="omniglot, tfds_omniglot, cifar_fs, fc100, cub, flowers102 "
                                    "(or a TFDS builder name)")
  prepare.add_argument("--data-dir", default=None,
                       help="TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets); "
                            "omniglot: the zips' directory (default: $MMFSL_OMNIGLOT_DIR)")
  export = data_commands.add_parser(
      "export", help="write a built-in dataset (shapes, omniglot) as image files plus a "
                     "manifest that data.name=files reads")
  export.add_argument("name", choices=("shapes", "omniglot"))
  export.add_argument("directory", help="a new (or empty) directory to write")
  export.add_argument("--config", default=None,
                      help="the config whose data section is exported (default: default for "
                           "shapes, omniglot_protonet for omniglot)")
  export.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
  throughput = data_commands.add_parser(
      "throughput", help="how many meta-train tasks per second the data pipeline produces")
  throughput.add_argument("--config", default="default")
  throughput.add_argument("--batches", type=int, default=20, help="task batches timed (default 20)")
  throughput.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
  bench = commands.add_parser(
      "bench", help="meta-step tasks/s, compile time and memory on the canonical MAML "
                    "workload and variants, optionally against the PyTorch peer")
  bench.add_argument("--variants", default="maml",
                     help="comma-separated, from: " + ", ".join(_bench_variants()) + " (or all)")
  bench.add_argument("--iters", type=int, default=5, help="timed meta-steps per variant (median)")
  bench.add_argument("--peer-python", default=None,
                     help="a Python interpreter with torch: run the peer on each variant too")
  bench.add_argument("--peers-dir", default=None, help="directory of torch_maml_bench.py")
  bench.add_argument("--peer-device", default="cpu",
                     help="torch device the peer runs on (e.g. cuda; default cpu)")
  bench.add_argument("--peer-iters", type=int, default=None,
                     help="peer's timed steps (default: --iters)")
  bench.add_argument("--pipeline", action="store_true",
                     help="also time the input pipeline making the same tasks from the real "
                          "Omniglot files (data_dir=DIR or $MMFSL_OMNIGLOT_DIR) and print it "
                          "beside the meta-step")
  bench.add_argument("--autotune", action="store_true",
                     help="choose each variant's automatic settings (conv_impl, task_chunk) "
                          "by measuring them, as training does, or from the cached "
                          "measurement (default: the fixed rules)")
  bench.add_argument("overrides", nargs="*", metavar="key=value",
                     help="config overrides applied to every variant "
                          "(e.g. model.image.conv_impl=xla)")
  return parser


def _add_column_flags(parser: argparse.ArgumentParser, whose: str) -> None:
  for modality in ("image", "text", "label"):
    parser.add_argument(f"--{modality}-column", default=None,
                        help=f"{whose} {modality} column (default: the training config's "
                             f"data.files.{modality}_column when it was trained on files, "
                             f"else {modality})")
  parser.add_argument("--column", action="append", default=[], metavar="MODALITY=COLUMN",
                      help=f"{whose} column of another modality (repeatable; default: the "
                           f"training config's data.files.columns, else the modality's name)")


def _add_class_texts_flag(parser: argparse.ArgumentParser, whose: str) -> None:
  parser.add_argument("--class-texts", default=None, metavar="FILE",
                      help=f"a CSV/TSV/JSON-lines file of label,text rows: the text of each of "
                           f"{whose}, for the methods that read class text (zeroshot, "
                           f"tip_adapter, tip_adapter_f, lp_plus_plus, am3)")


def _column_map(items) -> dict[str, str]:
  out = {}
  for item in items:
    modality, equals, column = item.partition("=")
    if not equals or not modality.strip() or not column.strip():
      raise UserError(f"--column {item!r}: write MODALITY=COLUMN, e.g. --column "
                      f"vector_labs=labs")
    out[modality.strip()] = column.strip()
  return out


def _add_batch_norm_flags(parser: argparse.ArgumentParser, help_text: str) -> None:
  parser.add_argument("--batch-norm", choices=("trained", "population"), default="trained",
                      help=help_text)
  parser.add_argument("--population-batches", type=int, default=50,
                      help="--batch-norm population: training tasks to average (default 50)")


def _add_manifest_flags(parser: argparse.ArgumentParser) -> None:
  _add_column_flags(parser, "the manifests'")
  _add_batch_norm_flags(parser, "trained (as in training: statistics of the examples processed "
                                "together; default) or population (the training population's "
                                "moments: each example on its own)")


def _add_predict_commands(commands) -> None:
  predict = commands.add_parser(
      "predict", help="classify queries among the classes of a labelled support set")
  predict.add_argument("--workdir", default="runs/default")
  predict.add_argument("--support", required=True, metavar="MANIFEST",
                       help="labelled examples of the classes to choose between: a CSV, TSV "
                            "or JSON-lines manifest or an ImageFolder (as data.name=files "
                            "reads them), every modality the model reads")
  predict.add_argument("--query", required=True, metavar="MANIFEST",
                       help="the examples to classify: a manifest (labels optional; a row "
                            "may lack a modality) or a directory of images")
  predict.add_argument("--output", default="predictions.csv",
                       help="CSV file written: one row per query (default predictions.csv)")
  predict.add_argument("--inner-steps", type=int, default=None,
                       help="MAML family: inner steps on the support (default: the config's "
                            "inner.eval_steps, else inner.steps)")
  _add_class_texts_flag(predict, "the support's classes")
  _add_manifest_flags(predict)
  embed = commands.add_parser(
      "embed", help="the fused and per-modality embeddings of every row of a manifest")
  embed.add_argument("--workdir", default="runs/default")
  embed.add_argument("--input", required=True, metavar="MANIFEST",
                     help="a manifest (labels optional; a row may lack a modality) or a "
                          "directory of images")
  embed.add_argument("--output", default="embeddings.npz",
                     help=".npz file written: fused, aligned_<modality>, present_<modality>, "
                          "label (default embeddings.npz)")
  _add_manifest_flags(embed)


def _add_plot_commands(commands) -> None:
  plot = commands.add_parser("plot", help="figures (PNG or SVG) from a run's files")
  plots = plot.add_subparsers(dest="plot_command")
  curves = plots.add_parser("curves", help="training loss and accuracy, validation accuracy "
                                           "with its 95%% band, of one or more runs")
  curves.add_argument("--workdir", nargs="+", required=True, metavar="DIR")
  curves.add_argument("--name", nargs="+", default=None, help="one legend name per workdir "
                                                              "(default: the directory names)")
  curves.add_argument("--x", choices=("step", "time"), default="step",
                      help="against meta-steps (default) or wall time")
  curves.add_argument("--output", default="curves.png", help=".png or .svg (default curves.png)")
  compare = plots.add_parser("compare", help="accuracy, macro recall and F1 with 95%% error "
                                             "bars from eval files, grouped")
  compare.add_argument("--eval", nargs="+", required=True, metavar="FILE",
                       help="eval JSON files written by mmfsl eval")
  compare.add_argument("--label", nargs="+", default=None,
                       help="one label per file (default: its workdir's name)")
  compare.add_argument("--group-by", choices=("method", "modalities", "fuser", "none"),
                       default="method")
  compare.add_argument("--output", default="compare.png",
                       help=".png or .svg (default compare.png)")
  shots = plots.add_parser("shots", help="accuracy against k-shot (a line per model and way) "
                                         "from `mmfsl eval --shots` files")
  shots.add_argument("--eval", nargs="+", required=True, metavar="FILE",
                     help="eval_shots.json files (or eval.json files, a point each)")
  shots.add_argument("--label", nargs="+", default=None,
                     help="one name per file (default: its workdir's); files of one name are "
                          "one model")
  shots.add_argument("--metric", choices=("accuracy", "macro_recall", "macro_f1"),
                     default="accuracy")
  shots.add_argument("--output", default="shots.png", help=".png or .svg (default shots.png)")
  fusion = plots.add_parser("fusion", help="what the fuser learned: the weighted fuser's "
                                           "weights, the gated/AM3 mixing per class, the "
                                           "attention on an episode")
  fusion.add_argument("--workdir", required=True, metavar="DIR")
  fusion.add_argument("--split", default="test", choices=("train", "val", "test"))
  fusion.add_argument("--classes", type=int, default=50,
                      help="classes in the histograms (default 50, or all there are)")
  fusion.add_argument("--output", default="fusion.png",
                      help=".png or .svg (default fusion.png)")
  embed = plots.add_parser("embed", help="a 2-D map of test-class embeddings per modality "
                                         "and fused, coloured by class")
  embed.add_argument("--workdir", required=True, metavar="DIR")
  embed.add_argument("--split", default="test", choices=("train", "val", "test"))
  embed.add_argument("--classes", type=int, default=10, help="classes drawn (default 10)")
  embed.add_argument("--per-class", type=int, default=20, help="examples each (default 20)")
  embed.add_argument("--projection", choices=("pca", "tsne"), default="pca",
                     help="pca (default) or tsne (needs scikit-learn)")
  embed.add_argument("--output", default="embeddings.png",
                     help=".png or .svg (default embeddings.png)")


def _plot(args) -> int:
  from mmfsl_jax.plot.figures import check_output
  check_output(args.output)
  if args.plot_command == "curves":
    from mmfsl_jax.plot.curves import plot_curves
    for workdir in args.workdir:
      _note_if_training(workdir)
    plot_curves(args.workdir, args.output, names=args.name, x=args.x)
  elif args.plot_command == "embed":
    from mmfsl_jax.plot.embeddings import plot_embeddings
    _note_if_training(args.workdir)
    plot_embeddings(args.workdir, args.output, split=args.split, classes=args.classes,
                    per_class=args.per_class, projection=args.projection)
  elif args.plot_command == "shots":
    from mmfsl_jax.plot.shots import plot_shots
    plot_shots(args.eval, args.output, labels=args.label, metric=args.metric)
  elif args.plot_command == "fusion":
    from mmfsl_jax.plot.fusion import plot_fusion
    _note_if_training(args.workdir)
    plot_fusion(args.workdir, args.output, split=args.split, classes=args.classes)
  else:
    from mmfsl_jax.plot.compare import plot_compare
    plot_compare(args.eval, args.output, labels=args.label, group_by=args.group_by)
  print(f"wrote {args.output}")
  return 0


def _config_from(args):
  """The named config with the command line's key=value overrides; old flat keys are
  translated, with a warning on stderr."""
  from mmfsl_jax.run import config as config_lib
  config = config_lib.load_config(args.config)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", FutureWarning)
    config_lib.apply_overrides(config, args.overrides)
  for warning in caught:
    print(f"mmfsl: warning: {warning.message}", file=sys.stderr)
  return config


def _bench_variants():
  from mmfsl_jax.bench.runner import VARIANTS
  return list(VARIANTS)


def _bench(args) -> int:
  from mmfsl_jax.bench.runner import bench
  names = _bench_variants() if args.variants == "all" else [
      v.strip() for v in args.variants.split(",") if v.strip()]
  bench(names, iters=args.iters, overrides=args.overrides, peer_python=args.peer_python,
        peers_dir=args.peers_dir, peer_iters=args.peer_iters,
        peer_device=args.peer_device, pipeline=args.pipeline, autotune=args.autotune)
  return 0


def _train(args) -> int:
  from mmfsl_jax.run.train import train_and_evaluate
  config = _config_from(args)
  _join_if_distributed(args)
  record = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
  print(json.dumps(record))
  return 0


def _note_if_training(workdir) -> None:
  """Says so on stderr when a run is still training in `workdir` (readers take no lock)."""
  from mmfsl_jax.run.workdir_lock import training_holder
  holder = training_holder(workdir)
  if holder:
    print(f"mmfsl: note: {workdir} is still training ({holder}); reading its last complete "
          f"checkpoint", file=sys.stderr)


def _numbers(text: str | None, flag: str) -> list[int] | None:
  """"1,2,5" -> [1, 2, 5]; None stays None."""
  if text is None:
    return None
  try:
    numbers = [int(part) for part in text.split(",") if part.strip()]
  except ValueError:
    raise UserError(f"{flag} takes whole numbers separated by commas, e.g. 1,2,5,10; got "
                    f"{text!r}") from None
  if not numbers:
    raise UserError(f"{flag} {text!r} lists no number")
  return numbers


def _print_metrics(result, prefix: str = "") -> None:
  for name in ("accuracy", "macro_recall", "macro_f1"):
    print(f"{prefix}{name:>13}: {100 * result[name]['mean']:.2f} ± "
          f"{100 * result[name]['ci95']:.2f} % ({result[name]['n']} episodes)")


def _eval(args) -> int:
  _note_if_training(args.workdir)
  shots, ways = _numbers(args.shots, "--shots"), _numbers(args.ways, "--ways")
  if ways is not None and shots is None:
    raise UserError("--ways goes with --shots (a grid of ways and shots into one file); for "
                    "one way give --n-way")
  if shots is not None and (args.k_shot is not None or args.n_way is not None):
    raise UserError("--shots replaces --k-shot (and --ways --n-way): give one of them")
  output = args.output or ("eval.json" if shots is None else "eval_shots.json")
  if os.path.basename(output) != output or not output.endswith(".json"):
    raise UserError(f"--output must be a file name ending in .json (it is written in the "
                    f"workdir), got {output!r}")
  if args.benchmark == "omniglot-runs":
    from mmfsl_jax.run.evaluators.omniglot_runs import evaluate_omniglot_runs
    if any(v is not None for v in (args.episodes, args.queries, args.n_way, args.k_shot,
                                   args.data, shots)) or args.split != "test":
      raise UserError("--episodes, --queries, --n-way, --k-shot, --shots, --split and --data "
                      "do not apply to "
                      "--benchmark omniglot-runs (it is always the 20 runs: 20-way 1-shot, 20 "
                      "test drawings)")
    result = evaluate_omniglot_runs(args.workdir, data_dir=args.data_dir,
                                    inner_steps=args.inner_steps, output=output,
                                    batch_norm=args.batch_norm,
                                    population_batches=args.population_batches)
    for name, accuracy in result["per_run"].items():
      print(f"{name}: {100 * accuracy:.1f} %")
    print(f"     accuracy: {100 * result['accuracy']:.2f} % over {len(result['per_run'])} runs "
          f"(error rate {100 * result['error_rate']:.2f} %; people 4.5 %)")
  else:
    from mmfsl_jax.run.evaluators.episodic import evaluate_shots, evaluate_workdir
    options = dict(episodes=args.episodes, q_query=args.queries, data_dir=args.data_dir,
                   inner_steps=args.inner_steps, output=output, split=args.split,
                   batch_norm=args.batch_norm, population_batches=args.population_batches,
                   data=args.data, image_column=args.image_column,
                   text_column=args.text_column, label_column=args.label_column,
                   columns=_column_map(args.column) or None, class_texts=args.class_texts)
    if shots is None:
      _print_metrics(evaluate_workdir(args.workdir, n_way=args.n_way, k_shot=args.k_shot,
                                      **options))
    else:
      for row in evaluate_shots(args.workdir, shots, ways=ways, **options)["results"]:
        _print_metrics(row, f"{row['n_way']}-way {row['k_shot']}-shot ")
  print(f"wrote {os.path.join(args.workdir, output)}")
  return 0


def _columns(args) -> dict:
  return dict(image_column=args.image_column, text_column=args.text_column,
              label_column=args.label_column, columns=_column_map(args.column),
              batch_norm=args.batch_norm,
              population_batches=args.population_batches)


def _predict(args) -> int:
  from mmfsl_jax.run.predict import predict, write_predictions
  _note_if_training(args.workdir)
  if not args.output.endswith(".csv"):
    raise UserError(f"--output must be a .csv file, got {args.output!r}")
  predictions = predict(args.workdir, args.support, args.query, inner_steps=args.inner_steps,
                        class_texts=args.class_texts, **_columns(args))
  path = write_predictions(predictions, args.output)
  counts = {name: 0 for name in predictions.classes}
  for name in predictions.predicted_labels:
    counts[name] += 1
  print(f"{len(predictions.predicted)} queries, {len(predictions.classes)} classes: "
        + ", ".join(f"{name} {count}" for name, count in counts.items()))
  correct, labelled = predictions.accuracy()
  if labelled:
    print(f"accuracy on the {labelled} queries labelled with a support class: "
          f"{100 * correct / labelled:.2f} % ({correct} correct)")
  print(f"wrote {path}")
  return 0


def _embed(args) -> int:
  from mmfsl_jax.run.predict import embed, write_embeddings
  _note_if_training(args.workdir)
  if not args.output.endswith(".npz"):
    raise UserError(f"--output must be a .npz file, got {args.output!r}")
  arrays = embed(args.workdir, args.input, **_columns(args))
  path = write_embeddings(arrays, args.output)
  print(f"{arrays['fused'].shape[0]} rows, embedding dimension {arrays['fused'].shape[1]}: "
        + ", ".join(f"{key} {list(value.shape)}" for key, value in arrays.items()))
  print(f"wrote {path}")
  return 0


def _prepare(args) -> int:
  if args.name == "omniglot":
    from mmfsl_jax.data.sources import omniglot
    directory, status = omniglot.check_omniglot_files(args.data_dir)
    for name, state in status.items():
      print(f"{name}: {state}")
    bad = [name for name, state in status.items() if not state.startswith("ok")]
    if bad:
      raise UserError(
          f"Omniglot directory {str(directory)!r} lacks usable {', '.join(bad)}; this library "
          f"does not download them: download them (this needs an internet connection) into "
          f"that directory under these names: "
          + "; ".join(f"{name} from {omniglot.DOWNLOAD_URLS[name]}" for name in bad))
    print(f"omniglot: all files present in {directory}")
    return 0
  from mmfsl_jax.data.sources.tfds import download_and_prepare
  print(download_and_prepare(args.name, args.data_dir))
  return 0


def _throughput(args) -> int:
  from mmfsl_jax.run.throughput import measure_pipeline
  config = _config_from(args)
  if args.batches < 1:
    raise UserError(f"--batches must be at least 1, got {args.batches}")
  result = measure_pipeline(config, batches=args.batches)
  print(f"data pipeline ({result['dataset']}, augment={result['augment']}): "
        f"{result['tasks_per_second']:.1f} tasks/s ({result['batches_per_second']:.2f} batches "
        f"of {result['meta_batch']} tasks/s)")
  print(json.dumps(result))
  return 0


def _export(args) -> int:
  from mmfsl_jax.run.data import export_data
  args.config = args.config or {"shapes": "default", "omniglot": "omniglot_protonet"}[args.name]
  config = _config_from(args)
  config.data.name = args.name
  manifest, overrides = export_data(config, args.directory)
  print(f"wrote {manifest}")
  print("train on it with: mmfsl train --config " + args.config + " "
        + " ".join(f'"{o}"' if " " in o or "(" in o else o for o in overrides))
  return 0


def _data(args) -> int:
  commands = {"prepare": _prepare, "throughput": _throughput, "export": _export}
  return commands[args.data_command](args)


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.command is None:
    args = parser.parse_args(["train", *(argv or [])])
  if args.command == "plot" and args.plot_command is None:
    parser.error("`mmfsl plot` needs a figure: curves --workdir DIR ..., or compare --eval "
                 "FILE ...")
  if args.command == "data" and args.data_command is None:
    parser.error("`mmfsl data` needs a command: prepare NAME, export NAME DIR, or throughput "
                 "--config CONFIG")
  try:
    if args.command == "train":
      return _train(args)
    if args.command == "eval":
      return _eval(args)
    if args.command == "bench":
      return _bench(args)
    if args.command == "predict":
      return _predict(args)
    if args.command == "embed":
      return _embed(args)
    if args.command == "plot":
      return _plot(args)
    return _data(args)
  except _USER_ERRORS as error:
    if os.environ.get("MMFSL_DEBUG"):
      raise
    print(f"mmfsl: error: {error}", file=sys.stderr)
    return 2


def run() -> None:
  """The `mmfsl` command (and `python -m mmfsl_jax.cli`): `main` in a process whose malloc
  uses huge pages (host_memory.py says why)."""
  restart_with_huge_page_malloc()
  sys.exit(main())


if __name__ == "__main__":
  run()
