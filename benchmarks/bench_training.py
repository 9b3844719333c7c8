"""Training speed side by side: the project's compiled loop against plain Keras `model.fit` (issue 9).

In one process and on the same data, every variant of a section is built and compiled once, then timed in
turns, and the turns are repeated: all variants see the same machine load, so the ratios between the rows
of one section hold even on a busy machine, while absolute times do not. Prints a table (Markdown) and
writes it, with every raw timing, the machine and its load, to benchmarks/results/.

    python -m benchmarks.bench_training --datadir DIR [DIR ...]           # full run, ~15 min on 2 cores
    python -m benchmarks.bench_training --quick --datadir DIR [DIR ...]   # tiny sizes, under 2 minutes
    python -m benchmarks.bench_training --backend jax --networks LeNet ...  # the same rows on JAX

The backend is Keras's (`--backend` sets KERAS_BACKEND before Keras loads); the matmul reference is NumPy's.

BENCHMARKS.md holds a full run's table and what it shows.
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
BACKEND_FLAG = argparse.ArgumentParser(add_help=False)
BACKEND_FLAG.add_argument("--backend", choices=["tensorflow", "jax"], default=None)
_chosen = BACKEND_FLAG.parse_known_args()[0].backend if __name__ == "__main__" else None
if _chosen:
    os.environ["KERAS_BACKEND"] = _chosen  # before Keras loads: the Keras way of choosing a backend

import keras  # noqa: E402  (the environment variables above must be set before Keras loads its backend)
import numpy as np  # noqa: E402

import datasets  # noqa: E402
import networks  # noqa: E402
from masks.layers import masked_layers  # noqa: E402
from training import backends  # noqa: E402
from settings.config import RunConfig  # noqa: E402
from training.run import epoch_order  # noqa: E402
from settings.types import TRAINING_TYPES  # noqa: E402

BACKEND = backends.current()

LEARNING_RATE = 1e-3
SEED = 1
REFERENCE = "FreePruning, plain fit"
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


@dataclass(frozen=True)
class Variant:
    """One row of a section: a training type trained by the project's loop or by Keras `model.fit`."""
    traintype: str
    trainer: str = "project"  # "project": the backend's CompiledSteps as MaskTrainer runs it; "fit"
    jit: str = "auto"  # project: the --jit setting
    fit_options: tuple[tuple[str, object], ...] = ()  # fit: `model.compile` arguments beyond the defaults
    note: str = ""  # how the row differs from the project's rows
    steps_per_call: int | None = None  # project: None for the backend's own choice

    @property
    def label(self) -> str:
        return ", ".join(part for part in (self.traintype, self.note) if part)

    @property
    def setting(self) -> tuple:
        """Everything but the training type: rows with the same setting compare with each other."""
        return self.trainer, self.jit, self.fit_options, self.note, self.steps_per_call


@dataclass(frozen=True)
class Section:
    """Variants of one network and batch size, timed in turns on the same images."""
    network: str
    batch_size: int
    images: int  # trained per timed turn; for LeNet the whole training split (one epoch)
    variants: tuple[Variant, ...]


def variants(network: str, traintypes: tuple[str, ...], jit: str, determinism: bool) -> tuple[Variant, ...]:
    """The project's rows for `traintypes`, FreePruning with XLA the other way, and for LeNet `model.fit`.

    The `model.fit` rows go from plain (the reference) to compiled. Keras turns `jit_compile` off while
    op determinism is on, so its XLA rows are timed only with `--no-determinism`.
    """
    other = "off" if use_jit(jit, network) else "on"
    rows = tuple(Variant(name, jit=jit) for name in traintypes)
    if BACKEND.NAME == "tensorflow" or other == "on":  # JAX without jit runs op by op: no row worth timing
        rows += (Variant("FreePruning", jit=other, note=f"XLA {other}"),)
    if network != "LeNet":
        return rows
    rows += (Variant("FreePruning", jit=jit, steps_per_call=1, note="1 step per call"),)
    fit_xla = () if determinism else (
        Variant("FreePruning", "fit", fit_options=(("jit_compile", True),), note="fit, jit_compile"),
        Variant("FreePruning", "fit", fit_options=(("steps_per_execution", 100), ("jit_compile", True)),
                note="fit, both"))
    return rows + (
        Variant("FreePruning", "fit", note="plain fit"),
        Variant("FreePruning", "fit", fit_options=(("steps_per_execution", 100), ("jit_compile", False)),
                note="fit, steps_per_execution=100"),
        *fit_xla,
        Variant("Baseline", "fit", note="plain fit"))


