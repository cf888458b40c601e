#!/usr/bin/env bash
# One prepared GPU check (issue 6): throughput.py for the DistilBERT shape at 384 tokens, bf16,
# eager and torch.compile, plus short train.py runs on CUDA (the loop's bf16 and fp16 paths).
# Run from the repository root on a GPU machine; everything is logged to $OUT/gpu_check.log.
# The train.py runs need a small checkpoint in .gpu/tiny-distilbert, built beforehand with
#   python -c "from pathlib import Path; from tests.conftest import build_tiny_checkpoint as b; \
#              b(Path('.gpu/tiny-distilbert'), 'distilbert', hidden=128, heads=4, layers=2)"
set -u
OUT=${OUT:-runs/gpu_check}; mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/gpu_check.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"

T="benchmarks/throughput.py --model-type distilbert --layers 6 --hidden 768 --heads 12 --seq-len 384 --device cuda"
run() {  # name timeout args...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  timeout "$limit" $PY $T "$@" > "/tmp/$name.log" 2>&1; echo "rc=$?"
  grep -E "^ *(train|infer):|Error|error" "/tmp/$name.log" | head -n 20
  echo "JSON $name $(tail -n 1 /tmp/$name.log)"
}
run bf16_eager_b32      90 --precision bf16 --batch 32 --warmup 10 --iters 40
run bf16_compile_b32   300 --precision bf16 --batch 32 --warmup 10 --iters 40 --compile
run bf16_eager_b32_var  90 --precision bf16 --batch 32 --warmup 10 --iters 40 --min-len 128 --group-by-length
run fp32_eager_b32      90 --precision fp32 --batch 32 --warmup 5 --iters 20

# The training loop on CUDA: tiny random DistilBERT, quickstart data, bf16 then fp16 (GradScaler).
for prec in bf16 fp16; do
  echo "== train.py on cuda, $prec"
  timeout 150 $PY train.py --cfg configs/quickstart.toml --set model.name_or_path=.gpu/tiny-distilbert \
      --set train.device=cuda --set train.precision=$prec --set train.epochs=2 --set train.progress=false \
      --set early_stopping.enabled=false --set run.name=gpu_$prec --set run.output_dir=/tmp/gpu_runs \
      > "/tmp/train_$prec.log" 2>&1; echo "rc=$?"
  tail -n 12 "/tmp/train_$prec.log"
  cp /tmp/gpu_runs/gpu_$prec/summary.json "$OUT/summary_$prec.json" 2>/dev/null
done
