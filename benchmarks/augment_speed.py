"""Cost of re-drawing augmentation every epoch: augment + re-tokenize vs one training epoch.

With augmentation on, the loop calls augment_examples and build_windows (no cache) once per
epoch. This measures, on the XQuAD training articles with the MiniLM tokenizer, in one process:

1. build_windows of the plain examples (what an epoch costs without augmentation: nothing,
   it is cached; shown as the baseline for re-tokenizing),
2. augment_examples alone and augment + build_windows of the noisy examples,
3. one training epoch estimated from timed optimizer steps of the real MiniLM model on
   length-grouped batches of those windows (forward, backward, AdamW),

and prints the per-epoch augmentation overhead as a fraction of that epoch.

    python benchmarks/augment_speed.py [--p 0.1] [--batch-size 16] [--train-steps 3] [--repeats 3] [--device cuda]

Context noise gives every question its own context, so build_windows can no longer tokenize a
paragraph once for all its questions: re-tokenizing costs a few times the plain build.

Prints a table, then one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import torch  # noqa: E402

from qa_core.augment import augment_examples  # noqa: E402
from qa_core.collate import LengthGroupedBatchSampler, QACollator  # noqa: E402
from qa_core.data import read_examples, select_articles  # noqa: E402
from qa_core.features import build_windows  # noqa: E402
from qa_core.metrics import qa_loss  # noqa: E402
from qa_core.modeling import load_model  # noqa: E402
from qa_core.tokenization import load_tokenizer  # noqa: E402
from vs_hf_trainer import default_model_dir  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "xquad" / "xquad.en.json"




def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def train_step_seconds(model_dir: Path, windows, batch_size: int, steps: int, seed: int,
                       device: torch.device) -> tuple[float, int]:
    """Median seconds per optimizer step (after one warm-up step) and batches per epoch."""
    model = load_model(str(model_dir)).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    sampler = LengthGroupedBatchSampler(windows.lengths, batch_size, seed=seed)
    collate = QACollator(windows, use_token_type_ids=model.uses_token_type_ids)
    batches = list(sampler)
    times = []
    for indices in batches[:steps + 1]:
        batch = {k: v.to(device) for k, v in collate(indices).items()}
        start = time.perf_counter()
        start_logits, end_logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        loss = qa_loss(start_logits, end_logits, batch["start_positions"], batch["end_positions"],
                       attention_mask=batch["attention_mask"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--train-articles", default="0-39")
    parser.add_argument("--model-dir", default=None, help="default: the MiniLM package")
    parser.add_argument("--p", type=float, default=0.1, help="probability of every augmentation lever")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=3, help="timed optimizer steps (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the training steps run (the epoch estimate is per device)")
    args = parser.parse_args()

    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    tokenizer = load_tokenizer(str(model_dir))
    examples = select_articles(read_examples(args.data).examples, args.train_articles)
    window_args = dict(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride)
    levers = dict(question_word_dropout=args.p, question_swap=args.p,
                  context_word_dropout=args.p, context_sentence_dropout=args.p)

    plain_s, plain_windows = median_seconds(lambda: build_windows(examples, tokenizer, **window_args), args.repeats)
    epochs = iter(range(1_000_000))  # a new epoch (new draws) on every repeat
    augment_s, _ = median_seconds(lambda: augment_examples(examples, seed=args.seed, epoch=next(epochs), **levers),
                                  args.repeats)
    noisy_s, noisy_windows = median_seconds(
        lambda: build_windows(augment_examples(examples, seed=args.seed, epoch=next(epochs), **levers),
                              tokenizer, **window_args), args.repeats)
    step_s, batches = train_step_seconds(model_dir, noisy_windows, args.batch_size, args.train_steps, args.seed,
                                         torch.device(args.device))
    epoch_s = step_s * batches

    n = len(examples)
    print(f"data: {n} examples (articles {args.train_articles}) -> {len(plain_windows)} windows plain, "
          f"{len(noisy_windows)} augmented (p={args.p} for each lever); torch threads {torch.get_num_threads()}, "
          f"training steps on {args.device}")
    print(f"{'per epoch':<40}{'seconds':>10}{'examples/s':>12}")
    print(f"{'build_windows, plain examples':<40}{plain_s:>10.3f}{n / plain_s:>12.0f}")
    print(f"{'augment_examples only':<40}{augment_s:>10.3f}{n / augment_s:>12.0f}")
    print(f"{'augment + build_windows':<40}{noisy_s:>10.3f}{n / noisy_s:>12.0f}")
    print(f"{'training epoch (estimate)':<40}{epoch_s:>10.1f}   ({batches} steps x {step_s:.2f} s, "
          f"batch {args.batch_size})")
    print(f"augment + build_windows / plain build_windows: {noisy_s / plain_s:.2f}x")
    print(f"augment + build_windows / training epoch: {100 * noisy_s / epoch_s:.2f}% of the epoch")
    print(json.dumps({"examples": n, "plain_windows": len(plain_windows), "augmented_windows": len(noisy_windows),
                      "p": args.p, "build_windows_s": plain_s, "augment_s": augment_s,
                      "augment_and_build_s": noisy_s, "train_step_s": step_s, "steps_per_epoch": batches, "device": args.device,
                      "epoch_estimate_s": epoch_s, "ratio_vs_plain_build": noisy_s / plain_s,
                      "fraction_of_epoch": noisy_s / epoch_s}))


if __name__ == "__main__":
    main()