def sections(quick: bool, jit: str, determinism: bool) -> list[Section]:
    """LeNet over a whole MNIST epoch; Conv2 and Conv6 on CIFAR-10 slices, at batch 128 fewer types; ResNet20 at
    its recipe's batch (64), Baseline against the two kinds of mask (pruning, flipping).

    Every training type is timed at the default batch size (25); batch 128, which is there for the
    throughput, times Baseline and FreePruning only, to keep a full run near 20 minutes on 2 cores.
    """
    every = tuple(TRAINING_TYPES)
    pair = ("Baseline", "FreePruning")
    resnet = ("Baseline", "FreePruning", "SignFlipping")
    sizes = ([("LeNet", 25, 2500, every), ("Conv2", 25, 50, every), ("Conv2", 128, 256, pair),
              ("ResNet20", 64, 128, resnet)] if quick
             else [("LeNet", 25, 55000, every), ("Conv2", 25, 800, every), ("Conv2", 128, 1024, pair),
                   ("Conv6", 25, 400, every), ("Conv6", 128, 384, pair), ("ResNet20", 64, 640, resnet)])
    if BACKEND.device() == "GPU" and not quick:  # a GPU step takes well under a millisecond: time whole epochs
        sizes = [(network, batch, 45000, types) for network, batch, _, types in sizes]
    return [Section(network, batch, images, variants(network, types, jit, determinism))
            for network, batch, images, types in sizes]


def use_jit(jit: str, network: str) -> bool:
    return BACKEND.use_jit(jit, networks.get(network))


def make_steps(model: keras.Model, network: str, x: np.ndarray, y: np.ndarray, batch_size: int, jit: bool,
               steps_per_call: int | None = None):
    """The backend's compiled steps as MaskTrainer makes them, or with `steps_per_call` steps per call."""
    convolutional = networks.get(network).convolutional
    return BACKEND.Steps(model, keras.optimizers.Adam(LEARNING_RATE), x, y, batch_size, jit,
                         steps_per_call or BACKEND.steps_per_call(jit, convolutional))


def build_model(network: str, traintype: str, input_shape: tuple) -> keras.Model:
    """The network as MaskTrainer builds it for `traintype` with the default flags and a fixed seed."""
    settings = RunConfig(traintype=traintype).resolved()  # the type's default mask (and EdgePopup's default K)
    keras.utils.set_random_seed(SEED)  # `fit` shuffles with the backend's generator, which determinism wants seeded
    return networks.build(network, input_shape, seed=SEED,
                          **settings.training_type.layer_options(settings.masktype, settings.keep))


def project_trainer(model: keras.Model, variant: Variant, network: str, x: np.ndarray, y: np.ndarray,
                    batch_size: int) -> tuple[Callable[[], None], dict]:
    """One epoch of the project's compiled loop, compiled beforehand, as `training.run.Run` trains it."""
    jit = use_jit(variant.jit, network)
    steps = make_steps(model, network, x, y, batch_size, jit, variant.steps_per_call)
    order = epoch_order(SEED, 1, len(y))
    steps.compile(order)
    return lambda: steps.train_epoch(order), {"jit": jit, "steps_per_call": steps.steps_per_call}


def fit_trainer(model: keras.Model, variant: Variant, x: np.ndarray, y: np.ndarray,
                batch_size: int) -> tuple[Callable[[], None], dict]:
    """One epoch of `model.fit`, its train function traced beforehand on a few batches."""
    options = dict(variant.fit_options)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(), **options)
    warm_up = batch_size * max(2, options.get("steps_per_execution", 1))
    model.fit(x[:warm_up], y[:warm_up], batch_size=batch_size, epochs=1, verbose=0)
    settings = {"jit": bool(model.jit_compile), "steps_per_call": options.get("steps_per_execution", 1)}
    return lambda: model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0), settings


