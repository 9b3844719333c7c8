"""Run or plot a reproduction study: `python -m experiments {list,run,plot} [STUDY] [options]`.

    python -m experiments list                      # the shipped studies and their run counts
    python -m experiments run lenet [--dry-run]     # train what is missing, resume what was interrupted
    python -m experiments plot lenet                # figures and Summary.md/.csv under Outputs/studies/lenet/
    python -m experiments table lenet [--partial]   # accuracy over seeds, weights changed, seconds per epoch
"""
import argparse
import sys
from pathlib import Path

import runlog
from experiments import StudyError, load_study, plot_study, run_study, study_names, table_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "run", "plot", "table"])
    parser.add_argument("study", nargs="?", help="a study name (see `list`) or the path of a .toml study file")
    parser.add_argument("--outputpath", type=Path, default=Path("Outputs"), help="where the runs live")
    parser.add_argument("--dry-run", action="store_true", help="run: list what would be trained, train nothing")
    parser.add_argument("--partial", action="store_true", help="table: include unfinished runs (their epochs so far)")
    parser.add_argument("--out", type=Path, default=None,
                        help="plot: folder for the study's figures and tables (default: OUTPUTPATH/studies)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name in study_names():
                study = load_study(name)
                print(f"{name:12s} {len(study.points):3d} runs  {study.description}")
            return 0
        if not args.study:
            raise StudyError(f"{args.command} needs a study: one of {', '.join(study_names())}")
        study = load_study(args.study)
        if args.command == "run":
            return 1 if run_study(study, args.outputpath, dry_run=args.dry_run) else 0
        if args.command == "table":
            print(table_study(study, args.outputpath, finished_only=not args.partial), end="")
            return 0
        return plot_study(study, args.outputpath, args.out)
    except (StudyError, runlog.RunLogError) as error:
        print(f"python -m experiments: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\npython -m experiments: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
