"""Span post-processing: hand-computed cases, and identity with the plain n-best double loop."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from qa_core.postprocess import postprocess_predictions


@dataclass
class Example:
    id: str
    context: str


@dataclass
class WindowArrays:
    """The parts of features.Windows that post-processing reads."""

    offsets: np.ndarray  # int32 [N, L, 2], (-1, -1) outside the context
    lengths: np.ndarray  # int32 [N]
    example_index: np.ndarray  # int64 [N]


def words_context(n_words: int) -> tuple[str, list[tuple[int, int]]]:
    """A context of numbered words and each word's character span."""
    words = [f"w{i}" for i in range(n_words)]
    spans, pos = [], 0
    for word in words:
        spans.append((pos, pos + len(word)))
        pos += len(word) + 1
    return " ".join(words), spans


def window_offsets(width: int, question_len: int, word_spans: list[tuple[int, int]]) -> np.ndarray:
    """[CLS] question [SEP] context words [SEP] padding, as offsets."""
    offsets = np.full((width, 2), -1, np.int32)
    first = question_len + 2
    offsets[first:first + len(word_spans)] = word_spans
    return offsets


def reference_postprocess(start_logits, end_logits, windows, examples, *, n_best, max_answer_length,
                          version_2=False, null_threshold=0.0):
    """The classic run_qa.py loop, with the documented tie rule spelled out as sort keys."""
    results = []
    for ex_i, example in enumerate(examples):
        spans, null = [], None
        for w in range(len(windows.lengths)):
            if windows.example_index[w] != ex_i:
                continue
            length = int(windows.lengths[w])
            s, e, offsets = start_logits[w], end_logits[w], windows.offsets[w]
            if version_2 and (null is None or s[0] + e[0] < null["score"]):
                null = {"score": s[0] + e[0], "window": w, "null": True}
            start_indexes = sorted(range(length), key=lambda i: (-s[i], i))[:n_best]
            end_indexes = sorted(range(length), key=lambda i: (-e[i], i))[:n_best]
            for a in start_indexes:
                for b in end_indexes:
                    if offsets[a][0] < 0 or offsets[b][0] < 0:
                        continue
                    if b < a or b - a + 1 > max_answer_length:
                        continue
                    spans.append({"score": s[a] + e[b], "window": w, "start": a, "end": b, "null": False,
                                  "start_char": int(offsets[a][0]), "end_char": int(offsets[b][1])})
        spans.sort(key=lambda c: (-c["score"], c["window"], c["start"], c["end"]))
        ranked = list(spans)
        if null is not None:
            ranked.append(null)
            ranked.sort(key=lambda c: -c["score"])  # stable: the null stays after equal spans
        n_best_list = ranked[:n_best]
        if null is not None and not any(c["null"] for c in n_best_list):
            n_best_list.append(null)
        scores = np.array([c["score"] for c in n_best_list], np.float64)
        probs = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum() if len(scores) else scores
        listing = [("" if c["null"] else example.context[c["start_char"]:c["end_char"]],
                    -1 if c["null"] else c["start_char"], -1 if c["null"] else c["end_char"],
                    float(c["score"]), c["window"], c["null"]) for c in n_best_list]
        best = spans[0] if spans else None
        null_prob = next((p for c, p in zip(n_best_list, probs) if c["null"]), None)
        if version_2 and null is not None:
            diff = float(null["score"]) - (float(best["score"]) if best else -math.inf)
            answer_is_null = best is None or diff > null_threshold
        else:
            answer_is_null = best is None
        if answer_is_null:
            text = ""
            score = float(null["score"]) if null is not None else -math.inf
        else:
            text, score = example.context[best["start_char"]:best["end_char"]], float(best["score"])
        results.append({"id": example.id, "text": text, "score": score, "is_null": answer_is_null,
                        "null_score": float(null["score"]) if null is not None else None,
                        "null_probability": null_prob, "n_best": listing, "probabilities": probs})
    return results


def assert_same_as_reference(ours, reference):
    assert len(ours) == len(reference)
    for got, want in zip(ours, reference):
        assert got.id == want["id"]
        assert (got.text, got.score, got.is_null, got.null_score) == (
            want["text"], want["score"], want["is_null"], want["null_score"]), got.id
        listing = [(c.text, c.start_char, c.end_char, c.score, c.window, c.is_null) for c in got.n_best]
        assert listing == want["n_best"], got.id
        np.testing.assert_allclose([c.probability for c in got.n_best], want["probabilities"], rtol=1e-9, atol=0)
        if want["null_probability"] is None:
            assert got.null_probability is None
        else:
            assert got.null_probability == pytest.approx(want["null_probability"], rel=1e-9)


