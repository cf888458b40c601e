"""The training loop end to end on a tiny random model and the shipped quickstart data:
exact gradient accumulation, exact resume, early stopping with best weights restored,
precision paths, non-finite losses, and train.py as a user runs it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qa_core import checkpoint as ckpt
from qa_core import loop
from qa_core.config import load_config

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(model_dir: Path, tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        f"data.train_file={REPO / 'data/quickstart/train.json'}",
        f"data.val_file={REPO / 'data/quickstart/val.json'}",
        "data.max_train_examples=20", "data.max_val_examples=12",
        "data.max_seq_length=192", "data.doc_stride=64",
        f"data.cache_dir={tmp_path / 'features'}",
        "model.dropout.hidden=0", "model.dropout.attention=0", "model.dropout.head=0",
        "optim.lr=1e-3", "train.epochs=2", "train.batch_size=4", "train.log_every=1",
        "train.progress=false", "eval.train_subset_examples=8", "eval.batch_size=16",
        f"run.output_dir={tmp_path / 'runs'}", f"run.name={name}",
        *extra,
    ]


def run_tiny(model_dir, tmp_path, name, *extra, **kwargs):
    cfg = load_config(None, tiny_overrides(model_dir, tmp_path, name, *extra))
    return loop.run(cfg, **kwargs), tmp_path / "runs" / name


def last_weights(run_dir: Path) -> dict:
    return ckpt.load_latest_checkpoint(run_dir)["model"]


def records_without_timing(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "timing"} for line in lines]


@pytest.mark.parametrize("split", [("train.batch_size=2", "train.grad_accum_steps=4"),
                                   ("train.batch_size=8", "train.micro_batch_size=3")],
                         ids=["grad-accum-4x2", "micro-batches-of-3"])
def test_gradient_accumulation_equals_big_batch(tiny_bert_dir, tmp_path, split):
    # 20 windows: 4 x 2 windows per step (or pieces of 3, 3, 2) == 8 windows per step, including
    # the short last step (4 windows: 2 x 2 accumulated, or pieces of 3 and 1, vs one batch of 4).
    # optim.eps=1e-6: Adam divides by sqrt(v) + eps, so with the default 1e-8 a gradient
    # entry near 1e-9 turns float summation-order noise into a visible update difference.
    common = ("train.shuffle=false", "train.group_by_length=false", "eval.every_epoch=false",
              "eval.at_start=false", "optim.weight_decay=0.01", "optim.eps=1e-6", "train.epochs=2")
    _, big = run_tiny(tiny_bert_dir, tmp_path, "big", "train.batch_size=8", "train.micro_batch_size=8", *common)
    _, acc = run_tiny(tiny_bert_dir, tmp_path, "acc", *split, *common)
    big_losses = [r["loss"] for r in records_without_timing(big) if r["event"] == "train"]
    acc_losses = [r["loss"] for r in records_without_timing(acc) if r["event"] == "train"]
    assert len(big_losses) == len(acc_losses) == 6  # ceil(20 / 8) = 3 steps per epoch
    assert acc_losses == pytest.approx(big_losses, rel=1e-5)
    big_norms = [r["grad_norm"] for r in records_without_timing(big) if r["event"] == "train"]
    acc_norms = [r["grad_norm"] for r in records_without_timing(acc) if r["event"] == "train"]
    assert acc_norms == pytest.approx(big_norms, rel=1e-5)
    weights_big, weights_acc = last_weights(big), last_weights(acc)
    for key in weights_big:
        if key == "qa_outputs.bias":
            # Softmax is shift-invariant: this bias has an exactly-zero true gradient, so
            # Adam only ever sees (and normalises) float rounding noise for it.
            continue
        # atol 1e-5 = 1% of one Adam step at lr 1e-3: summation-order noise, not a real difference.
        torch.testing.assert_close(weights_acc[key], weights_big[key], atol=1e-5, rtol=1e-5, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("stop_at", [3, 5], ids=["inside-epoch", "epoch-boundary"])
def test_resume_equals_uninterrupted(tiny_bert_dir, tmp_path, stop_at):
    # 20 windows, batch 4 -> 5 steps per epoch: step 3 is inside epoch 1, step 5 ends it.
    extra = ("model.dropout.hidden=0.1", "eval.every_steps=2", "train.epochs=2")
    run_tiny(tiny_bert_dir, tmp_path, "whole", *extra)
    result, part = run_tiny(tiny_bert_dir, tmp_path, "part", *extra, stop_at_step=stop_at)
    assert result["interrupted"] and result["step"] == stop_at
    cfg = loop.config_for_resume(part)
    loop.run(cfg, resume=part)

    whole = tmp_path / "runs" / "whole"
    for key, value in last_weights(whole).items():
        assert torch.equal(last_weights(part)[key], value), key
    assert records_without_timing(part) == records_without_timing(whole)
    assert json.loads((part / "summary.json").read_text())["best"] == \
        json.loads((whole / "summary.json").read_text())["best"]


def test_early_stopping_restores_best_weights(tiny_bert_dir, tmp_path):
    # Training on the validation file lowers val_loss at every evaluation, so with
    # mode "max" the start is the best and every later evaluation is a bad one.
    val = REPO / "data/quickstart/val.json"
    summary, run_dir = run_tiny(
        tiny_bert_dir, tmp_path, "early", f"data.train_file={val}", "train.epochs=10", "eval.every_steps=1",
        "early_stopping.enabled=true", "early_stopping.metric=val_loss", "early_stopping.mode=max",
        "early_stopping.patience=2", "optim.lr=3e-4")
    evals = [r for r in records_without_timing(run_dir) if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [0, 1, 2]
    assert evals[1]["val_loss"] < evals[0]["val_loss"] and evals[2]["val_loss"] < evals[0]["val_loss"]
    assert summary["best_step"] == 0 and summary["steps"] == 2
    assert summary["reason"].startswith("early stopping: val_loss did not improve for 2 evaluations")
    # best/ holds the step-0 weights: the checkpoint's encoder and the same seeded fresh head.
    loop.seed_everything(42, False)
    initial = loop.load_model(str(tiny_bert_dir), dropout={"hidden": 0.0, "attention": 0.0, "head": 0.0})
    best = load_file(run_dir / "best" / "model.safetensors")
    from transformers import AutoModelForQuestionAnswering
    reference = AutoModelForQuestionAnswering.from_pretrained(run_dir / "best")
    ours_state = initial.state_dict()
    assert set(best) == set(reference.state_dict())
    torch.testing.assert_close(best["qa_outputs.weight"], ours_state["qa_outputs.weight"], atol=0, rtol=0)
    assert any(torch.equal(t, best["bert.embeddings.word_embeddings.weight"]) for t in ours_state.values())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_paths_run(tiny_bert_dir, tmp_path, precision):
    summary, run_dir = run_tiny(tiny_bert_dir, tmp_path, precision, f"train.precision={precision}",
                                "train.epochs=1", "train.max_steps=3")
    assert summary["steps"] == 3
    state = ckpt.load_latest_checkpoint(run_dir)
    if precision == "fp16":
        # The scaler really ran: its state is saved and finite.
        assert state["scaler"]["scale"] > 0
    else:
        assert state["scaler"] == {}
    losses = [r["loss"] for r in records_without_timing(run_dir) if r["event"] == "train"]
    assert len(losses) == 3 and all(l == l for l in losses)


def test_non_finite_losses_skip_then_stop(tiny_bert_dir, tmp_path, monkeypatch):
    def nan_loss(start_logits, end_logits, *args, **kwargs):
        return (start_logits.sum() + end_logits.sum()) * float("nan")

    monkeypatch.setattr(loop, "qa_loss", nan_loss)
    before = loop.load_model(str(tiny_bert_dir)).state_dict()
    with pytest.raises(loop.TrainingStopped, match="3 non-finite losses in a row"):
        run_tiny(tiny_bert_dir, tmp_path, "nan", "train.max_nonfinite_in_row=3", "eval.at_start=false")
    run_dir = tmp_path / "runs" / "nan"
    events = records_without_timing(run_dir)
    assert [e["event"] for e in events].count("nonfinite_loss") == 3
    # No step was taken: the encoder weights are unchanged.
    after = last_weights(run_dir)
    assert ckpt.load_latest_checkpoint(run_dir)["train_state"]["step"] == 0
    shared = [k for k in after if k in before]
    assert shared and all(torch.equal(after[k], before[k]) for k in shared if "qa_outputs" not in k)


def test_train_py_end_to_end_and_sigterm_resume(tiny_distilbert_dir, tmp_path):
    overrides = tiny_overrides(tiny_distilbert_dir, tmp_path, "e2e", "train.epochs=6", "optim.lr=2e-3",
                               "model.dropout.hidden=0.1", "checkpoint.every_steps=1",
                               "early_stopping.enabled=false")
    cmd = [sys.executable, str(REPO / "train.py"), "--cfg", str(REPO / "configs/quickstart.toml")]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = tmp_path / "runs" / "e2e"
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists() and '"event": "train"' in metrics.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "resumable checkpoint" in out
    events = [json.loads(l)["event"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert events[-1] == "interrupted"

    resumed = subprocess.run([sys.executable, str(REPO / "train.py"), "--resume", str(run_dir)], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "train acc" in resumed.stdout and "start (step 0)" in resumed.stdout
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "end"
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert len(losses) == 30
    assert sum(losses[-5:]) < 0.85 * sum(losses[:5])  # the loss falls (4.8 -> 3.6 here)
    for name in ("config.toml", "metrics.jsonl", "summary.json", "best/config.json", "best/model.safetensors",
                 "best/tokenizer.json"):
        assert (run_dir / name).exists(), name
    assert len(ckpt.list_checkpoints(run_dir)) == 2  # keep_last

    from transformers import AutoModelForQuestionAnswering
    model, info = AutoModelForQuestionAnswering.from_pretrained(run_dir / "best", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_bad_resume_and_existing_run_dir(tiny_bert_dir, tmp_path):
    from train import main

    assert main(["--resume", str(tmp_path / "nowhere")]) == 2
    cfg = load_config(None, tiny_overrides(tiny_bert_dir, tmp_path, "twice", "train.max_steps=1"))
    loop.run(cfg)
    with pytest.raises(FileExistsError, match="set run.overwrite=true"):
        loop.run(cfg)


def test_split_batch_pieces_shortest_first():
    lengths = [50, 10, 40, 30, 20]
    assert loop.split_batch([0, 1, 2, 3, 4], 2, lengths) == [[1, 4], [3, 2], [0]]
    assert loop.split_batch([0, 1, 2], 0, lengths) == [[0, 1, 2]]  # 0: the whole batch
    assert loop.split_batch([2, 0], 4, lengths) == [[2, 0]]  # fits: order kept
    assert loop.split_batch([], 3, lengths) == [[]]  # an empty rank batch stays one (weight-0) piece


def test_auto_piece_sizes_are_small_on_cpu_and_whole_batches_elsewhere():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loop.resolve_micro_batch(0, cpu, "train") == 4 and loop.resolve_micro_batch(0, cpu, "eval") == 16
    assert loop.resolve_micro_batch(0, cuda, "train") == 0 and loop.resolve_micro_batch(0, cuda, "eval") == 0
    assert loop.resolve_micro_batch(16, cpu, "train") == 16 and loop.resolve_micro_batch(3, cuda, "eval") == 3
