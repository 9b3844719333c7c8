"""A run's identity: the settings that make two runs the same run, and the experiment directory they name.

`RunConfig.identity` (a checkpoint's digest), the study runner's point matching and claim names, and the
summary's one run per seed all read these, so the identity is spelled once.
"""
from collections.abc import Sequence
from pathlib import Path

# The settings a run's experiment directory names (SPEC.md section 7; `keep` too, for EdgePopup), in path order.
# The recipe's settings follow, as tags after the learning rate when they differ from the paper's.
DIRECTORY_SETTINGS = ("traintype", "nettype", "p1", "masktype", "activation", "initializer", "lr", "keep", "optimizer",
                      "momentum", "weightdecay", "lrschedule", "augment", "batchnorm")
# The settings that are not part of a run's identity: where the files and the data are, how the loop was compiled
# (`jit` changes how, not what), and how many epochs were asked for (a finished run can be extended).
NOT_IDENTITY = ("outputpath", "datadir", "jit", "maxepochs")


def format_number(value: float) -> str:
    """How p1 and lr appear in directory names: the shortest float form (0.5, 0.001, 1e-05)."""
    return repr(float(value))


def experiment_directory(outputpath: str | Path, traintype: str, nettype: str, p1: float, masktype: str,
                         activation: str, initializer: str, lr: float, keep: float | None = None,
                         recipe_tags: Sequence[str] = ()) -> Path:
    """`<outputpath>/<traintype>/<nettype>/P1_<p1>/<masktype>_<activation>_<initializer>_LR<lr>/`; an EdgePopup
    run's mask type is followed by its kept fraction (`topk_K0.5_...`), so runs of different K never share one,
    and a recipe other than the paper's adds its tags at the end (`..._LR0.1_sgd_M0.9_WD0.0001_cosine100_aug`)."""
    kept = "" if keep is None else f"_K{format_number(keep)}"
    return (Path(outputpath) / traintype / nettype / f"P1_{format_number(p1)}"
            / "_".join([f"{masktype}{kept}_{activation}_{initializer}_LR{format_number(lr)}", *recipe_tags]))
