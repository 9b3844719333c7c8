"""Containment: what the tools write and delete stays inside what they own, never through a link and never on a
file's word alone; the names of a run's files are its trainer's alone."""
import json
import os
import shutil
from pathlib import Path

import pytest

import experiments
import runlog
from tests.helpers import POINT, write_run


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a/..", "", 7, None])
def test_inside_refuses_escapes_and_names_that_are_not_names(tmp_path, name):
    assert runlog.inside(tmp_path, name) is None


def test_inside_refuses_a_link_anywhere_on_the_way_and_a_file_as_a_folder(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "file").write_text("x")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "link.png").symlink_to(tmp_path / "file")
    assert runlog.inside(tmp_path, "real/sub/new/deeper.png") == tmp_path / "real/sub/new/deeper.png"
    assert runlog.inside(tmp_path, "./real") == tmp_path / "real"
    for name in ("linked", "linked/sub/x.png", "real/link.png", "file/x"):
        assert runlog.inside(tmp_path, name) is None, name


@pytest.mark.parametrize("name, belongs", [
    ("Config_ID1a2b3c4.json", True), ("Config_IDother.keras", True), ("Model_IDx.keras", True),
    ("TrainLogs_IDx.csv", True), ("Weights_IDx.json", True), ("Checkpoint_IDx.npz", True),
    ("Preprocessing_IDx.keras", True), ("masks_idx.NPZ", True), ("lenet.keras", False), ("Summary.md", False),
    ("Config_IDx.png", False), ("Claim_seed1-0123456789_g0.json", False), ("MyConfig_IDx.json", False)])
def test_run_file_names_come_from_run_files_in_every_suffix(name, belongs):
    assert runlog.is_run_file_name(name) is belongs
    assert all(runlog.is_run_file_name(path.name) for path in runlog.RunFiles(Path("d"), "abc1234").paths())


def view_of_one_run(tmp_path: Path) -> tuple[experiments.Study, Path, Path]:
    """A study of one finished run under tmp_path/Outputs and its view under tmp_path/report/s/runs."""
    outputs = tmp_path / "Outputs"
    write_run(outputs, POINT, "aaaaaaa", "finished", 3)
    study = experiments.Study("s", "", [POINT], {})
    return study, outputs, experiments.study_view(study, outputs, tmp_path / "report" / "s" / "runs")


def edit_manifest(view: Path, **entries: list[str]) -> None:
    manifest = json.loads((view / experiments.VIEW_MANIFEST).read_text())
    for key, names in entries.items():
        manifest[key] = manifest.get(key, []) + names
    (view / experiments.VIEW_MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("spelling", ["absolute", "relative"])
def test_a_crafted_manifest_removes_nothing_outside_the_view(tmp_path, spelling):
    study, outputs, view = view_of_one_run(tmp_path)
    victim = tmp_path / "victim"
    (victim / "empty").mkdir(parents=True)
    (victim / "Accuracy_Sparsity.png").write_bytes(b"mine")
    (victim / "Config_IDaaaaaaa.json").symlink_to(runlog.RunFiles(experiments.experiment_directory(
        POINT, outputs), "aaaaaaa").config)  # looks like one of the view's links
    names = [victim / "Accuracy_Sparsity.png", victim / "Config_IDaaaaaaa.json", victim / "empty"]
    if spelling == "relative":
        names = [os.path.relpath(name, view) for name in names]
    edit_manifest(view, files=[str(names[0])], links=[str(names[1])], directories=[str(names[2])])
    experiments.study_view(study, outputs, view)  # the foreign entries are left alone, the view rebuilt
    assert (victim / "Accuracy_Sparsity.png").read_bytes() == b"mine"
    assert (victim / "Config_IDaaaaaaa.json").is_symlink() and (victim / "empty").is_dir()


def test_the_view_cleanup_never_follows_a_link_placed_in_the_view(tmp_path, capsys):
    study, outputs, view = view_of_one_run(tmp_path)
    top = experiments.experiment_directory(POINT, Path(".")).parts[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(view / top, elsewhere / top)  # the view's own folder, its links and a figure, moved out ...
    (view / top).symlink_to(elsewhere / top)  # ... and a link to it put in its place
    directory = experiments.experiment_directory(POINT, elsewhere)
    (directory / "Accuracy_Sparsity.png").write_bytes(b"mine")
    with pytest.raises(experiments.StudyError, match=f"did not make .{top}."):
        experiments.study_view(study, outputs, view)
    assert (directory / "Accuracy_Sparsity.png").read_bytes() == b"mine"
    assert (directory / "Config_IDaaaaaaa.json").is_symlink() and (directory / "TrainLogs_IDaaaaaaa.json").is_symlink()


def test_a_file_linked_in_place_of_a_figure_is_neither_deleted_nor_written_through(tmp_path):
    study, outputs, view = view_of_one_run(tmp_path)
    precious = tmp_path / "precious.png"
    precious.write_bytes(b"mine")
    (experiments.experiment_directory(POINT, view) / "Accuracy_Sparsity.png").symlink_to(precious)
    with pytest.raises(experiments.StudyError, match="did not make"):
        experiments.study_view(study, outputs, view)
    assert precious.read_bytes() == b"mine"


def test_a_plot_groups_folder_or_summary_that_is_a_link_is_refused(tmp_path, capsys):
    from experiments.__main__ import main
    _, outputs, _ = view_of_one_run(tmp_path)
    study_file = tmp_path / "s.toml"
    study_file.write_text('[grid]\nseed = [2]\n[fixed]\nnettype = "LeNet"\ntraintype = "FreeFlipping"\n'
                          'initializer = "heconstant"\ndataset = "mnist"\nmaxepochs = 3\n')
    precious = tmp_path / "precious.md"
    precious.write_text("mine")
    (tmp_path / "report" / "s" / "all").mkdir()
    (tmp_path / "report" / "s" / "all" / "Summary.md").symlink_to(precious)
    assert main(["plot", str(study_file), "--outputpath", str(outputs), "--out", str(tmp_path / "report")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "passes through a link" in error and "Summary.md" in error
    assert precious.read_text() == "mine"


def test_the_summary_is_never_written_through_a_link(tmp_path):
    from experiments import summary
    precious = tmp_path / "precious.csv"
    precious.write_text("mine")
    (tmp_path / "Summary.csv").symlink_to(precious)
    with pytest.raises(experiments.StudyError, match="passes through a link"):
        summary.write([], tmp_path)
    assert precious.read_text() == "mine"