def random_problem(rng, n_examples, width, *, quantized):
    """Examples split into 1-3 overlapping windows of varying length, with random logits."""
    examples, offsets, lengths, example_index = [], [], [], []
    for ex_i in range(n_examples):
        n_words = int(rng.integers(1, 2 * width))
        context, spans = words_context(n_words)
        examples.append(Example(f"q{ex_i}", context))
        question_len = int(rng.integers(1, 6))
        room = width - question_len - 3
        first_word = 0
        while True:
            chunk = spans[first_word:first_word + int(rng.integers(max(1, room // 2), room + 1))]
            offsets.append(window_offsets(width, question_len, chunk))
            lengths.append(question_len + 3 + len(chunk))
            example_index.append(ex_i)
            if first_word + len(chunk) >= n_words:
                break
            first_word += max(1, len(chunk) // 2)  # the next window overlaps this one by half
    n = len(lengths)
    shape = (n, width)
    if quantized:  # few distinct values: ties everywhere exercise the tie rule
        start, end = (rng.integers(-3, 4, shape).astype(np.float32) / 2 for _ in range(2))
    else:
        start, end = (rng.standard_normal(shape, dtype=np.float32) * 3 for _ in range(2))
    windows = WindowArrays(np.stack(offsets), np.array(lengths, np.int32), np.array(example_index, np.int64))
    return start, end, windows, examples


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("version_2", [False, True])
@pytest.mark.parametrize("n_best,max_answer_length", [(20, 30), (5, 3), (1, 10)])
def test_identical_to_plain_loop_on_random_logits(n_best, max_answer_length, version_2, quantized):
    rng = np.random.default_rng([n_best, max_answer_length, version_2, quantized])
    start, end, windows, examples = random_problem(rng, 150, 40, quantized=quantized)
    assert len(windows.lengths) > 300
    kwargs = dict(n_best=n_best, max_answer_length=max_answer_length, version_2=version_2, null_threshold=0.5)
    ours = postprocess_predictions(start, end, windows, examples, **kwargs)
    assert_same_as_reference(ours, reference_postprocess(start, end, windows, examples, **kwargs))


def test_padding_logits_never_matter_and_torch_input_matches():
    rng = np.random.default_rng(7)
    start, end, windows, examples = random_problem(rng, 60, 48, quantized=False)
    padded = np.arange(48) >= windows.lengths[:, None]
    noisy_start, noisy_end = start.copy(), end.copy()
    noisy_start[padded], noisy_end[padded] = 1e6, np.nan
    windows.offsets[padded] = [0, 5]  # even offsets that look like context must not leak in
    base = postprocess_predictions(start, end, windows, examples, version_2=True)
    noisy = postprocess_predictions(torch.from_numpy(noisy_start).to(torch.bfloat16).float(),
                                    torch.from_numpy(noisy_end), windows, examples, version_2=True)
    rounded = postprocess_predictions(torch.from_numpy(start).to(torch.bfloat16).float().numpy(), end,
                                      windows, examples, version_2=True)
    assert [(p.text, p.score, p.null_score) for p in noisy] == [(p.text, p.score, p.null_score) for p in rounded]
    assert sum(p.text != "" for p in base) > 0


def two_window_problem():
    """One example, 6 words; window 0 holds words 0-3, window 1 words 2-5 (words 2-3 overlap).

    Layout of both windows: [CLS] q [SEP] w w w w [SEP] pad -> context at positions 3..6."""
    context, spans = words_context(6)  # "w0 w1 w2 w3 w4 w5"
    offsets = np.stack([window_offsets(9, 1, spans[0:4]), window_offsets(9, 1, spans[2:6])])
    windows = WindowArrays(offsets, np.array([8, 8], np.int32), np.array([0, 0], np.int64))
    start = np.zeros((2, 9), np.float32)
    end = np.zeros((2, 9), np.float32)
    return start, end, windows, [Example("x", context)]


def test_best_span_comes_from_the_window_that_scores_it_highest():
    start, end, windows, examples = two_window_problem()
    start[0, 3], end[0, 4] = 2.0, 2.0  # window 0: "w0 w1" scores 4
    start[1, 5], end[1, 6] = 3.0, 2.5  # window 1: positions 5-6 are words 4-5, "w4 w5" scores 5.5
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=3)
    assert (pred.text, pred.start_char, pred.end_char, pred.score) == ("w4 w5", 12, 17, 5.5)
    # Top-3 starts of window 1 are positions 5, 0, 1 (ties at 0 go to lower positions) and
    # top-3 ends 6, 0, 1: its only context pair is (5, 6). Window 0 likewise gives (3, 4) only.
    assert [(c.text, c.score, c.window) for c in pred.n_best] == [("w4 w5", 5.5, 1), ("w0 w1", 4.0, 0)]
    z = math.exp(5.5) + math.exp(4.0)
    assert [c.probability for c in pred.n_best] == pytest.approx([math.exp(5.5) / z, math.exp(4.0) / z])
    (wide,) = postprocess_predictions(start, end, windows, examples, n_best=20)
    assert [(c.text, c.score, c.window) for c in wide.n_best[:4]] == [
        ("w4 w5", 5.5, 1), ("w0 w1", 4.0, 0), ("w4", 3.0, 1), ("w2 w3 w4 w5", 2.5, 1)]
    assert pred.probability == pytest.approx(math.exp(5.5) / z)


def test_answer_in_the_overlap_is_found_in_both_windows_and_ties_go_to_the_earlier_window():
    start, end, windows, examples = two_window_problem()
    # "w2 w3" is at positions 5-6 of window 0 and 3-4 of window 1.
    start[0, 5], end[0, 6] = 1.0, 1.0
    start[1, 3], end[1, 4] = 1.5, 0.5
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=2)
    assert [(c.text, c.score, c.window) for c in pred.n_best] == [("w2 w3", 2.0, 0), ("w2 w3", 2.0, 1)]
    assert (pred.text, pred.start_char, pred.end_char) == ("w2 w3", 6, 11)
    end[1, 4] = 0.75  # window 1 now wins
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=2)
    assert [(c.text, c.score, c.window) for c in pred.n_best] == [("w2 w3", 2.25, 1), ("w2 w3", 2.0, 0)]


def test_max_answer_length_cuts_long_spans_and_end_before_start_is_never_a_span():
    start, end, windows, examples = two_window_problem()
    windows = WindowArrays(windows.offsets[:1], windows.lengths[:1], windows.example_index[:1])
    start, end = start[:1], end[:1]
    start[0, 3], end[0, 6] = 5.0, 5.0  # "w0 w1 w2 w3": 4 tokens
    start[0, 5], end[0, 4] = 4.0, 4.0  # end before start: never a span
    end[0, 5] = 1.0
    (four,) = postprocess_predictions(start, end, windows, examples, n_best=20, max_answer_length=4)
    assert (four.text, four.score) == ("w0 w1 w2 w3", 10.0)
    (three,) = postprocess_predictions(start, end, windows, examples, n_best=20, max_answer_length=3)
    # (3, 4) "w0 w1" = 5 + 4 and (5, 6) "w2 w3" = 4 + 5 tie: the earlier start wins
    assert [(c.text, c.score) for c in three.n_best[:2]] == [("w0 w1", 9.0), ("w2 w3", 9.0)]
    (one,) = postprocess_predictions(start, end, windows, examples, n_best=20, max_answer_length=1)
    # single tokens: w0 = 5 + 0, w2 = 4 + 1, w3 = 0 + 5, w1 = 0 + 4
    assert [(c.text, c.score) for c in one.n_best] == [("w0", 5.0), ("w2", 5.0), ("w3", 5.0), ("w1", 4.0)]


def test_question_and_special_tokens_are_never_part_of_a_span():
    start, end, windows, examples = two_window_problem()
    start[:, 0:3], end[:, 0:3] = 50.0, 50.0  # CLS, question, SEP
    start[0, 7], end[0, 7] = 50.0, 50.0  # final SEP of window 0
    start[0, 4], end[0, 4] = 1.0, 1.0
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=20)
    assert (pred.text, pred.score) == ("w1", 2.0)
    # n_best = 4: window 0's top starts and ends are all special/question tokens, so no span
    # from it; window 1's are positions 0-3 (its 0-2 score 50), pairing only (3, 3).
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=4)
    assert [(c.text, c.score, c.window) for c in pred.n_best] == [("w2", 0.0, 1)]


