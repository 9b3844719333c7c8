"""A study's grid points as MaskTrainer runs: each point's settings, experiment directory and claim name, and the
recorded run that is the point's (`matches`, `find_run`), to skip, resume or start it.
"""
import hashlib
import json
import sys
from pathlib import Path

import runlog
from settings import identity as run_identity
from settings.config import MATCHED_SETTINGS, RunConfig, default, network_recipe

REPO_ROOT = Path(__file__).resolve().parent.parent
# Settings that a run's directory does not already name, and that must agree for a run to count: not `jit`,
# which changes how the loop is compiled, not the experiment, and not `maxepochs`, since a run is the same run
# however far it went (a finished run with fewer epochs than a study asks for is extended): `settings.identity`.
MATCHED_KEYS = MATCHED_SETTINGS


def point_value(point: dict, key: str):
    """A run's setting: the study's value, else the network's recipe, else RunConfig's default (a `dataset` of
    None: the network's own)."""
    if key in point:
        return point[key]
    return network_recipe(point.get("nettype", default("nettype"))).get(key, default(key))


def resolved(point: dict) -> dict:
    """The point with its training type's canonical name and mask type, as the run's configuration records them."""
    config = RunConfig.from_dict(point, "study")  # with the network's recipe, as MaskTrainer builds it
    return dict(point, traintype=config.traintype, masktype=config.masktype, keep=config.keep)


def experiment_directory(point: dict, outputpath: Path) -> Path:
    """Where MaskTrainer writes this run (SPEC.md section 7)."""
    return RunConfig.from_dict(dict(point, outputpath=str(outputpath)), "study").experiment_directory()


def matches(config: dict, point: dict) -> bool:
    """Whether a recorded configuration is this point's run, trained this far or less (the directory already
    fixes the other settings)."""
    for key in MATCHED_KEYS:
        wanted = point_value(point, key)
        if not (key == "dataset" and wanted is None) and config.get(key, default(key)) != wanted:
            return False
    recorded = config.get("maxepochs")
    return isinstance(recorded, int) and recorded <= point_value(point, "maxepochs")


def claim_stem(point: dict) -> str:
    """The point's name among the claims in its experiment directory: its seed and a hash of the settings that
    `matches` compares (the directory holds the rest), so two studies that share a run share its claim."""
    p = resolved(point)
    identity = {key: point_value(p, key) for key in MATCHED_KEYS}
    if identity["dataset"] is None:  # the network's own, named as the run's configuration records it
        identity["dataset"] = RunConfig(nettype=point_value(p, "nettype")).dataset_name()
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"seed{point_value(p, 'seed')}-{digest}"


def logged_epochs(config_path: Path) -> int:
    """How many epochs an unfinished run has logged (-1: none, not even epoch 0)."""
    try:
        return len(runlog.read_log(runlog.RunFiles.from_config_path(config_path).log_json)["testAccuracy"]) - 1
    except runlog.RunLogError:
        return -1


def find_run(point: dict, outputpath: Path) -> tuple[str, Path | None]:
    """("finished" or "failed", config) to skip; ("resume", config) for the furthest unfinished run, or for a
    finished one to extend to the point's maxepochs; ("new", None)."""
    found = []
    for config_path in sorted(experiment_directory(point, outputpath).glob("Config_ID*.json")):
        try:
            config = runlog.read_config(runlog.RunFiles.from_config_path(config_path)).data
        except runlog.RunLogError:
            continue
        if matches(config, point):
            if config.get("status") == "failed" or (config.get("status") == "finished"
                                                     and config.get("maxepochs") == point_value(point, "maxepochs")):
                return config["status"], config_path
            found.append(config_path)
    if found:
        return "resume", max(found, key=logged_epochs)
    return "new", None


def trainer_command(point: dict, outputpath: Path, action: str, config_path: Path | None) -> list[str]:
    """The MaskTrainer command line for a new run, or for resuming `config_path`."""
    trainer = [sys.executable, str(REPO_ROOT / "MaskTrainer.py")]
    if action == "resume":  # with the point's epochs: a finished run asked for more is extended
        return trainer + ["--resume", str(config_path), "--maxepochs", str(point_value(point, "maxepochs"))]
    return trainer + [flag for key, value in point.items() for flag in command_flags(key, value)] + [
        "--outputpath", str(outputpath)]


def command_flags(key: str, value) -> list[str]:
    """Setting `key` on MaskTrainer's command line: `--augment` / `--no-augment` for a switch, else flag and value."""
    if isinstance(value, bool):
        return [f"--{key}" if value else f"--no-{key}"]
    return [f"--{key}", str(value)]


def describe(point: dict) -> str:
    """A run in a few words for progress lines."""
    words = [f"{key}={value}" for key, value in point.items() if key not in ("maxepochs", "batchsize", "lr")]
    return " ".join(words)
