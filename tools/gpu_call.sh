#!/usr/bin/env bash
# One device call, prepared on the CPU: fine-tune every shipped model of tools/train_all.py (the in-plane ones and the
# through-plane networks of factor 4) from the training pack on the GPU, then
# the GPU rows of docs/benchmarks.md (bench/gpu_network.py) and the CUDA-only tests. Needs numpy and torch,
# not SimpleITK. Everything that must come back is written under OUT (8 files at most):
# one <run>.tgz per model and its no-T1 twin (best weights, logs, val_log.csv, run.json; no checkpoint), gpu_network.json,
# gpu.log (all output, GPU use every 30 s, the training summary).
# Wheels the GPU image lacks (pytorch-msssim, for the training loss) are installed from .whl/ when carried there:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl pytorch-msssim==1.0.0
# Usage, from the repository root: bash tools/gpu_call.sh PACK OUT [TRAIN_MINUTES] [DEVICE] [SPEED_BUDGET_S]
set -u
PACK=$1 OUT=$2 MINUTES=${3:-6.5} DEVICE=${4:-cuda} SPEED_BUDGET=${5:-40}
RUNS=/tmp/cohft_runs
LOG=$OUT/gpu.log
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:$PWD/bench
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 30 &
  MONITOR=$!
  timeout $(python3 -c "print(int(float('$MINUTES') * 60 + 75))") python3 tools/train_all.py --pack "$PACK" \
    --out $RUNS --minutes "$MINUTES" --device "$DEVICE" --threads 2 --batch-size 16 --init-from shipped \
    --lr 1e-4 --lr-halve-every 1500
  echo "train_all exit $?"
  kill $MONITOR
  cat $RUNS/summary.json
  for name in S_x2 S_x3 S_x4 S_through_plane_f4; do  # each model beside its no-T1 twin: 4 files of ~11 MB
    tar czf "$OUT/$name.tgz" --exclude=checkpoint --exclude=last.safetensors -C $RUNS \
      "$name" "$name.log" "${name}_noT1" "${name}_noT1.log"
  done
  ls -la "$OUT"
  date -u
  timeout 90 python3 -m pytest -q -p no:cacheprovider Testing/test_cuda.py Testing/test_model.py -k cuda -rs
  echo "pytest exit $?"
  date -u
  timeout 100 python3 bench/gpu_network.py --pack "$PACK" --json "$OUT/gpu_network.json" --budget "$SPEED_BUDGET"
  echo "gpu_network exit $?"
  date -u
} 2>&1 | tee "$LOG"
