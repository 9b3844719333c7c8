"""Running MaskTrainer from tests: in-process for speed, as a subprocess where the process itself matters."""
import json
import os
import subprocess
import sys
from pathlib import Path

import MaskTrainer
import runlog
from training.run import Run

REPO_ROOT = Path(__file__).resolve().parent.parent


def new_run(output: Path, data: Path, *flags: str) -> Run:
    """A Run built exactly as `MaskTrainer.py --outputpath output --datadir data flags...` builds it."""
    args = MaskTrainer.build_parser().parse_args(
        ["--outputpath", str(output), "--datadir", str(data), *flags])
    config = MaskTrainer.new_config(args)
    return Run(config, MaskTrainer.run_files_for(config), print_line=lambda line: None)


def only_run(output: Path) -> runlog.RunFiles:
    """The files of the single run under `output`."""
    (config_path,) = output.rglob("Config_ID*.json")
    return runlog.RunFiles.from_config_path(config_path)


def trainer_process(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """MaskTrainer.py as a child process, its output captured as text."""
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "MaskTrainer.py"), *args], cwd=REPO_ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def comparable_log(path: Path) -> dict:
    """A log without its timings, which differ between identical runs."""
    log = json.loads(path.read_text())
    del log["epochSeconds"]
    return log
