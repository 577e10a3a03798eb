#!/usr/bin/env bash
# The GPU path in one run of about 9 minutes on one CUDA GPU, from the repository root:
#
#   bash benchmarks/gpu_check.sh [FASHION_MNIST_DIR] [LOG_DIR]
#
# 1. pytest -m gpu: train, --resume, --compile, evaluate and compare --workers 2 with --device cuda
#    (tests/test_gpu.py; the same tests skip where CUDA is not available);
# 2. benchmarks/step_overhead.py on CUDA: pyro_vae's step, eager and --compile, against the pure-PyTorch
#    step, eager and compiled, at batch 128 and 256, with the first (compiling) step timed;
# 3. the default `pyro-vae train` on Fashion-MNIST (784-400-20, diag + trace, batch 128), stopped by a
#    time budget after the epoch that reaches 90 s, then the test ELBO and IS log p(x) at K = 1000;
# 4. benchmarks/importance_sampling.py at K = 5000 on 10,000 test images (pyro_vae against pure PyTorch);
# 5. data-parallel training with nccl: `torchrun --nproc-per-node 1 -m pyro_vae train --device cuda` for two
#    epochs on MNIST-5k, then --resume to a third.
#
# FASHION_MNIST_DIR holds the four Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist); on
# a machine without network, copy them into an ignored folder of the checkout and pass that. Where Pyro
# is not installed, wheels in ./.wheels (made with `pip download pyro-ppl pyro-api --no-deps -d .wheels`)
# are installed first. Each stage has its own time limit, so one that hangs cannot eat the others; every
# stage's output goes to LOG_DIR (default $OUT, else gpu-check/), one file each, and to stdout.
set -u -o pipefail
DATA=${1:-/usr/share/datasets/fashion-mnist}
LOGS=${2:-${OUT:-gpu-check}}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

if ! $PY -c "import pyro" 2>/dev/null && [ -d .wheels ]; then
  $PY -m pip install --quiet --no-index --find-links .wheels pyro-ppl pyro-api
fi
$PY -c "import torch, pyro; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'pyro', pyro.__version__, torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null

failed=0
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name: $* (limit ${limit}s, $(date -u +%T))"
  local start=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit status $rc after $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || failed=1
}

stage pytest-gpu 90 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
stage step-overhead 130 $PY benchmarks/step_overhead.py --device cuda --data-dir "$DATA" \
  --contenders torch pyro_vae torch-compile pyro_vae-compile --no-tiny --check-steps 0 --repeats 30 --steps 10
stage train-default 130 $PY -m pyro_vae.cli train --dataset fashion-mnist --data-dir "$DATA" --device cuda \
  --max-seconds 90 --quiet --out "$(mktemp -d)/run"
stage importance-sampling 110 $PY benchmarks/importance_sampling.py --device cuda --data-dir "$DATA" \
  --num-samples 5000 --num-images 10000 --repeats 1
ddp_run="$(mktemp -d)/ddp"
stage ddp-nccl 90 $PY -m torch.distributed.run --nproc-per-node 1 -m pyro_vae train --device cuda --epochs 2 \
  --num-samples 100 --quiet --out "$ddp_run"
stage ddp-nccl-resume 60 $PY -m torch.distributed.run --nproc-per-node 1 -m pyro_vae train --resume "$ddp_run" \
  --epochs 3 --quiet

echo "== done, $([ $failed -eq 0 ] && echo 'every stage passed' || echo 'some stage failed'); logs in $LOGS"
exit $failed
