"""Export a trained run as a plain Keras model that takes raw pixels and loads without this project.

Parses the command line, reads the run's files (refusing bad input before TensorFlow loads), and hands them to
`export.writer.export_run`; the logic lives in the `export` package.
Example: python Exporter.py Outputs/FreePruning/LeNet/.../Config_ID1a2b3c4.json --out lenet.keras --compact
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import datasets  # noqa: E402  (the environment variable above must be set before TensorFlow loads)
import runlog  # noqa: E402
from export import ExportError  # noqa: E402
from export.run_files import read_run_record  # noqa: E402
from training import backends  # noqa: E402
from settings.commands import EXIT_BAD_INPUT, EXIT_VERIFY_FAILED, OneLineParser  # noqa: E402
from settings.config import ConfigError  # noqa: E402


def keras_path(text: str) -> str:
    if not text.endswith(".keras"):
        raise argparse.ArgumentTypeError(f"{text} does not end in .keras")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="Exporter.py", description=__doc__.splitlines()[0])
    parser.add_argument("run", metavar="CONFIG_JSON", help="the run's Config_ID<id>.json")
    parser.add_argument("--out", required=True, type=keras_path, metavar="FILE.keras",
                        help="the model file to write; the size report goes beside it as FILE.json")
    parser.add_argument("--compact", action="store_true",
                        help="remove the units and filters that cannot affect the output")
    parser.add_argument("--checkpoint", action="store_true",
                        help="export the last checkpoint of an unfinished run")
    parser.add_argument("--verify", action="store_true",
                        help="measure the written file's accuracy on the raw test set and compare it with the log")
    parser.add_argument("--datadir", default=None,
                        help=f"for --verify: folder with the datasets (default: the run's, else ${datasets.DATA_ENV})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        backends.check_supported()
        record = read_run_record(args.run, checkpoint=args.checkpoint)  # no Keras yet: bad input fails fast
        backends.load_keras()  # quietly, and deterministic like training
        from export.writer import export_run, report_lines
        # Keras imports TensorFlow, also on JAX, wherever it serialises a layer: its start-up notices are held back
        with backends.quiet_library_notices():
            report = export_run(record, args.out, compact=args.compact, verify=args.verify, datadir=args.datadir)
    except (ExportError, ConfigError, runlog.RunLogError, datasets.DataNotFoundError, OSError) as error:
        print(f"Exporter.py: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("\n".join(report_lines(report)))
    if args.verify and not report["verify"]["equal"]:
        print(f"Exporter.py: the file's test accuracy {report['verify']['testAccuracy']} differs from the logged "
              f"{report['loggedTestAccuracy']}", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