def test_null_answer_uses_the_minimum_cls_score_and_the_threshold():
    start, end, windows, examples = two_window_problem()
    start[0, 0], end[0, 0] = 3.0, 2.0  # window 0 null: 5
    start[1, 0], end[1, 0] = 1.0, 2.0  # window 1 null: 3 (the minimum)
    start[1, 4], end[1, 4] = 1.0, 1.0  # best span "w3" in window 1: 2
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=2, version_2=True)
    assert (pred.null_score, pred.null_score_diff, pred.is_null, pred.text) == (3.0, 1.0, True, "")
    assert (pred.start_char, pred.end_char, pred.score) == (-1, -1, 3.0)
    # the null outranks every span: it takes one of the two places, the best span the other
    assert [(c.text, c.score, c.is_null, c.window) for c in pred.n_best] == [("", 3.0, True, 1), ("w3", 2.0, False, 1)]
    z = math.exp(3.0) + math.exp(2.0)
    assert pred.null_probability == pytest.approx(math.exp(3.0) / z)
    assert pred.probability == pred.null_probability
    (kept,) = postprocess_predictions(start, end, windows, examples, n_best=2, version_2=True, null_threshold=1.0)
    assert (kept.is_null, kept.text, kept.score, kept.null_score_diff) == (False, "w3", 2.0, 1.0)
    assert kept.probability == pytest.approx(math.exp(2.0) / z)


