"""SQuAD EM/F1 (v1.1, v2.0) on hand-computed cases, token accuracy and the span loss."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qa_core.metrics import (exact_match, f1, normalize_answer, qa_loss, span_loss, squad_v1, squad_v2,
                             token_accuracy)


@dataclass
class Example:
    id: object
    answer_texts: tuple


@pytest.mark.parametrize("text,normalized", [
    ("The  Quick, brown-fox!", "quick brownfox"),  # punctuation is deleted, not spaced: "brownfox"
    ("An apple a day", "apple day"),
    ("theater anthem", "theater anthem"),  # articles only as whole words
    ("A", ""),
    ("  Denver\tBroncos \n", "denver broncos"),
    ("Café MÜLLER", "café müller"),
    ("“Quoted” — text", "“quoted” — text"),  # non-ASCII punctuation stays, as in the official script
    ("thé the", "thé"),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_takes_the_best_gold_answer():
    assert exact_match("Denver Broncos", ["The Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("the broncos!", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos", "Broncos"]) == 0.0
    assert exact_match("", ["the"]) == 1.0  # both normalize to nothing


def test_f1_by_hand():
    # pred [cat, sat, on, mat], gold [cat, on, mat]: P = 3/4, R = 1
    assert f1("the cat sat on the mat", ["a cat on a mat"]) == pytest.approx(2 * 0.75 / 1.75)
    # max over gold: "cat" gives P 1/3 R 1 -> 0.5; "cat sat" gives P 2/3 R 1 -> 0.8
    assert f1("cat sat down", ["cat", "cat sat"]) == pytest.approx(0.8)
    # bag of words: x x y vs x y y share one x and one y: P = R = 2/3
    assert f1("x x y", ["x y y"]) == pytest.approx(2 / 3)
    assert f1("completely different", ["nothing shared"]) == 0.0
    assert f1("Café", ["cafe"]) == 0.0  # no accent folding


def test_empty_prediction_v1_and_v2_rules():
    assert f1("", ["Paris"]) == 0.0
    assert f1("", ["the"]) == 0.0  # v1.1: no shared token, 0 even though both are empty
    assert f1("", [""], version_2=True) == 1.0
    assert f1("", ["Paris"], version_2=True) == 0.0
    assert f1("Paris", [""], version_2=True) == 0.0


def test_squad_v1_hand_computed():
    examples = [Example("a", ("Paris",)), Example("b", ("the Eiffel Tower", "Eiffel Tower")),
                Example(3, ("1889",)), Example("d", ("Gustave Eiffel",))]
    predictions = {"a": "paris.", "b": "Eiffel", 3: "in 1889", "d": "Gustave Eiffel"}
    # exact: a, d. f1: a 1; b [eiffel] vs [eiffel, tower] 2/3; 3: [in, 1889] vs [1889] 2/3; d 1
    result = squad_v1(predictions, examples)
    assert result == {"exact": 50.0, "f1": pytest.approx(100 * (1 + 2 / 3 + 2 / 3 + 1) / 4), "total": 4}


def test_squad_v1_missing_prediction_scores_zero_and_unanswerable_raises():
    examples = [Example("a", ("Paris",)), Example("b", ("Rome",))]
    with pytest.warns(UserWarning, match="1 questions have no prediction"):
        assert squad_v1({"a": "Paris"}, examples) == {"exact": 50.0, "f1": 50.0, "total": 2}
    with pytest.raises(ValueError, match="'c' has no gold answer.*squad_v2"):
        squad_v1({"a": "Paris", "c": ""}, examples + [Example("c", ())])
    with pytest.raises(ValueError, match="'a' occurs twice"):
        squad_v1({"a": "Paris"}, [examples[0], examples[0]])


V2_EXAMPLES = [Example("q1", ("Paris",)), Example("q2", ("the Eiffel Tower",)), Example("q3", ("1889",)),
               Example("q4", ()), Example("q5", ())]
V2_PREDICTIONS = {"q1": "Paris", "q2": "Eiffel", "q3": "", "q4": "", "q5": "London"}
V2_NA_PROBS = {"q1": 0.1, "q2": 0.2, "q3": 0.9, "q4": 0.8, "q5": 0.3}


def test_squad_v2_hand_computed():
    result = squad_v2(V2_PREDICTIONS, V2_EXAMPLES, V2_NA_PROBS)
    # per question exact / f1: q1 1/1, q2 0/(2/3), q3 0/0, q4 1/1, q5 0/0
    expected = {
        "exact": 40.0, "f1": 100 * (8 / 3) / 5, "total": 5,
        "HasAns_exact": 100 / 3, "HasAns_f1": 100 * (5 / 3) / 3, "HasAns_total": 3,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
        # start from "no answer" everywhere (2 right), answer in order of na_prob:
        # exact: q1 +1 -> 3 (best at 0.1), q2 +0, q5 -1, q4 0, q3 +0
        "best_exact": 60.0, "best_exact_thresh": 0.1,
        # f1: q1 +1 -> 3, q2 +2/3 -> 11/3 (best at 0.2), q5 -1, ...
        "best_f1": 100 * (11 / 3) / 5, "best_f1_thresh": 0.2,
    }
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key


def test_squad_v2_na_prob_threshold_and_defaults():
    # q5 (na 0.3) is overruled to "no answer", which is right for it
    result = squad_v2(V2_PREDICTIONS, V2_EXAMPLES, V2_NA_PROBS, na_prob_thresh=0.25)
    assert (result["exact"], result["f1"], result["NoAns_exact"]) == (60.0, pytest.approx(100 * (11 / 3) / 5), 100.0)
    # q3 and q4 also cross 0.25 but were already "no answer"; HasAns is untouched
    assert result["HasAns_exact"] == pytest.approx(100 / 3)
    # Without na_probs every question has 0.0, ties keep example order: q1 +1 -> 3 is the best
    default = squad_v2(V2_PREDICTIONS, V2_EXAMPLES)
    assert (default["best_exact"], default["best_exact_thresh"]) == (60.0, 0.0)
    only_answerable = squad_v2({"q1": "Paris"}, V2_EXAMPLES[:1])
    assert "NoAns_total" not in only_answerable and only_answerable["HasAns_total"] == 1
    with pytest.raises(ValueError, match="first: 'q5'"):
        squad_v2({k: v for k, v in V2_PREDICTIONS.items() if k != "q5"}, V2_EXAMPLES)


def test_squad_v2_gold_answers_that_normalize_to_nothing_mean_no_answer():
    examples = [Example("x", ("The",))]
    assert squad_v2({"x": ""}, examples)["exact"] == 100.0
    assert squad_v2({"x": "the"}, examples)["f1"] == 100.0  # both normalize to no tokens: v2 scores 1
    assert squad_v2({"x": "something"}, examples)["exact"] == 0.0


def test_token_accuracy_hand_computed():
    start = np.array([[0, 5, 1, 0, 0], [1, 0, 2, 9, 9], [3, 0, 0, 0, 1]], np.float32)
    end = np.array([[0, 1, 5, 0, 0], [0, 2, 1, 9, 9], [3, 3, 0, 0, 1]], np.float32)
    lengths = np.array([5, 3, 4])  # window 1's 9s are padding: its argmaxes are 2 and 1
    # argmax starts [1, 2, 0], ends [2, 1, 0] (window 2's end tie 0/1 -> the first)
    result = token_accuracy(start, end, np.array([1, 2, 0]), np.array([2, 0, 1]), lengths)
    assert result == {"start_acc": 1.0, "end_acc": pytest.approx(1 / 3), "token_acc": pytest.approx(2 / 3),
                      "span_acc": pytest.approx(1 / 3)}
    as_torch = token_accuracy(torch.from_numpy(start).bfloat16(), torch.from_numpy(end), torch.tensor([1, 2, 0]),
                              torch.tensor([2, 0, 1]), torch.tensor(lengths))
    assert as_torch == result


def test_qa_loss_is_the_mean_of_start_and_end_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    start, end = torch.randn(4, 7, generator=gen), torch.randn(4, 7, generator=gen)
    sp, ep = torch.tensor([0, 3, 6, 2]), torch.tensor([0, 4, 6, 5])
    expected = (F.cross_entropy(start, sp) + F.cross_entropy(end, ep)) / 2
    assert torch.allclose(qa_loss(start, end, sp, ep), expected)
    per_window = qa_loss(start, end, sp, ep, reduction="none")
    assert per_window.shape == (4,)
    assert torch.allclose(qa_loss(start, end, sp, ep, reduction="sum"), per_window.sum())
    assert torch.allclose(per_window.mean(), expected)
    assert qa_loss(start.bfloat16(), end.bfloat16(), sp, ep).dtype == torch.float32
    with pytest.raises(ValueError, match="reduction"):
        qa_loss(start, end, sp, ep, reduction="avg")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_qa_loss_ignores_padding_so_dynamic_and_fixed_padding_agree(label_smoothing):
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 3, 8])
    sp, ep = torch.tensor([1, 0, 7]), torch.tensor([3, 2, 7])
    real_start = [torch.randn(int(n), generator=gen) for n in lengths]
    real_end = [torch.randn(int(n), generator=gen) for n in lengths]

    def padded(rows, width):  # garbage after each window's length
        out = torch.randn(len(rows), width, generator=gen) * 50
        for i, row in enumerate(rows):
            out[i, :len(row)] = row
        return out

    losses = []
    for width in (8, 16, 384):
        mask = (torch.arange(width) < lengths[:, None]).long()
        losses.append(qa_loss(padded(real_start, width), padded(real_end, width), sp, ep, attention_mask=mask,
                              label_smoothing=label_smoothing, reduction="none"))
    # each window on its own, unpadded
    alone = torch.stack([(F.cross_entropy(s[None], sp[i:i + 1], label_smoothing=label_smoothing)
                          + F.cross_entropy(e[None], ep[i:i + 1], label_smoothing=label_smoothing)) / 2
                         for i, (s, e) in enumerate(zip(real_start, real_end))])
    for loss in losses:
        torch.testing.assert_close(loss, alone, rtol=1e-6, atol=1e-6)


def test_qa_loss_gradients_stay_finite_with_masking_and_smoothing():
    start = torch.randn(2, 6, requires_grad=True)
    end = torch.randn(2, 6, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    qa_loss(start, end, torch.tensor([1, 5]), torch.tensor([2, 5]), attention_mask=mask,
            label_smoothing=0.2).backward()
    assert torch.isfinite(start.grad).all() and torch.isfinite(end.grad).all()
    assert (start.grad[0, 3:] == 0).all()  # padding gets no gradient


def test_span_loss_from_numpy_matches_qa_loss():
    rng = np.random.default_rng(0)
    start, end = rng.standard_normal((3, 10), dtype=np.float32), rng.standard_normal((3, 10), dtype=np.float32)
    lengths, sp, ep = np.array([10, 4, 7], np.int32), np.array([2, 0, 6]), np.array([5, 3, 6])
    mask = torch.arange(10) < torch.from_numpy(lengths)[:, None].long()
    expected = qa_loss(torch.from_numpy(start), torch.from_numpy(end), torch.from_numpy(sp), torch.from_numpy(ep),
                       attention_mask=mask)
    assert span_loss(start, end, sp, ep, lengths) == pytest.approx(float(expected))
