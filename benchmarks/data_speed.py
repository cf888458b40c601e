"""Preprocessing throughput and padding efficiency.

1. examples/s of qa_core.features.build_windows vs the standard Hugging Face preprocessing
   (run_qa.py's prepare_train_features: fast tokenizer with overflow + the offset walk for labels)
   on the same data and tokenizer, in this one process. Both produce windows and labels; the
   benchmark checks they agree before timing counts.
2. Padding efficiency (real tokens / padded tokens) of random batches vs length-grouped batches
   (LengthGroupedBatchSampler) at batch size 16 and 32.

    python benchmarks/data_speed.py [--data FILE] [--model-dir DIR] [--max-seq-length 384] [--doc-stride 128]

Prints a table, then one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from qa_core.collate import LengthGroupedBatchSampler  # noqa: E402
from qa_core.data import read_examples  # noqa: E402
from qa_core.features import build_windows  # noqa: E402
from qa_core.tokenization import load_tokenizer  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from vs_hf_trainer import default_model_dir, span_labels  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "xquad" / "xquad.en.json"




def hf_prepare_train_features(hf_tokenizer, examples, max_seq_length, doc_stride):
    """The standard Hugging Face preprocessing (run_qa.py), returning input ids and labels; the
    offset walk is vs_hf_trainer.py's `span_labels`, the one reference all benchmarks share."""
    encoded = hf_tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples],
                           truncation="only_second", max_length=max_seq_length, stride=doc_stride,
                           return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    starts, ends = span_labels(encoded, examples, hf_tokenizer.cls_token_id)
    return np.array(encoded["input_ids"]), np.array(starts), np.array(ends)


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def padding_efficiency(lengths, batches):
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model-dir", default=None, help="model directory with tokenizer files (default: the MiniLM package)")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    examples = read_examples(args.data).examples
    ours_tokenizer = load_tokenizer(model_dir)
    hf_tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
    settings = dict(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride)

    ours_s, windows = median_seconds(lambda: build_windows(examples, ours_tokenizer, **settings), args.repeats)
    hf_s, (hf_ids, hf_starts, hf_ends) = median_seconds(
        lambda: hf_prepare_train_features(hf_tokenizer, examples, args.max_seq_length, args.doc_stride), args.repeats)
    agree = bool(np.array_equal(windows.input_ids, hf_ids) and np.array_equal(windows.start_positions, hf_starts)
                 and np.array_equal(windows.end_positions, hf_ends))

    lengths = windows.lengths
    padding = {}
    for batch_size in (16, 32):
        random_batches = list(LengthGroupedBatchSampler(lengths, batch_size, seed=args.seed, group_by_length=False))
        grouped_batches = list(LengthGroupedBatchSampler(lengths, batch_size, seed=args.seed))
        padding[batch_size] = (padding_efficiency(lengths, random_batches), padding_efficiency(lengths, grouped_batches))

    n = len(examples)
    print(f"data: {args.data} ({n} examples -> {len(windows)} windows at {args.max_seq_length}/{args.doc_stride}); "
          f"median of {args.repeats} runs; windows and labels identical: {agree}")
    print(f"{'preprocessing':<28}{'seconds':>10}{'examples/s':>14}")
    print(f"{'qa_core build_windows':<28}{ours_s:>10.3f}{n / ours_s:>14.0f}")
    print(f"{'HF run_qa.py preprocessing':<28}{hf_s:>10.3f}{n / hf_s:>14.0f}")
    print(f"{'speed-up (HF time / ours)':<28}{hf_s / ours_s:>10.2f}x")
    print(f"{'padding efficiency':<28}{'random':>10}{'grouped':>14}")
    for batch_size, (random_eff, grouped_eff) in padding.items():
        print(f"{'batch ' + str(batch_size):<28}{random_eff:>10.3f}{grouped_eff:>14.3f}")
    print(json.dumps({
        "data": args.data, "examples": n, "windows": len(windows), "max_seq_length": args.max_seq_length,
        "doc_stride": args.doc_stride, "identical_to_hf": agree,
        "ours_examples_per_s": round(n / ours_s, 1), "hf_examples_per_s": round(n / hf_s, 1),
        "speedup": round(hf_s / ours_s, 2),
        "padding_efficiency": {f"batch_{b}": {"random": round(r, 4), "grouped": round(g, 4)}
                               for b, (r, g) in padding.items()},
    }))


if __name__ == "__main__":
    main()
