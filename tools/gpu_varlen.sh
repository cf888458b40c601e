#!/usr/bin/env bash
# GPU follow-up to tools/gpu_check.sh: why variable-length batches (lengths 128-384, grouped)
# trained 9x slower than full 384-token batches. Profiles the default path, then compares SDPA
# backends and padding each batch to a multiple of 8 / 64. Logs to $OUT/gpu_varlen.log.
set -u
OUT=${OUT:-runs/gpu_check}; mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/gpu_varlen.log") 2>&1
T="benchmarks/throughput.py --model-type distilbert --layers 6 --hidden 768 --heads 12 --seq-len 384 --device cuda
   --precision bf16 --batch 32 --min-len 128 --group-by-length --warmup 10 --iters 40"
run() {  # name timeout args...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  timeout "$limit" $PY $T "$@" > "/tmp/$name.log" 2>&1; echo "rc=$?"
  grep -E "^ *(train|infer):|Error" "/tmp/$name.log" | head -n 10
}
echo "== profile of the default path"
timeout 120 $PY $T --modes train,infer --profile 3 2>&1 | grep -v "^{" | tail -n 50
run efficient   60 --sdpa-backend efficient
run cudnn       60 --sdpa-backend cudnn
run math        60 --sdpa-backend math
run pad8        60 --pad-multiple 8
run pad64       60 --pad-multiple 64
run efficient_pad8 60 --sdpa-backend efficient --pad-multiple 8
run full384     60 --min-len 384
