"""Lockstep: does qa-core's training loop compute what the Hugging Face Trainer computes?

    python benchmarks/lockstep_vs_hf.py [--epochs 1] [--hf-loss real-tokens|own]
        [vs_hf_trainer.py's model, data and hyperparameter flags: --model, --data, --lr, --seed, ...]

The race (vs_hf_trainer.py) runs both frameworks as users run them, so its runs differ in their
random streams (dropout masks, data order) and, on a validation set of a few hundred windows, one
run's F1 moves by several points with the seed. This script takes the randomness out so that only
the arithmetic is compared: dropout off, the windows in dataset order (no shuffling, no length
grouping), both sides seeded alike (the fresh QA head comes out identical: step 1's loss shows
it), dynamic padding, and otherwise the race's same-settings recipe (AdamW, weight decay without
biases and LayerNorms, linear warmup and decay, clipping at 1.0, fp32). Both sides log every
optimizer step's loss and gradient norm and evaluate after each epoch (n-best postprocessing,
EM/F1, token accuracy); the script prints the largest differences.

--hf-loss real-tokens (default) gives the HF model qa-core's span loss, which leaves padding
positions out of the softmax (Hugging Face's QA heads include them, so their loss depends on how
much padding a batch has). --hf-loss own keeps HF's loss and shows what that one choice changes.

The last line printed is one JSON object with every figure. Both runs share this process
(memory is not measured here; vs_hf_trainer.py does that).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_hf_trainer as race  # noqa: E402  (the race's run_qa.py-style helpers and flags)

# Same arithmetic, different libraries (oneDNN vs MKL GEMMs, fused AdamW): observed differences
# are ~2e-6 over 3 epochs of MiniLM on XQuAD; HF's padding-inclusive loss alone differs by 0.11
# at step 1.
LOSS_TOLERANCE = 1e-4
# Dropout rates in transformers' BERT and DistilBERT configs.
DROPOUT_NAMES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                 "qa_dropout")


def parse_args(argv=None):
    """--hf-loss, and --epochs defaulting to 1; every other flag is the race's (vs_hf_trainer.py)."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--hf-loss", choices=("real-tokens", "own"), default="real-tokens")
    own.add_argument("--epochs", default="1")
    mine, rest = own.parse_known_args(sys.argv[1:] if argv is None else argv)
    args = race.parse_args([*rest, "--epochs", mine.epochs])
    args.hf_loss = mine.hf_loss
    return args


# ------------------------------------------------------------------------------ Hugging Face


def use_real_token_loss(model) -> None:
    """Give a transformers QA model qa-core's span loss: padding positions masked out of the
    softmax before cross-entropy. The model's own forward computes the logits."""
    import torch
    import torch.nn.functional as F

    forward = model.forward

    def forward_with_real_token_loss(*args, attention_mask=None, start_positions=None, end_positions=None,
                                     **kwargs):
        out = forward(*args, attention_mask=attention_mask, **kwargs)
        if start_positions is not None:
            pad = ~attention_mask.bool()
            lowest = torch.finfo(torch.float32).min
            start = out.start_logits.float().masked_fill(pad, lowest)
            end = out.end_logits.float().masked_fill(pad, lowest)
            out.loss = (F.cross_entropy(start, start_positions) + F.cross_entropy(end, end_positions)) / 2
        return out

    model.forward = forward_with_real_token_loss


def run_hf(args) -> dict:
    import torch
    import transformers as tf


    tf.logging.set_verbosity_error()
    train_examples, val_examples, train_eval_examples = race.load_split(args)
    tokenizer = tf.AutoTokenizer.from_pretrained(str(args.model), use_fast=True)
    window_args = dict(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride, pad_to_max_length=False)
    train_features = race.prepare_train_features(train_examples, tokenizer, **window_args)
    val_inputs, val_side = race.prepare_validation_features(val_examples, tokenizer, **window_args)
    acc_inputs, acc_side = race.prepare_validation_features(train_eval_examples, tokenizer, **window_args)

    tf.set_seed(args.seed)
    config = tf.AutoConfig.from_pretrained(str(args.model))
    for name in DROPOUT_NAMES:
        if hasattr(config, name):
            setattr(config, name, 0.0)
    model = tf.AutoModelForQuestionAnswering.from_pretrained(str(args.model), config=config)
    if args.hf_loss == "real-tokens":
        use_real_token_loss(model)
    steps: list[dict] = []
    evaluations: list[dict] = []

    class StepLog(tf.TrainerCallback):
        def on_log(self, targs, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and "grad_norm" in logs:  # logging_steps=1: this step's own loss
                steps.append({"step": state.global_step, "loss": float(logs["loss"]),
                              "grad_norm": float(logs["grad_norm"])})

        def on_epoch_end(self, targs, state, control, **kwargs):
            evaluations.append(race.evaluate_hf(trainer, args, val_inputs, val_side, val_examples))

    training_args = tf.TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf_lockstep_"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size, learning_rate=args.lr, num_train_epochs=args.epochs,
        warmup_steps=args.warmup_ratio, weight_decay=args.weight_decay, max_grad_norm=1.0,
        lr_scheduler_type="linear", seed=args.seed, save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=True, logging_strategy="steps", logging_steps=1, remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(), train_sampling_strategy="sequential")
    trainer = tf.Trainer(model=model, args=training_args, train_dataset=race.FeatureDataset(train_features),
                         data_collator=tf.DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                         callbacks=[StepLog()])
    trainer.remove_callback(tf.PrinterCallback)  # its per-step log lines; the report below has them

    trainer.train()
    train_acc = race.evaluate_hf(trainer, args, acc_inputs, acc_side, train_eval_examples)["token_acc"]
    return {"steps": steps, "epochs": evaluations, "train_token_acc": train_acc}


