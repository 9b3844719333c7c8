"""Train the connectivity of a network whose weights are random and frozen (Ivan & Florian 2020).

Parses the command line, checks it, and hands the settings to `training.run.Run`. The backend is Keras's:
`KERAS_BACKEND=tensorflow` (the default) or `KERAS_BACKEND=jax`.
Example: python MaskTrainer.py --nettype Conv6 --traintype MinPruning --initializer heconstant --p1 0.5
"""
import argparse
import contextlib
import os
import signal
import sys
import traceback
from dataclasses import fields, replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no INFO or WARNING lines

try:
    from training import interrupts  # signal and threading only: first, so that a stop while NumPy loads is caught
    if __name__ == "__main__":
        interrupts.raise_on_stop_signals()  # SIGTERM and SIGHUP stop the command as Ctrl-C does
    from training import backends  # light: Keras is loaded inside main
    from settings.commands import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_RUN_STOPPED, OneLineParser
    from settings.config import ConfigError, RunConfig
except KeyboardInterrupt as stop:  # Ctrl-C (or SIGTERM, SIGHUP) while Python loads NumPy: 128 + the signal
    print("\nMaskTrainer.py: interrupted", file=sys.stderr)
    sys.exit(128 + getattr(stop, "signum", signal.SIGINT))

PROG = "MaskTrainer.py"


