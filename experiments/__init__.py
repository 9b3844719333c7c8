"""Reproduction studies: one small TOML file per grid of MaskTrainer runs, and the runner that completes it.

- `experiments.studies`: reading, checking and expanding a study file into grid points (`load_study`).
- `experiments.points`: a grid point as a MaskTrainer run: its directory, its claim name, the recorded run that is it.
- `experiments.scheduling`: `run_study`, every point claimed and trained (`experiments.claims`), locally
  (`experiments.runner`) or on a Ray cluster (`experiments.ray_pool`).
- `experiments.views`: the study's own runs as a folder of links, its plots and its table (`experiments.summary`).

This file only gathers their public names: the modules import each other, never a name from here.
"""
from experiments.points import (MATCHED_KEYS, REPO_ROOT, claim_stem, describe, experiment_directory, find_run,
                                logged_epochs, matches, point_value, resolved, trainer_command)
from experiments.scheduling import run_study
from experiments.studies import (MAX_STUDY_POINTS, PLOT_NAME, RESERVED_PLOT_NAMES, STUDY_DIRECTORY, STUDY_SETTINGS,
                                 Study, StudyError, check_points, contained, load_study, plot_groups_of, study_names,
                                 study_path)
from experiments.views import (VIEW_MANIFEST, comparison_stem, counted_runs, plot_groups, plot_study, study_view,
                               table_study, warn)

__all__ = ["MATCHED_KEYS", "MAX_STUDY_POINTS", "PLOT_NAME", "REPO_ROOT", "RESERVED_PLOT_NAMES", "STUDY_DIRECTORY",
           "STUDY_SETTINGS", "VIEW_MANIFEST", "Study", "StudyError", "check_points", "claim_stem", "comparison_stem",
           "contained", "counted_runs", "describe", "experiment_directory", "find_run", "load_study", "logged_epochs",
           "matches", "plot_groups", "plot_groups_of", "plot_study", "point_value", "resolved", "run_study",
           "study_names", "study_path", "study_view", "table_study", "trainer_command", "warn"]