def matmul_runner(size: int, count: int) -> Callable[[], None]:
    """`count` float32 [size, size] NumPy matrix products: the machine's dense throughput, whatever the backend."""
    generator = np.random.default_rng(0)
    a, b = (generator.standard_normal((size, size), dtype=np.float32) for _ in range(2))

    def run():
        for _ in range(count):
            np.matmul(a, b)
    return run


def training_flops_per_image(model: keras.Model) -> int:
    """FLOPs of one image's training step in the masked layers' products (elementwise work not counted).

    Each layer's forward product costs 2 x positions x kernel size; the backward pass costs the same again
    for the kernel gradient and, except in the first layer, for the input gradient.
    """
    total = 0
    for index, layer in enumerate(masked_layers(model)):
        positions = math.prod(layer.output.shape[1:-1])  # output pixels of a convolution, 1 for dense
        forward = 2 * positions * math.prod(layer.kernel.shape)
        total += forward * (3 if index else 2)
    return total


def summary(values: list[float], best: Callable = min) -> dict:
    """The best value (the least disturbed turn on a shared machine) and the median."""
    return {"best": best(values), "median": statistics.median(values)}


def time_section(section: Section, data: datasets.Splits, repeats: int, matmul_size: int,
                 log: Callable[[str], None]) -> dict:
    """Build and compile every variant, then time them in `repeats` interleaved turns."""
    x, y = data.x_train[:section.images], data.y_train[:section.images]
    runners, settings = {}, {}
    for variant in section.variants:
        start = time.perf_counter()
        model = build_model(section.network, variant.traintype, x.shape[1:])
        if variant.trainer == "fit":
            runners[variant.label], settings[variant.label] = fit_trainer(model, variant, x, y,
                                                                          section.batch_size)
        else:
            runners[variant.label], settings[variant.label] = project_trainer(
                model, variant, section.network, x, y, section.batch_size)
        settings[variant.label].update(flops_per_image=training_flops_per_image(model),
                                       build_and_compile_seconds=time.perf_counter() - start)
    matmul_count = 4
    runners["matmul"] = matmul_runner(matmul_size, matmul_count)
    seconds = {label: [] for label in runners}
    for turn in range(repeats):
        for label, run in runners.items():
            start = time.perf_counter()
            run()
            seconds[label].append(time.perf_counter() - start)
        log(f"  {section.network} batch {section.batch_size}: turn {turn + 1}/{repeats} done")
    steps = math.ceil(section.images / section.batch_size)
    rows = [{"label": variant.label, "traintype": variant.traintype, "trainer": variant.trainer,
             "setting": variant.note or "project default", **settings[variant.label],
             "seconds": seconds[variant.label],
             "ms_per_step": summary([1000 * s / steps for s in seconds[variant.label]]),
             "images_per_second": summary([section.images / s for s in seconds[variant.label]], max),
             "gflops": summary([settings[variant.label]["flops_per_image"] * section.images / s / 1e9
                                for s in seconds[variant.label]], max)}
            for variant in section.variants]
    flops = 2 * matmul_size ** 3 * matmul_count
    result = {"network": section.network, "batch_size": section.batch_size, "images": section.images,
              "steps": steps, "rows": rows,
              "matmul": {"size": matmul_size, "seconds": seconds["matmul"],
                         "gflops": summary([flops / s / 1e9 for s in seconds["matmul"]], max)}}
    add_ratios(result, section.variants)
    return result


def add_ratios(result: dict, variants: tuple[Variant, ...]) -> None:
    """Masked / Baseline with the same setting, each row / the plain-fit reference, GFLOP/s / matmul's."""
    rows = {row["label"]: row for row in result["rows"]}
    baselines = {variant.setting: variant.label for variant in variants if variant.traintype == "Baseline"}
    for variant in variants:
        row = rows[variant.label]
        baseline = rows.get(baselines.get(variant.setting, ""))
        row["vs_baseline"] = ratio(row, baseline) if baseline and baseline is not row else None
        row["vs_reference"] = ratio(row, rows[REFERENCE]) if REFERENCE in rows else None
        row["matmul_fraction"] = row["gflops"]["best"] / result["matmul"]["gflops"]["best"]


