"""What the command-line tools share: their exit statuses and the parser that reports bad input in one line."""
import argparse

EXIT_OK = 0
EXIT_FAILED = 1  # MaskTrainer: the run failed (its configuration says why); python -m experiments: a run failed
EXIT_VERIFY_FAILED = 1  # Exporter --verify: the written file's test accuracy differs from the log
EXIT_BAD_INPUT = 2  # a flag, a file or a setting refused before anything ran
EXIT_RUN_STOPPED = 3  # MaskTrainer: the run stopped on its own (a loss that is not finite)
EXIT_INTERRUPTED = 130  # stopped by a signal: 128 + its number (130: Ctrl-C, at the next safe point)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as a single line (no usage block) and exits with status 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")
