#!/usr/bin/env bash
# Everything in this project that needs a CUDA GPU, as one command for a machine that has one:
#   1. the tests that run only on a GPU: the hand-written Triton kernels compiled (minigrad.warp_triton, the
#      same comparisons CI runs under Triton's interpreter), aug_transforms on CUDA (the kernel against the
#      tensor-op paths), to_fp16's float16 autocast with gradient scaling, NCCL training with torchrun
#      (with and without --sync-bn) where there are 2 GPUs, and minigrad against torch's OpInfo samples and
#      optimizer settings on CUDA (capturable Adam among them);
#   2. the GPU augmentation benchmark (batches of 64 and 256);
#   3. where an epoch of the main job goes on the GPU (bench_epoch.py); whether the input pipeline keeps the
#      GPU busy (bench_gpu_pipeline.py: each step's wait for data against its GPU time, the busy share);
#   4. a main job, timed, its model and plots checked, its model predicting the sample; and a short
#      --deterministic run on CUDA (cuBLAS's workspace setting, deterministic kernels), twice, the same.
# Usage, from a fresh checkout:  pip install -e ".[dev]" && bash benchmarks/gpu_check.sh
# Exits non-zero if any step failed; every step runs either way.
set -uo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET  # the kernels must compile for the GPU, not run in the interpreter

python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA GPU is visible to torch')" || exit 2
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(), torch.cuda.device_count(), 'GPU(s)')"

failed=()
step() {  # step NAME COMMAND...: run it, remember a failure
    echo; echo "=== $1"; shift
    "$@" || failed+=("$*")
}
step "GPU tests" python -m pytest -q -rs tests/minigrad/test_warp_triton.py tests/pets -k "cuda or nccl or triton"
step "torch's test inputs on CUDA" python -m pytest -q -rs tests/minigrad/test_torch_suites.py -k cuda
step "augmentation benchmark" python benchmarks/bench_augment.py --device cuda
step "epoch profile" python benchmarks/bench_epoch.py -- --device cuda
step "input pipeline: data wait against GPU time" python benchmarks/bench_gpu_pipeline.py
out=$(mktemp -d)
step "main job on the GPU" bash -c "time python -m pets.run --device cuda --out '$out'"
# The run ends with the model and every plot written (a device tensor reaching .numpy() once lost them all).
step "main job's outputs" bash -c "cd '$out' && ls -l model.pth history.csv history.md loss.png schedule.png \
    confusion_matrix.png top_losses.png batch.png"
step "the exported model predicts" python -m pets.predict "$out/model.pth" pets/data/sample/oxford-pets-sample/images
# --deterministic on CUDA: it must run (torch raises for any nondeterministic kernel it meets) and repeat.
deterministic_twice() {
    local a b
    a=$(python -m pets.run --device cuda --deterministic --freeze-epochs 1 --epochs 1 --out "$out/d1" \
        | awk '/^[0-9]+ +[0-9.]+ +[0-9.]+/ {print $1, $2, $3, $4}') || return 1
    b=$(python -m pets.run --device cuda --deterministic --freeze-epochs 1 --epochs 1 --out "$out/d2" \
        | awk '/^[0-9]+ +[0-9.]+ +[0-9.]+/ {print $1, $2, $3, $4}') || return 1
    echo "$a"
    [ -n "$a" ] && [ "$a" = "$b" ]
}
step "--deterministic on CUDA, twice, the same table" deterministic_twice

echo
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "gpu_check.sh: every step passed"
