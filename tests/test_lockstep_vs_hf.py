"""qa-core's loop against the Hugging Face Trainer in lockstep (benchmarks/lockstep_vs_hf.py):
with dropout off and the windows in dataset order, every optimizer step's loss and gradient norm
and every evaluation agree, so the race's accuracy differences come from random streams only.
With HF's own loss (padding inside the softmax) the same comparison does see a difference."""
from __future__ import annotations

from pathlib import Path

import pytest

from test_benchmarks_smoke import load_benchmark

pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[1]


def lockstep_args(lockstep, model_dir: Path, hf_loss: str):
    return lockstep.parse_args([
        "--model", str(model_dir), "--data", str(REPO / "data/quickstart/train.json"),
        "--train-articles", "0-4", "--eval-articles", "5", "--max-train-examples", "40",
        "--train-eval-examples", "12", "--max-seq-length", "192", "--doc-stride", "64",
        "--batch-size", "4", "--eval-batch-size", "16", "--lr", "1e-2", "--epochs", "2", "--seed", "3",
        "--hf-loss", hf_loss])


@pytest.fixture(scope="module")
def lockstep():
    return load_benchmark("lockstep_vs_hf")


@pytest.fixture(scope="module")
def ours(lockstep, tiny_bert_dir):
    return lockstep.run_ours(lockstep_args(lockstep, tiny_bert_dir, "real-tokens"))


def test_every_step_and_evaluation_match_the_trainer(lockstep, tiny_bert_dir, ours):
    assert_lockstep(lockstep, tiny_bert_dir, ours)


def test_distilbert_matches_the_trainer_too(lockstep, tiny_distilbert_dir):
    # No token_type_ids, a QA-head dropout (qa_dropout) to switch off, other parameter names.
    assert_lockstep(lockstep, tiny_distilbert_dir,
                    lockstep.run_ours(lockstep_args(lockstep, tiny_distilbert_dir, "real-tokens")))


def assert_lockstep(lockstep, model_dir, ours):
    hf = lockstep.run_hf(lockstep_args(lockstep, model_dir, "real-tokens"))
    result = lockstep.compare(ours, hf, tolerance=1e-5)
    assert result["steps"] == len(ours["steps"]) >= 20  # two epochs of several steps each
    assert result["first_step_over_tolerance"] is None, result
    assert result["max_grad_norm_rel_diff"] < 1e-4
    # The model learns something (so equal evaluations are not two untrained models)...
    assert ours["steps"][-1]["loss"] < ours["steps"][0]["loss"] - 0.5
    # ...and both sides' n-best answers, EM/F1 and token accuracies agree after every epoch.
    assert len(ours["epochs"]) == len(hf["epochs"]) == 2
    for a, b in zip(ours["epochs"], hf["epochs"]):
        assert a["exact"] == pytest.approx(b["exact"]) and a["f1"] == pytest.approx(b["f1"])
        assert a["token_acc"] == pytest.approx(b["token_acc"])
    assert ours["train_token_acc"] == pytest.approx(hf["train_token_acc"])


def test_hf_own_loss_differs_where_batches_are_padded(lockstep, tiny_bert_dir, ours):
    hf = lockstep.run_hf(lockstep_args(lockstep, tiny_bert_dir, "own"))
    result = lockstep.compare(ours, hf, tolerance=1e-5)
    # Step 1 has the same weights on both sides: only padding inside HF's softmax can differ.
    assert result["first_step_over_tolerance"] == 1
    assert hf["steps"][0]["loss"] > ours["steps"][0]["loss"]
