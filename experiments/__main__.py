"""Run or plot a reproduction study: `python -m experiments {list,run,plot,table} [STUDY] [options]`.

    python -m experiments list                      # the shipped studies and their run counts
    python -m experiments run lenet [--dry-run]     # train what is missing, resume what was interrupted
    python -m experiments run lenet --jobs 2        # two runs at a time on this machine
    python -m experiments run my-grid.toml --ray    # each run a Ray task on a new local cluster
    python -m experiments plot lenet                # figures and Summary.md/.csv under Outputs/studies/lenet/
    python -m experiments table lenet [--partial]   # accuracy over seeds, weights changed, seconds per epoch
"""
import argparse
import math
import sys
from pathlib import Path

import runlog
from experiments import claims
from experiments.scheduling import run_study
from experiments.studies import StudyError, check_points, load_study, study_names
from experiments.views import plot_study, table_study
from settings.commands import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, OneLineParser
from training import interrupts


def positive(kind, minimum: float = 0, inclusive: bool = False):
    """A flag's parser: a finite number above `minimum` (at least it, if `inclusive`), since nan slips past every
    comparison (a stale time of nan makes every live claim stale) and inf is no share of a machine."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} should be a finite number")
        if value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} should be {'at least' if inclusive else 'above'} {minimum}")
        return value
    return parse


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m experiments", description=__doc__.splitlines()[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("command", choices=["list", "run", "plot", "table"])
    parser.add_argument("study", nargs="?", help="a study name (see `list`) or the path of a .toml study file")
    parser.add_argument("--outputpath", type=Path, default=Path("Outputs"), help="where the runs live")
    parser.add_argument("--dry-run", action="store_true", help="run: list what would be trained, train nothing")
    parser.add_argument("--jobs", type=positive(int), default=None, metavar="N",
                        help="run: train up to N runs at a time on this machine, each with cores/N CPU threads "
                             "(default 1; with GPUs: GPUs x --runs-per-gpu)")
    parser.add_argument("--runs-per-gpu", type=positive(int), default=1, metavar="K",
                        help="run: where there are GPUs, up to K runs share each one (memory taken as needed)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run: each run a Ray task; without ADDRESS on a new local cluster, 'auto' for the "
                             "cluster this machine belongs to; every worker must see --outputpath and this code")
    parser.add_argument("--ray-cpus", type=positive(float), default=None, metavar="C",
                        help="run --ray: CPUs per run (default: the study's [ray] cpus, else 1)")
    parser.add_argument("--ray-gpus", type=positive(float, inclusive=True), default=None, metavar="G",
                        help="run --ray: GPUs per run, fractions allowed (default: the study's [ray] gpus, else 0)")
    parser.add_argument("--stale-after", type=positive(float), default=claims.STALE_AFTER,
                        metavar="SECONDS",
                        help="run: a claim not refreshed for this long is abandoned and its run taken over "
                             "(default %(default).0f)")
    parser.add_argument("--partial", action="store_true", help="table: include unfinished runs (their epochs so far)")
    parser.add_argument("--out", type=Path, default=None,
                        help="plot: folder for the study's figures and tables (default: OUTPUTPATH/studies)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            for name in study_names():
                study = load_study(name)
                print(f"{name:12s} {len(study.points):3d} runs  {study.description}")
            return EXIT_OK
        if not args.study:
            raise StudyError(f"{args.command} needs a study: one of {', '.join(study_names())} or a .toml path")
        study = load_study(args.study)
        if args.ray is not None and (args.jobs is not None or args.runs_per_gpu != 1):
            raise StudyError("--jobs and --runs-per-gpu are for runs on this machine; with --ray, give each run "
                             "its share through --ray-cpus and --ray-gpus")
        if args.ray is None and (args.ray_cpus is not None or args.ray_gpus is not None):
            raise StudyError("--ray-cpus and --ray-gpus need --ray")
        if args.command == "run":
            check_points(study)  # the whole study, registries included, before anything runs
            interrupts.raise_on_stop_signals()  # a batch system's stop, a closed terminal: release claims, as Ctrl-C
            return EXIT_FAILED if run_study(study, args.outputpath, dry_run=args.dry_run, jobs=args.jobs,
                                  runs_per_gpu=args.runs_per_gpu, stale_after=args.stale_after, ray=args.ray,
                                  ray_cpus=args.ray_cpus, ray_gpus=args.ray_gpus) else EXIT_OK
        if args.command == "table":
            print(table_study(study, args.outputpath, finished_only=not args.partial), end="")
            return EXIT_OK
        return plot_study(study, args.outputpath, args.out)
    except (StudyError, runlog.RunLogError) as error:
        print(f"python -m experiments: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:
        print(f"\npython -m experiments: {interrupts.describe(stop)}; run the same command again to resume",
              file=sys.stderr)
        return interrupts.exit_status(stop)


if __name__ == "__main__":
    sys.exit(main())
