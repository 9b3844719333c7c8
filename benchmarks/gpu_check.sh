#!/usr/bin/env bash
# The GPU check in ONE call of the `device` tool (about 6 minutes on an H200 before the ResNet20 rows, not timed
# there yet): Conv6/Conv2/ResNet20 masked vs Baseline step times through JAX, then the conv-short study (Conv2,
# 4 types, 5 epochs) to compare with REPRODUCTION.md's TensorFlow CPU numbers. At most 8 files come back under $OUT.
#
# Prepare on the development machine, from the repository root (the GPU machine has Python 3.12 and JAX with
# CUDA, but no Keras and no internet):
# (.whl/ and .gpu/ are git-ignored)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree
#   mkdir -p .gpu/cifar10 && cp ../shared/data/build_cifar10.py .gpu/ \
#       && cp ../shared/data/cifar10/cifar10-compact.npz .gpu/cifar10/
# Then: device run, carry [".whl", ".gpu"], command "bash benchmarks/gpu_check.sh", timeout_s 480.
# Here, on a CPU, `GPU_CHECK_QUICK=1 OUT=/tmp/out bash benchmarks/gpu_check.sh` runs the same steps on slices.
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export MASKTRAINER_DATA=${MASKTRAINER_DATA:-$(pwd)/.data}  # the runs of the study read it too
DATA=$MASKTRAINER_DATA
if [ -f .gpu/build_cifar10.py ] && [ ! -f "$DATA/cifar10/cifar-10-batches-py/test_batch" ]; then
    python3 .gpu/build_cifar10.py "$DATA/cifar10"
fi
{ nvidia-smi -L || true; python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"; } \
    > "$OUT/machine.txt" 2>&1
STUDY=conv-short
if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then  # a CPU rehearsal: tiny sizes, and a study of two 1-epoch runs
    BENCH=(--quick --networks Conv2 ResNet20)
    STUDY=/tmp/gpu_check_quick.toml
    printf '[grid]\ntraintype = ["Baseline", "FreePruning"]\nseed = [1]\n[fixed]\nnettype = "Conv2"\nmaxepochs = 1\ntrainsize = 200\n' > "$STUDY"
else BENCH=(--networks Conv2 Conv6 ResNet20); fi
python3 -m benchmarks.bench_training --backend jax "${BENCH[@]}" --repeats 5 --datadir "$DATA" \
    --output "$OUT/bench_jax.json" > "$OUT/bench_jax.txt" 2>&1 || echo "benchmark failed: see bench_jax.txt"
python3 -m experiments run "$STUDY" --outputpath /tmp/gpu_runs --jobs 2 \
    > "$OUT/conv_short_run.txt" 2>&1 || echo "study failed: see conv_short_run.txt"
python3 -m experiments table "$STUDY" --outputpath /tmp/gpu_runs --partial > "$OUT/conv_short_table.md" 2>&1 || true
tail -n 25 "$OUT/bench_jax.txt" "$OUT/conv_short_table.md"