def value_parser(name: str, kind: type):
    """argparse `type=` for setting `name`: parse the text as `kind`, then apply RunConfig's check."""
    requirement = RunConfig.problem(name, "") or ""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is {requirement}") from None
        reason = RunConfig.problem(name, value)
        if reason:
            raise argparse.ArgumentTypeError(f"{text} is {reason}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """One flag per RunConfig field (left out of the result when not given), then the flags of this command."""
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    for item in fields(RunConfig):
        metadata = item.metadata
        help_text = f"{metadata['help']} (default: {item.default})" if item.default is not None else metadata["help"]
        if metadata["choices"] is not None:
            parser.add_argument(f"--{item.name}", choices=metadata["choices"](), help=help_text,
                                default=argparse.SUPPRESS)
        elif metadata["parse"] is bool:  # --augment / --no-augment
            parser.add_argument(f"--{item.name}", action=argparse.BooleanOptionalAction, help=metadata["help"],
                                default=argparse.SUPPRESS)
        else:
            parser.add_argument(f"--{item.name}", type=value_parser(item.name, metadata["parse"]), help=help_text,
                                default=argparse.SUPPRESS)
    parser.add_argument("--resume", default=None, metavar="CONFIG_JSON",
                        help="continue the run of this Config_ID<id>.json from its last finished epoch; "
                             "with --maxepochs N, extend a finished run to N epochs (other settings are refused)")
    parser.add_argument("--verbose", action="store_true", help="Keras progress bar during each epoch")
    parser.add_argument("--tensorboard", action="store_true",
                        help="write TensorBoard summaries per epoch under the run's directory (needs TensorFlow)")
    return parser


def given_settings(args: argparse.Namespace) -> dict:
    """The settings given on the command line (argparse leaves the others out)."""
    return {item.name: getattr(args, item.name) for item in fields(RunConfig) if hasattr(args, item.name)}


def resolve_run(args: argparse.Namespace):
    """The settings, configuration record and files of the run to train; one of BAD_INPUT for bad input."""
    import datasets
    import runlog
    from training.run import new_record, read_record, thread_settings
    given = given_settings(args)
    if args.resume is not None:
        if not args.resume.strip():
            raise ConfigError("--resume needs the path of a Config_ID<id>.json file")
        other = sorted(set(given) - {"maxepochs"})
        if other:
            raise ConfigError(f"--resume takes its settings from the file; only --maxepochs (to extend) may be "
                              f"given, not --{other[0]}")
        files = runlog.RunFiles.from_config_path(args.resume)
        settings, record = read_record(files)
        if record.get("threads", {}) != thread_settings():
            print(f"{PROG}: warning: run {files.run_id} was trained with thread limits {record.get('threads', {})}, "
                  f"now {thread_settings()}: it will differ in the last bits from an uninterrupted run",
                  file=sys.stderr)
        if "maxepochs" in given and given["maxepochs"] != settings.maxepochs:
            if settings.spans_its_epochs():
                raise ConfigError(f"run {files.run_id} follows --lrschedule {settings.lrschedule} over its "
                                  f"{settings.maxepochs} epochs; it cannot be extended to {given['maxepochs']}")
            settings = replace(settings, maxepochs=given["maxepochs"])
        return settings, record, files
    settings = RunConfig.from_dict(given, "command line")  # the network's recipe for what is not given
    datasets.resolve_data_directory(settings.datadir)
    settings, record = new_record(settings)
    return settings, record, runlog.RunFiles(settings.experiment_directory(), record["runId"])


def already_finished(args: argparse.Namespace, settings: RunConfig, record: dict, files) -> bool:
    """Whether `--resume` has nothing to do: the run finished, and no `--maxepochs` beyond its epochs is asked for
    (a run a callback stopped early stays stopped unless extended on purpose)."""
    import runlog
    if record.get("status") != "finished":
        return False
    return "maxepochs" not in given_settings(args) or \
        len(runlog.read_log(files.log_json)["testAccuracy"]) - 1 >= settings.maxepochs


def callbacks_for(args: argparse.Namespace, files) -> list:
    """The Keras callbacks the flags ask for."""
    if not args.tensorboard:
        return []
    try:
        from training.summaries import ConnectivitySummaries
    except ImportError:
        print(f"{PROG}: --tensorboard needs TensorFlow, which cannot be imported here; training without it",
              file=sys.stderr)
        return []
    board = files.directory / f"TensorBoard_ID{files.run_id}"
    if board.is_symlink():
        raise ConfigError(f"{board}: is a symbolic link, which the summaries would be written through; remove it")
    return [ConnectivitySummaries(board)]


def prepare_output(files, record: dict, outputpath: str) -> None:
    """Create the run's directory and write its configuration: the check that the output path is writable."""
    import runlog
    if runlog.reached_through_link(outputpath, files.directory):  # a resumed run that moved: its folder is its own
        raise ConfigError(f"cannot write to output path {outputpath}: the way to {files.directory} passes through "
                          f"a symbolic link or a file, which the run's files would be written through")
    try:
        runlog.write_json(files.config, record)
    except OSError as error:
        raise ConfigError(f"cannot write to output path {outputpath}: {error.strerror or error}") from None


def main(argv: list[str] | None = None) -> int:
    files = None
    hold = contextlib.ExitStack()  # a resumed run's lock (`runlog.held`), let go however main ends
    loading = interrupts.DeferredInterrupt()  # a KeyboardInterrupt in the backend's C++ start-up can abort the process
    try:
        backends.check_supported()
        args = build_parser().parse_args(argv)  # the registries load without Keras: --help is quick
        with loading:
            backends.load_keras()
        loading.check()  # Ctrl-C while the libraries loaded takes effect now
        import datasets
        import runlog
        from training.run import Run, RunFailed
        bad_input = (ConfigError, datasets.DatasetError, datasets.DataNotFoundError, runlog.RunLogError)
        try:
            settings, record, files = resolve_run(args)
            if args.resume is not None:
                hold.enter_context(runlog.held(files))  # before anything is read to be trained on, or written
            if args.resume is not None and already_finished(args, settings, record, files):
                print(f"run {files.run_id} already finished; nothing to do")
                return 0
            run = Run(settings, record, files, verbose=args.verbose, callbacks=callbacks_for(args, files))
            prepare_output(files, run.record, settings.outputpath)
        except bad_input as error:  # every bad input, found before any training
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except Exception:  # noqa: BLE001  a bug, not bad input: shown whole; no run file exists yet
            traceback.print_exc()
            print(f"{PROG}: failed before the run started", file=sys.stderr)
            return EXIT_FAILED
        print(f"run {files.run_id}: {files.directory} (seed {settings.seed}, backend {record['backend']})")
        try:
            run.train()
        except RunFailed as failure:
            print(f"{PROG}: run stopped: {failure}", file=sys.stderr)
            return EXIT_RUN_STOPPED
        except bad_input as error:  # a checkpoint or log refused on resuming: the run is left as it was
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except OSError as error:  # a full disk: the files keep the last finished epoch
            print(f"{PROG}: error: {error}; once fixed, continue with --resume {files.config}", file=sys.stderr)
            return EXIT_FAILED
        except Exception:  # noqa: BLE001  the run is already marked failed with the reason
            traceback.print_exc()
            print(f"{PROG}: run {files.run_id} failed; its configuration records why", file=sys.stderr)
            return EXIT_FAILED
    except ConfigError as error:  # an unsupported backend
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP (training.interrupts)
        hint = f"; continue with --resume {files.config}" if files is not None and files.config.exists() else ""
        print(f"\n{PROG}: {interrupts.describe(stop)}{hint}", file=sys.stderr)
        return interrupts.exit_status(stop)
    finally:
        hold.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