# ------------------------------------------------------------------------------ qa-core


def run_ours(args) -> dict:
    import qa_core.loop as loop
    from qa_core.config import load_config

    run_dir = Path(tempfile.mkdtemp(prefix="ours_lockstep_"))
    overrides = race.ours_overrides(args, "ours-same", run_dir) + [
        "train.shuffle=false", "train.group_by_length=false", "train.log_every=1",
        "model.dropout.hidden=0", "model.dropout.attention=0", "model.dropout.head=0"]
    summary = loop.run(load_config(None, overrides))
    events = race.run_events(summary)
    evals = [e for e in events if e["event"] == "eval"]
    return {
        "steps": [{"step": e["step"], "loss": e["loss"], "grad_norm": e["grad_norm"]}
                  for e in events if e["event"] == "train"],
        "epochs": [race.eval_scores(e) for e in evals],
        "train_token_acc": 100.0 * evals[-1]["train_token_acc"] if evals else float("nan"),
    }


# ------------------------------------------------------------------------------ comparison


def compare(ours: dict, hf: dict, tolerance: float = LOSS_TOLERANCE) -> dict:
    """Largest per-step differences, the first step whose loss differs by more than
    `tolerance` (None: none), and the evaluation differences after the last epoch."""
    if [s["step"] for s in ours["steps"]] != [s["step"] for s in hf["steps"]]:
        raise RuntimeError(f"the runs logged different steps: ours {len(ours['steps'])}, hf {len(hf['steps'])}")
    loss_diff = [abs(a["loss"] - b["loss"]) for a, b in zip(ours["steps"], hf["steps"])]
    norm_rel = [abs(a["grad_norm"] - b["grad_norm"]) / max(abs(b["grad_norm"]), 1e-12)
                for a, b in zip(ours["steps"], hf["steps"])]
    first = next((ours["steps"][i]["step"] for i, d in enumerate(loss_diff) if d > tolerance), None)
    last_ours, last_hf = ours["epochs"][-1], hf["epochs"][-1]
    return {
        "steps": len(loss_diff),
        "max_loss_diff": max(loss_diff, default=0.0),
        "max_grad_norm_rel_diff": max(norm_rel, default=0.0),
        "first_step_over_tolerance": first,
        "tolerance": tolerance,
        "exact_diff": last_ours["exact"] - last_hf["exact"],
        "f1_diff": last_ours["f1"] - last_hf["f1"],
        "val_token_acc_diff": last_ours["token_acc"] - last_hf["token_acc"],
        "train_token_acc_diff": ours["train_token_acc"] - hf["train_token_acc"],
    }


def print_report(ours: dict, hf: dict, result: dict, hf_loss: str) -> None:
    print(f"\n{'step':>6}{'loss ours':>12}{'loss hf':>12}{'grad norm ours':>16}{'grad norm hf':>14}")
    shown = sorted({0, 1, 2, len(ours["steps"]) // 2, len(ours["steps"]) - 1} & set(range(len(ours["steps"]))))
    for i in shown:
        a, b = ours["steps"][i], hf["steps"][i]
        print(f"{a['step']:>6}{a['loss']:>12.6f}{b['loss']:>12.6f}{a['grad_norm']:>16.6f}{b['grad_norm']:>14.6f}")
    for name, run in (("ours", ours), (f"hf ({hf_loss} loss)", hf)):
        per_epoch = " ".join(f"{e['exact']:.2f}/{e['f1']:.2f}" for e in run["epochs"])
        print(f"{name:<24} EM/F1 per epoch {per_epoch}   val token acc {run['epochs'][-1]['token_acc']:.2f}"
              f"   train token acc {run['train_token_acc']:.2f}")
    first = result["first_step_over_tolerance"]
    print(f"{result['steps']} steps: max |loss diff| {result['max_loss_diff']:.2e}, max grad-norm rel diff "
          f"{result['max_grad_norm_rel_diff']:.2e}; "
          + ("every step within tolerance" if first is None else f"first step over {result['tolerance']:g}: {first}"))


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"model {args.model}\ndata {args.data} (train articles {args.train_articles}, eval {args.eval_articles})"
          f"\nlr {args.lr}, batch {args.batch_size}, epochs {args.epochs}, seed {args.seed}, dropout off, "
          f"dataset order, HF loss: {args.hf_loss}", flush=True)
    ours = run_ours(args)
    hf = run_hf(args)
    result = compare(ours, hf)
    print_report(ours, hf, result, args.hf_loss)
    print(json.dumps({"lockstep": {**result, "hf_loss": args.hf_loss, "ours": ours["epochs"][-1],
                                   "hf": hf["epochs"][-1]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