def ratio(row: dict, other: dict) -> dict:
    """Time ratio of two rows: of their best turns, and the median of the turn-by-turn ratios."""
    return {"best": min(row["seconds"]) / min(other["seconds"]),
            "median": statistics.median(a / b for a, b in zip(row["seconds"], other["seconds"]))}


def classification_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    probabilities = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


def accuracy_check(data: datasets.Splits, epochs: int, images: int) -> dict:
    """LeNet FreePruning for a few epochs from one seed: the project's loop twice, plain fit once.

    The two project runs must end with bit-identical variables (a run repeats itself exactly); plain fit
    shuffles differently, so its accuracy should agree only within noise.
    """
    x, y = data.x_train[:images], data.y_train[:images]
    result = {"epochs": epochs, "images": images}
    finals = []
    for name in ("project", "project_again"):
        model = build_model("LeNet", "FreePruning", x.shape[1:])
        steps = make_steps(model, "LeNet", x, y, 25, use_jit("auto", "LeNet"))
        accuracies = []
        for epoch in range(1, epochs + 1):
            order = epoch_order(SEED, epoch, len(y))
            steps.compile(order)
            steps.train_epoch(order)
            accuracies.append(classification_accuracy(model, data.x_test, data.y_test))
        result[name] = accuracies
        finals.append([keras.ops.convert_to_numpy(variable) for variable in model.weights])
    result["bit_identical_repeat"] = all(np.array_equal(a, b) for a, b in zip(*finals))
    model = build_model("LeNet", "FreePruning", x.shape[1:])
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    accuracies = []
    for _ in range(epochs):
        model.fit(x, y, batch_size=25, epochs=1, shuffle=True, verbose=0)
        accuracies.append(classification_accuracy(model, data.x_test, data.y_test))
    result["plain_fit"] = accuracies
    return result


def machine(determinism: bool) -> dict:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name", platform.processor()), "logical_cores": os.cpu_count(),
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags],
        "device": BACKEND.device(), "backend": BACKEND.NAME, **BACKEND.versions(),
        "platform": platform.platform(), "python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__, "op_determinism": determinism,
        "environment": {name: os.environ[name] for name in ("TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS",
                                                             "TF_XLA_FLAGS") if name in os.environ},
    }


def load_splits(name: str, directories: list[str], trainsize: int | None) -> datasets.Splits:
    """Dataset `name` from the first directory that holds it (else the usual fallbacks), preprocessed."""
    spec = datasets.get(name)
    for directory in directories:
        place = Path(directory) / spec.subdirectory
        raw = spec.read_directory(place) if place.is_dir() else None
        if raw is not None:
            return datasets.preprocess(raw, trainsize)
    return datasets.preprocess(datasets.load_raw(name, None)[0], trainsize)


def ratio_text(value: dict | None) -> str:
    """A ratio as `best (median)`."""
    return "" if value is None else f"{value['best']:.2f} ({value['median']:.2f})"


