#!/usr/bin/env bash
# The GPU check: what one CUDA GPU does with cascade, unattended, in under 8 minutes (the steps'
# time limits add up to 7.6 minutes).
#
#   1. training throughput and MFU, bf16, Penn 1.0 (a whole epoch of Penn's clip lengths) and
#      NTU60-CS 1.0, against the paper-recipe loop (bench/train_throughput.py), and NTU under
#      torch.compile;
#   2. inference latency (batch 1) and throughput (batch 64), fp32 and bf16 (bench/inference.py);
#   3. a 1-GPU torchrun finetune of the demo (synthetic data, DDP on one process), then evaluate;
#   4. one table of it all, with the issue's goals (bench/gpu_report.py).
#
#   bash bench/gpu_check.sh                 # on the GPU machine, from anywhere
#   bash bench/gpu_check.sh --cpu-dry-run   # the same steps, tiny, on the CPU: checks the script
#
# Needs a Python whose torch sees the GPU, with the packages of cascade's core (typer, rich,
# pyyaml, safetensors, scipy, matplotlib); nothing is installed and nothing is fetched. It takes
# $PYTHON if set, else the first of .venv/bin/python and python3 whose torch sees a GPU. Each step
# runs under its own time limit and a failed step is reported in the table, not fatal. Logs and
# JSON go to $GPU_CHECK_OUT (default bench_out/gpu_check); the table also to its summary.txt.

set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${GPU_CHECK_OUT:-$ROOT/bench_out/gpu_check}"
DRY=0
[[ "${1:-}" == "--cpu-dry-run" ]] && DRY=1
[[ $# -gt 0 && $DRY == 0 ]] && { echo "usage: bash bench/gpu_check.sh [--cpu-dry-run]" >&2; exit 2; }

sees_gpu() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
PY=""
for candidate in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3; do
    [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null || continue
    if [[ $DRY == 1 ]] || sees_gpu "$candidate"; then PY="$candidate"; break; fi
done
if [[ -z "$PY" ]]; then
    echo "gpu_check: no Python here has a torch that sees a CUDA GPU (tried \$PYTHON, .venv/bin/python, python3)" >&2
    exit 1
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
rm -rf "$OUT" && mkdir -p "$OUT"
STARTED=$SECONDS

# step NAME SECONDS COMMAND...: run with a limit, keep its log, its exit status and its wall time.
step() {
    local name=$1 limit=$2 began=$SECONDS
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$rc $((SECONDS - began))" >"$OUT/$name.status"
    [[ $rc == 0 ]] || { echo "   $name failed (exit $rc); the end of its log:"; tail -n 5 "$OUT/$name.log" | sed 's/^/   | /'; }
}

if [[ $DRY == 1 ]]; then
    DEVICE=cpu; PENN=(--samples 64); NTU=(--small --ntu-steps 1 --repeat 1); INFER=(--runs 3 --batch 8)
    DEMO=(--set pretrain.epochs=1 --set finetune.epochs=1)
else
    DEVICE=cuda; PENN=(--samples 0); NTU=(--ntu-steps 20 --repeat 2); INFER=(--runs 50 --batch 64); DEMO=()
fi

{ echo "python: $PY"; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} >"$OUT/environment.txt" 2>&1

step train_penn 100 "$PY" bench/train_throughput.py --device "$DEVICE" --configs penn "${PENN[@]}" \
    --arms ours fp32 paper --json "$OUT/train_penn.json"
step train_ntu 90 "$PY" bench/train_throughput.py --device "$DEVICE" --configs ntu "${NTU[@]}" \
    --arms ours fp32 paper --json "$OUT/train_ntu.json"
step train_ntu_compile 90 "$PY" bench/train_throughput.py --device "$DEVICE" --configs ntu "${NTU[@]}" \
    --repeat 1 --arms compile paper --json "$OUT/train_ntu_compile.json"
step inference 60 "$PY" bench/inference.py --devices "$DEVICE" --no-onnx "${INFER[@]}" \
    --out "$OUT/inference" --json "$OUT/inference.json"

# The demo, finetuned by torchrun on one GPU (one DDP process), bf16 where amp=auto picks it.
DEMO_DIR="$OUT/demo"
step demo_prepare 20 "$PY" -m cascade_cli prepare synthetic --out "$DEMO_DIR/data" --quiet
step demo_pretrain 40 "$PY" -m cascade_cli pretrain --data "$DEMO_DIR/data" --preset demo --device "$DEVICE" \
    --set amp=auto "${DEMO[@]}" --run-dir "$DEMO_DIR/pre" --quiet
step demo_torchrun 45 "$PY" -m torch.distributed.run --nproc-per-node 1 --master-port 29561 \
    -m cascade_cli finetune --pretrained "$DEMO_DIR/pre" --preset demo \
    --device "$DEVICE" --set amp=auto "${DEMO[@]}" --run-dir "$DEMO_DIR/ft" --quiet
step demo_evaluate 20 "$PY" -m cascade_cli evaluate "$DEMO_DIR/ft" --device "$DEVICE" --quiet

echo "total $((SECONDS - STARTED))s" >>"$OUT/environment.txt"
"$PY" bench/gpu_report.py "$OUT" | tee "$OUT/summary.txt"
