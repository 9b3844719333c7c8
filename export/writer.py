"""Exporting one run: the plain `.keras` file, its size report (printed and written as JSON beside it), and
optionally its accuracy on the raw test set, measured on the file as written (loaded in safe mode)."""
import secrets
from pathlib import Path

import keras
import numpy as np

import datasets
import networks
import runlog
from export.errors import ExportError
from export.compaction import effective_size
from export.plain_model import hidden_activation, plain_model
from export.run_files import RunRecord
from export.trained_run import TrainedRun, read_trained_run
from training import checkpoint, provenance


def save_model(model: keras.Model, path: Path) -> int:
    """Write `model` to `path` atomically (a temporary file beside it, then a rename); returns its bytes."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ExportError(f"{path}: the model file must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save_model(path, model)
    return path.stat().st_size


def model_bytes(model: keras.Model, beside: Path) -> int:
    """The size of `model` as a `.keras` file, measured by writing it beside `beside` and removing it."""
    tmp = Path(beside).with_name(f".{Path(beside).stem}.{secrets.token_hex(4)}.size.keras")
    try:
        return save_model(model, tmp)
    finally:
        tmp.unlink(missing_ok=True)


def raw_test_set(trained: TrainedRun, datadir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The raw (uint8) test images and labels the run was tested on, for --verify: ExportError where they cannot
    be read, RunLogError where they are not the data the run recorded (its digests; a legacy run has none)."""
    try:
        raw, source = datasets.load_raw(trained.config["dataset"], datasets.resolve_data_directory(datadir))
    except (datasets.DataNotFoundError, ValueError) as error:  # not found, or a damaged file (DatasetError)
        raise ExportError(f"--verify: {error}") from None
    recorded = provenance.recorded(trained.config, trained.files.config).get("data")
    provenance.check_digests(source, recorded, provenance.data_digests(raw),
                             f"the data run {trained.files.run_id} trained on")
    return raw[2], raw[3]