def table(results: list[dict]) -> str:
    """The results as one Markdown table."""
    lines = ["| network | batch | row | XLA | steps/call | compile s | ms/step best | ms/step median | images/s |"
             " masked / Baseline | / plain fit | GFLOP/s | of matmul |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for section in results:
        for row in section["rows"]:
            lines.append(
                f"| {section['network']} | {section['batch_size']} | {row['label']} | "
                f"{'on' if row['jit'] else 'off'} | {row['steps_per_call']} | "
                f"{row['build_and_compile_seconds']:.0f} | "
                f"{row['ms_per_step']['best']:.2f} | {row['ms_per_step']['median']:.2f} | "
                f"{row['images_per_second']['best']:,.0f} | {ratio_text(row['vs_baseline'])} | "
                f"{ratio_text(row['vs_reference'])} | {row['gflops']['best']:.1f} | "
                f"{row['matmul_fraction']:.0%} |")
        matmul = section["matmul"]
        lines.append(f"| {section['network']} | {section['batch_size']} | float32 matmul "
                     f"{matmul['size']}x{matmul['size']} | | | | | | | | | {matmul['gflops']['best']:.1f} | |")
    return "\n".join(lines)


def accuracy_lines(check: dict) -> str:
    def listed(values):
        return " ".join(f"{value:.4f}" for value in values)
    return (f"LeNet FreePruning test accuracy per epoch ({check['images']} training images):\n"
            f"  project loop       {listed(check['project'])}\n"
            f"  project loop again {listed(check['project_again'])}  "
            f"(bit-identical variables: {check['bit_identical_repeat']})\n"
            f"  plain model.fit    {listed(check['plain_fit'])}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[BACKEND_FLAG])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--datadir", nargs="+", default=[os.environ.get(datasets.DATA_ENV, ".")],
                        help=f"folders holding mnist/ and cifar10/ (default: ${datasets.DATA_ENV})")
    parser.add_argument("--repeats", type=int, default=3, help="timed turns per variant (at least 3)")
    parser.add_argument("--networks", nargs="+", default=None, help="time only these networks")
    parser.add_argument("--jit", default="auto", choices=["auto", "on", "off"],
                        help="MaskTrainer's --jit for the project's rows (one more row has it the other way)")
    parser.add_argument("--no-determinism", action="store_true",
                        help="leave TensorFlow's op determinism off (MaskTrainer turns it on)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default: benchmarks/results/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: the best and the median need several turns")
    started = time.perf_counter()
    load_before = os.getloadavg()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {line}", flush=True)

    backends.add_xla_flag(backends.WIDE_VECTORS_FLAG)  # XLA's settings as in every run (`backends.load_keras`)
    determinism = not args.no_determinism
    if determinism:
        BACKEND.enable_determinism()
    chosen = [section for section in sections(args.quick, args.jit, determinism)
              if args.networks is None or section.network in args.networks]
    with_lenet = any(section.network == "LeNet" for section in chosen)  # the accuracy check trains LeNet too
    mnist = load_splits("mnist", args.datadir, None) if with_lenet else None
    conv_images = max([s.images for s in chosen if s.network != "LeNet"], default=0)
    cifar = load_splits("cifar10", args.datadir, conv_images) if conv_images else None
    matmul_size = 1024 if args.quick else 2048
    results = []
    for section in chosen:
        log(f"{section.network}, batch {section.batch_size}, {section.images} images: building and compiling")
        data = mnist if networks.get(section.network).default_dataset == "mnist" else cifar
        results.append(time_section(section, data, args.repeats, matmul_size, log))
    check = None
    if with_lenet:
        log("accuracy check: LeNet FreePruning, project loop twice and plain fit")
        check = accuracy_check(mnist, 1 if args.quick else 3, 2500 if args.quick else len(mnist.y_train))
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
              "command": " ".join(["python -m benchmarks.bench_training", *(argv or sys.argv[1:])]),
              "machine": machine(determinism), "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "repeats": args.repeats, "sections": results,
              "accuracy_check": check, "total_seconds": time.perf_counter() - started}
    output = args.output or (REPO_ROOT / "benchmarks" / "results" / (
        f"bench_training_{datetime.now().strftime('%Y%m%d-%H%M%S')}{'_quick' if args.quick else ''}.json"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    info = report["machine"]
    print(f"\n{info['cpu']}, {info['logical_cores']} logical cores, flags {' '.join(info['cpu_flags'])}; "
          f"{info['backend']} on {info['device']}, Keras {info['keras']}; "
          f"determinism {'on' if determinism else 'off'}")
    print(f"load average before {tuple(round(v, 2) for v in load_before)}, "
          f"after {tuple(round(v, 2) for v in report['load_average_after'])}\n")
    print(table(results))
    if check is not None:
        print(f"\n{accuracy_lines(check)}")
    print(f"\ntotal {report['total_seconds']:.0f} s; written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