def test_null_outside_the_first_n_best_is_appended_and_ties_rank_spans_first():
    start, end, windows, examples = two_window_problem()
    start[:, 0], end[:, 0] = -0.5, -0.5  # null -1 in both windows: the earlier one is reported
    start[0, 3], end[0, 3] = 1.0, 1.0
    # n_best = 1: window 0's top start and end are both 3, "w0" = 2; window 1's (position 1)
    # pair nothing. The null is not the first, so it is appended: n_best + 1 entries.
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=1, version_2=True)
    assert [(c.text, c.score, c.is_null, c.window) for c in pred.n_best] == [("w0", 2.0, False, 0),
                                                                             ("", -1.0, True, 0)]
    # n_best = 3: window 1's top-3 {1, 2, 3} add (3, 3) "w2" = 0; the null ranks third
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=3, version_2=True)
    assert [(c.text, c.score) for c in pred.n_best] == [("w0", 2.0), ("w2", 0.0), ("", -1.0)]
    z = math.exp(2.0) + 1.0 + math.exp(-1.0)
    assert [c.probability for c in pred.n_best] == pytest.approx([math.exp(2.0) / z, 1 / z, math.exp(-1.0) / z])
    start[1, 3], end[1, 3] = -0.5, -0.5  # "w2" now scores -1, as the null: the span ranks first
    (pred,) = postprocess_predictions(start, end, windows, examples, n_best=30, version_2=True)
    tail = [(c.score, c.is_null) for c in pred.n_best if c.score <= -1.0]
    assert tail == [(-1.0, False), (-1.0, True)]


def test_example_without_valid_span_or_windows():
    start, end, windows, examples = two_window_problem()
    windows = WindowArrays(windows.offsets[:1], np.array([3], np.int32), windows.example_index[:1])
    start, end = start[:1], end[:1]
    examples = examples + [Example("no-windows", "abc")]
    v1 = postprocess_predictions(start, end, windows, examples)
    assert [(p.text, p.is_null, p.score, p.n_best) for p in v1] == [("", True, -math.inf, [])] * 2
    v2 = postprocess_predictions(start, end, windows, examples, version_2=True)
    assert (v2[0].is_null, v2[0].null_probability, [c.is_null for c in v2[0].n_best]) == (True, 1.0, [True])
    assert (v2[1].is_null, v2[1].null_score, v2[1].n_best) == (True, None, [])


def test_bad_inputs_raise_clear_errors():
    start, end, windows, examples = two_window_problem()
    with pytest.raises(ValueError, match="must both be"):
        postprocess_predictions(start[:1], end[:1], windows, examples)
    with pytest.raises(ValueError, match="examples the windows were built from"):
        postprocess_predictions(start, end, windows, [])
    start[1, 2] = np.nan
    with pytest.raises(ValueError, match="start_logits is nan at window 1, position 2"):
        postprocess_predictions(start, end, windows, examples)
    with pytest.raises(ValueError, match="n_best"):
        postprocess_predictions(start, end, windows, examples, n_best=0)


@pytest.mark.parametrize("version_2", [False, True])
def test_identical_to_plain_loop_on_real_xquad_windows(xquad_path, minilm_tokenizer, version_2):
    from qa_core.data import read_examples
    from qa_core.features import build_windows

    examples = [e for e in read_examples(xquad_path).examples if e.article in (5, 17)]
    windows = build_windows(examples, minilm_tokenizer, max_seq_length=128, doc_stride=48)
    assert (np.bincount(windows.example_index) > 1).sum() > 10
    rng = np.random.default_rng(3)
    start, end = (rng.standard_normal(windows.input_ids.shape, dtype=np.float32) for _ in range(2))
    kwargs = dict(n_best=20, max_answer_length=30, version_2=version_2)
    ours = postprocess_predictions(start, end, windows, examples, **kwargs)
    assert_same_as_reference(ours, reference_postprocess(start, end, windows, examples, **kwargs))
