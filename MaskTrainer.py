"""Train the connectivity of a network whose weights are random and frozen (Ivan & Florian 2020).

Parses the command line, checks it, and hands a resolved configuration to `training.run.Run`.
Example: python MaskTrainer.py --nettype Conv6 --traintype MinPruning --initializer heconstant --p1 0.5
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import datasets  # noqa: E402  (the environment variable above must be set before TensorFlow loads)
import initializers  # noqa: E402
import networks  # noqa: E402
import runlog  # noqa: E402
from masks import MASK_FUNCTIONS, training_types  # noqa: E402
from training.run import Run, RunFailed, draw_seed, library_versions, now  # noqa: E402

EXIT_BAD_INPUT, EXIT_RUN_FAILED, EXIT_INTERRUPTED = 2, 3, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as a single line (no usage block) and exits with status 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def number_type(kind, check, requirement: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {requirement}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"{text} is not {requirement}")
        return value
    return parse


positive_int = number_type(int, lambda v: v > 0, "a positive integer")
positive_float = number_type(float, lambda v: v > 0, "a positive number")
probability = number_type(float, lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]")
seed_type = number_type(int, lambda v: 0 <= v < 2**31, "a seed in [0, 2^31)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="MaskTrainer.py", description=__doc__.splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--nettype", default="LeNet", choices=list(networks.NETWORKS))
    parser.add_argument("--traintype", default="FreePruning", choices=training_types.names(),
                        help="FreeFlipping is another name for SignFlipping")
    parser.add_argument("--initializer", default="he", choices=list(initializers.INITIALIZERS))
    parser.add_argument("--activation", default="relu", choices=list(networks.ACTIVATIONS))
    parser.add_argument("--masktype", default=None, choices=list(MASK_FUNCTIONS),
                        help="default: mask for pruning types and Baseline, flip for flipping types")
    parser.add_argument("--batchsize", default=25, type=positive_int)
    parser.add_argument("--maxepochs", default=20, type=positive_int)
    parser.add_argument("--seed", default=0, type=seed_type, help="0 draws a fresh seed and records it")
    parser.add_argument("--p1", default=0.5, type=probability,
                        help="probability of a positive weight (heconstant, binary)")
    parser.add_argument("--lr", default=1e-3, type=positive_float, help="Adam learning rate")
    parser.add_argument("--outputpath", default="Outputs")
    parser.add_argument("--dataset", default=None, choices=list(datasets.DATASETS),
                        help="default: mnist for LeNet, cifar10 for ConvN")
    parser.add_argument("--datadir", default=None,
                        help=f"folder with mnist/, cifar10/, fashion-mnist/ (default: ${datasets.DATA_ENV})")
    parser.add_argument("--trainsize", default=None, type=positive_int,
                        help="train on the first N training images only (default: all)")
    parser.add_argument("--jit", default="auto", choices=["auto", "on", "off"],
                        help="compile the training loop with XLA (auto: as measured best per network)")
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                        help="Keras dtype policy; the mixed ones change numerics (for GPUs)")
    parser.add_argument("--resume", default=None, metavar="CONFIG_JSON",
                        help="continue the interrupted run of this Config_ID<id>.json (other flags ignored)")
    parser.add_argument("--verbose", action="store_true", help="Keras progress bar during each epoch")
    return parser


def new_config(args: argparse.Namespace) -> dict:
    """The resolved configuration of a new run; ValueError for combinations that make no sense."""
    training_type = training_types.get(args.traintype)
    masktype = training_type.resolve_mask_type(args.masktype)
    datasets.resolve_data_directory(args.datadir)
    return {
        "nettype": args.nettype, "traintype": training_type.name, "initializer": args.initializer,
        "activation": args.activation, "masktype": masktype, "batchsize": args.batchsize,
        "maxepochs": args.maxepochs, "seed": args.seed or draw_seed(), "requestedSeed": args.seed,
        "p1": args.p1, "lr": args.lr, "outputpath": args.outputpath,
        "dataset": args.dataset or networks.get(args.nettype).default_dataset, "datadir": args.datadir,
        "trainsize": args.trainsize, "jit": args.jit, "precision": args.precision,
        "changedMeans": training_type.changed_means, "runId": runlog.new_run_id(),
        "versions": library_versions(), "startTime": now(), "status": "running",
    }


def run_files_for(config: dict) -> runlog.RunFiles:
    """The new run's files, after checking that its directory can be created and written."""
    directory = runlog.experiment_directory(
        config["outputpath"], config["traintype"], config["nettype"], config["p1"], config["masktype"],
        config["activation"], config["initializer"], config["lr"])
    files = runlog.RunFiles(directory, config["runId"])
    try:
        runlog.write_json(files.config, config)
    except OSError as error:
        raise OSError(f"cannot write to output path {config['outputpath']}: {error.strerror}") from None
    return files


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.resume:
            files = runlog.RunFiles.from_config_path(args.resume)
            config = runlog.read_json(Path(args.resume))
            if config.get("status") == "finished":
                print(f"run {files.run_id} already finished; nothing to do")
                return 0
        else:
            config = new_config(args)
            files = run_files_for(config)
        print(f"run {files.run_id}: {files.directory} (seed {config['seed']})")
        Run(config, files, verbose=args.verbose).train()
    except RunFailed as failure:
        print(f"MaskTrainer.py: run stopped: {failure}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except (ValueError, OSError, datasets.DataNotFoundError) as error:
        print(f"MaskTrainer.py: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"\nMaskTrainer.py: interrupted; continue with --resume {files.config}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
