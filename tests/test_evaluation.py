"""evaluate() against a plain reference: each window run alone (no padding), plain
cross-entropy and argmax loops, then the same post-processing and SQuAD scoring."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qa_core.data import read_examples
from qa_core.evaluation import evaluate
from qa_core.features import build_windows
from qa_core.metrics import squad_v1, squad_v2
from qa_core.modeling import load_model
from qa_core.postprocess import postprocess_predictions
from qa_core.tokenization import load_tokenizer

ARTICLES = (0, 1, 2)


def tiny_model(model_dir, dropout=0.0):
    """The tiny checkpoint with a QA head of weights N(0, 0.5): well separated logits, so
    float rounding between batched and single-window forwards cannot reorder spans."""
    model = load_model(str(model_dir), dropout={"hidden": dropout, "attention": dropout, "head": dropout})
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        model.qa_outputs.weight.copy_(torch.randn(model.qa_outputs.weight.shape, generator=generator) * 0.5)
    return model


@pytest.fixture(scope="module")
def xquad_examples(xquad_path):
    return [e for e in read_examples(xquad_path).examples if e.article in ARTICLES]


def make_windows(model_dir, examples):
    # Short windows: most questions need several, so the cross-window merge is exercised.
    return build_windows(examples, load_tokenizer(str(model_dir)), max_seq_length=128, doc_stride=32)


def reference_evaluation(model, windows, examples, version_2=False, null_threshold=0.0):
    n, width = windows.input_ids.shape
    start = np.zeros((n, width), np.float32)
    end = np.zeros((n, width), np.float32)
    losses, start_hits, end_hits = [], [], []
    model.eval()
    with torch.no_grad():
        for i in range(n):
            length = int(windows.lengths[i])
            ids = torch.from_numpy(windows.input_ids[i:i + 1, :length].astype(np.int64))
            types = torch.from_numpy(windows.token_type_ids[i:i + 1, :length].astype(np.int64))
            s, e = model(ids, torch.ones_like(ids), types if model.uses_token_type_ids else None)
            start[i, :length], end[i, :length] = s[0].numpy(), e[0].numpy()
            sp, ep = int(windows.start_positions[i]), int(windows.end_positions[i])
            losses.append((F.cross_entropy(s, torch.tensor([sp])) + F.cross_entropy(e, torch.tensor([ep]))).item() / 2)
            start_hits.append(int(np.argmax(start[i, :length])) == sp)
            end_hits.append(int(np.argmax(end[i, :length])) == ep)
    predictions = postprocess_predictions(start, end, windows, examples, version_2=version_2,
                                          null_threshold=null_threshold)
    texts = {p.id: p.text for p in predictions}
    result = {"loss": float(np.mean(losses)), "start_acc": float(np.mean(start_hits)),
              "end_acc": float(np.mean(end_hits)), "span_acc": float(np.mean(np.logical_and(start_hits, end_hits)))}
    if version_2:
        scores = squad_v2(texts, examples, {p.id: p.null_probability for p in predictions})
    else:
        scores = squad_v1(texts, examples)
    return result, scores, texts, predictions


@pytest.mark.parametrize("fixture", ["tiny_distilbert_dir", "tiny_bert_dir"])
def test_evaluate_equals_the_per_window_reference(request, xquad_examples, fixture):
    model_dir = request.getfixturevalue(fixture)
    model = tiny_model(model_dir)
    windows = make_windows(model_dir, xquad_examples)
    assert (np.bincount(windows.example_index) > 1).sum() > len(xquad_examples) // 3  # merges across windows
    expected, scores, texts, reference_predictions = reference_evaluation(model, windows, xquad_examples)

    result = evaluate(model, windows, xquad_examples, batch_size=16)
    assert result["predictions"] == texts
    ours = result["example_predictions"]
    assert [p.start_char for p in ours] == [p.start_char for p in reference_predictions]
    assert [p.score for p in ours] == pytest.approx([p.score for p in reference_predictions], rel=1e-5)
    assert (result["exact"], result["f1"]) == (scores["exact"], scores["f1"])
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    for key in ("start_acc", "end_acc", "span_acc"):
        assert result[key] == expected[key], key
    assert result["token_acc"] == pytest.approx((expected["start_acc"] + expected["end_acc"]) / 2)
    assert (result["n_windows"], result["n_examples"]) == (len(windows), len(xquad_examples))
    assert set(result["timings"]) == {"forward_s", "postprocess_s", "metrics_s", "windows_per_s"}
    assert 0 < result["f1"] < 100 and result["exact"] <= result["f1"]


def test_batching_does_not_change_results_and_mode_is_restored(tiny_distilbert_dir, xquad_examples):
    examples = xquad_examples[:20]
    model = tiny_model(tiny_distilbert_dir, dropout=0.5)  # dropout would make train-mode results random
    windows = make_windows(tiny_distilbert_dir, examples)
    model.train()
    results = [evaluate(model, windows, examples, batch_size=size, piece_size=pieces)
               for size, pieces in ((1, 0), (7, 0), (64, 0), (64, 5), (7, 3))]
    assert results[3]["n_windows"] == len(windows) > 5  # pieces of 5 really split the batch
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for other in results[1:]:
        assert other["predictions"] == results[0]["predictions"]
        assert other["loss"] == pytest.approx(results[0]["loss"], rel=1e-5)
        assert other["token_acc"] == results[0]["token_acc"]
    model.eval()
    evaluate(model, windows, examples)
    assert not model.training


def test_squad_v2_evaluation_equals_reference(tiny_bert_dir, xquad_examples):
    # Every third question loses its answers: SQuAD v2 data with no-answer questions.
    examples = [dataclasses.replace(e, answer_texts=(), answer_starts=(), is_impossible=True) if i % 3 == 0 else e
                for i, e in enumerate(xquad_examples[:60])]
    model = tiny_model(tiny_bert_dir)
    windows = make_windows(tiny_bert_dir, examples)
    *_, predictions = reference_evaluation(model, windows, examples, version_2=True)
    # a threshold that sends about half the questions to "no answer"
    threshold = float(np.median([p.null_score_diff for p in predictions]))
    expected, scores, texts, _ = reference_evaluation(model, windows, examples, version_2=True,
                                                      null_threshold=threshold)
    result = evaluate(model, windows, examples, version_2=True, null_threshold=threshold, batch_size=32)
    assert result["predictions"] == texts
    for key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1"):
        assert result[key] == pytest.approx(scores[key], rel=1e-12), key
    assert result["best_f1_thresh"] == pytest.approx(scores["best_f1_thresh"], rel=1e-4)
    assert (result["HasAns_total"], result["NoAns_total"]) == (40, 20)
    assert 20 <= list(texts.values()).count("") <= 40
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_autocast_bfloat16_keeps_float32_logits_and_a_close_loss(tiny_distilbert_dir, xquad_examples):
    examples = xquad_examples[:10]
    model = tiny_model(tiny_distilbert_dir)
    windows = make_windows(tiny_distilbert_dir, examples)
    full = evaluate(model, windows, examples)
    low = evaluate(model, windows, examples, autocast_dtype=torch.bfloat16)
    assert np.isfinite(low["loss"]) and low["loss"] == pytest.approx(full["loss"], rel=0.05)
    assert isinstance(low["example_predictions"][0].score, float)


def test_questions_without_gold_get_no_exact_or_f1_and_empty_windows_raise(tiny_distilbert_dir, xquad_examples):
    examples = [dataclasses.replace(e, answer_texts=(), answer_starts=(), is_impossible=True)
                for e in xquad_examples[:5]]
    model = tiny_model(tiny_distilbert_dir)
    windows = make_windows(tiny_distilbert_dir, examples)
    result = evaluate(model, windows, examples)
    assert "exact" not in result and len(result["predictions"]) == 5
    with pytest.raises(ValueError, match="no windows"):
        evaluate(model, windows.subset(np.array([], np.int64)), examples)