def accuracy_on_test_set(model_path: Path, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy of the `.keras` file at `model_path` on the raw test images."""
    model = checkpoint.load_model(model_path)  # safe mode: what a stranger's Python does
    predictions = model.predict(x_test, batch_size=1000, verbose=0)
    return float(np.count_nonzero(np.argmax(predictions, axis=-1) == np.asarray(y_test).reshape(-1))) / len(y_test)


def export_run(record: RunRecord, out: str | Path, *, compact: bool = False, verify: bool = False,
               datadir: str | None = None) -> dict:
    """Export the run of `record` (`export.run_files.read_run_record`) to `out` (a `.keras` file) and write
    the report beside it (`out` with `.json`).

    Returns the report: per layer the units (or filters), non-zero weights and parameters before and after
    compaction, the totals, and the file bytes (the compact file's only with `compact`).
    """
    out = Path(out)
    check_output(out)
    trained = read_trained_run(record)
    # read before anything is written: a refusal writes nothing
    test_set = raw_test_set(trained, datadir or trained.config.get("datadir")) if verify else None
    dtype = trained.config.get("precision", "float32")
    size = effective_size(list(trained.kernels.values()), hidden_activation(trained.template),
                          chain=networks.get(trained.template.name).compactable)
    full = plain_model(trained.template, trained.kernels, trained.preprocessing, dtype=dtype)
    if compact:
        full_bytes = model_bytes(full, out)
        compact_bytes = save_model(plain_model(trained.template, trained.kernels, trained.preprocessing,
                                               compact=True, dtype=dtype), out)
    else:
        full_bytes, compact_bytes = save_model(full, out), None
    report = {
        "run": str(trained.files.config), "runId": trained.files.run_id, "nettype": trained.config["nettype"],
        "traintype": trained.config["traintype"], "activation": trained.config["activation"], "epoch": trained.epoch,
        "maxepochs": trained.config.get("maxepochs"), "source": str(trained.source), "file": str(out),
        "compact": compact, "loggedTestAccuracy": trained.test_accuracy,
        "layers": [{"name": name, "kind": layer.kind, "unitsBefore": layer.units, "unitsAfter": layer.units_kept,
                    "nonzeroBefore": layer.nonzero, "nonzeroAfter": layer.nonzero_kept,
                    "parametersBefore": layer.parameters, "parametersAfter": layer.parameters_kept}
                   for name, layer in zip(trained.kernels, size.layers)],
        "parameters": {"before": size.parameters, "after": size.parameters_kept},
        "nonzeroWeights": {"before": size.nonzero, "after": size.nonzero_kept},
        "bytes": {"before": full_bytes, "after": compact_bytes},
    }
    runlog.write_json(report_path(out), report)
    if verify:
        accuracy = accuracy_on_test_set(out, *test_set)
        report["verify"] = {"testAccuracy": accuracy, "equal": accuracy == trained.test_accuracy}
        runlog.write_json(report_path(out), report)
    return report


def check_output(out: Path) -> None:
    """Refuse (ExportError) a model file or report that would take the name of a run's file, which only that run's
    trainer writes (`runlog.is_run_file_name`: this run's or another's), or that is a link, which a write follows."""
    if out.suffix != ".keras":
        raise ExportError(f"{out}: the model file must end in .keras")
    for path in (out, report_path(out)):
        if runlog.is_run_file_name(path.name):
            raise ExportError(f"{path}: is named like a run's own files (Config_ID..., Model_ID..., in any of their "
                              "forms), which only that run's trainer writes; choose another --out")
        if path.is_symlink():
            raise ExportError(f"{path}: is a symbolic link, which the export would write through; choose another --out")
        if path.is_dir():
            raise ExportError(f"{path}: is a directory; choose another --out")


def report_path(out: str | Path) -> Path:
    """Where the report of the model file `out` goes: beside it, with `.json`."""
    return Path(out).with_suffix(".json")


def report_lines(report: dict) -> list[str]:
    """The report as the lines Exporter.py prints."""
    lines = [f"run {report['runId']} ({report['nettype']} {report['traintype']} {report['activation']}), "
             f"epoch {report['epoch']} of {report['maxepochs']}, trained kernels from {Path(report['source']).name}",
             f"{'layer':<11} {'kind':<5} {'units':>7} -> {'kept':<7} {'non-zero':>11} -> {'kept':<11} "
             f"{'parameters':>11} -> kept"]
    for layer in report["layers"]:
        lines.append(f"{layer['name']:<11} {layer['kind']:<5} {layer['unitsBefore']:>7,} -> {layer['unitsAfter']:<7,} "
                     f"{layer['nonzeroBefore']:>11,} -> {layer['nonzeroAfter']:<11,} "
                     f"{layer['parametersBefore']:>11,} -> {layer['parametersAfter']:<11,}".rstrip())
    nonzero, parameters, size = report["nonzeroWeights"], report["parameters"], report["bytes"]
    lines.append(f"{'total':<36} {nonzero['before']:>11,} -> {nonzero['after']:<11,} "
                 f"{parameters['before']:>11,} -> {parameters['after']:<11,}".rstrip())
    if report["compact"]:
        lines.append(f"file bytes: {size['before']:,} full -> {size['after']:,} compact "
                     f"({size['after'] / size['before']:.1%})")
        lines.append(f"wrote {report['file']} (compact) and {report_path(report['file'])}")
    else:
        lines.append(f"file bytes: {size['before']:,} (--compact drops the units listed as not kept)")
        lines.append(f"wrote {report['file']} and {report_path(report['file'])}")
    lines.append(f"test accuracy logged at epoch {report['epoch']}: {report['loggedTestAccuracy']:.4f}")
    if "verify" in report:
        verdict = "equal" if report["verify"]["equal"] else "DIFFERENT"
        lines.append(f"test accuracy of the file on the raw test set: {report['verify']['testAccuracy']:.4f} "
                     f"({verdict})")
    return lines
