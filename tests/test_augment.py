"""Augmentation: answers survive context noise at exactly recomputed offsets, draws are
reproducible per (seed, epoch), hand-checked outcomes at probability 1, paraphrase files."""
from __future__ import annotations

import json

import pytest

from qa_core.augment import ParaphraseError, augment_examples, load_paraphrases, unmatched_paraphrase_ids
from qa_core.data import QAExample, read_examples

ALL_LEVERS = ("question_word_dropout", "question_swap", "context_word_dropout", "context_sentence_dropout")


def example(context, answers=(), question="What is the thing here?", id_="q1"):
    texts = tuple(t for t, _ in answers)
    starts = tuple(s for _, s in answers)
    for t, s in answers:
        assert context[s:s + len(t)] == t
    return QAExample(id=id_, title="t", context=context, question=question, answer_texts=texts,
                     answer_starts=starts, is_impossible=not answers, article=0, paragraph=0)


@pytest.fixture(scope="module")
def xquad_examples(xquad_path):
    return read_examples(xquad_path).examples


def words_are_subsequence(short: str, long: str) -> bool:
    remaining = iter(long.split())
    return all(any(w == x for x in remaining) for w in short.split())


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_every_xquad_answer_is_at_its_recomputed_offset(xquad_examples, p):
    for seed, epoch in ((0, 0), (1, 3), (7, 1)):
        out = augment_examples(xquad_examples, seed=seed, epoch=epoch, **{k: p for k in ALL_LEVERS})
        assert len(out) == len(xquad_examples)
        changed = 0
        for before, after in zip(xquad_examples, out):
            assert after.id == before.id and after.answer_texts == before.answer_texts
            for text, start in zip(after.answer_texts, after.answer_starts):
                assert after.context[start:start + len(text)] == text, (before.id, text)
            # Only whole words (and sentences) are removed: what is left is a subsequence.
            assert words_are_subsequence(after.context, before.context)
            assert after.question.split() and set(after.question.split()) <= set(before.question.split())
            changed += after.context != before.context
        assert changed > 0.9 * len(xquad_examples)
        total_before = sum(len(e.context) for e in xquad_examples)
        total_after = sum(len(e.context) for e in out)
        assert total_after < (1 - p / 2) * total_before


def test_same_seed_and_epoch_same_result_other_epoch_or_seed_differs(xquad_examples):
    levers = {k: 0.2 for k in ALL_LEVERS}
    a = augment_examples(xquad_examples, seed=3, epoch=2, **levers)
    b = augment_examples(xquad_examples, seed=3, epoch=2, **levers)
    assert a == b
    for other in (augment_examples(xquad_examples, seed=3, epoch=3, **levers),
                  augment_examples(xquad_examples, seed=4, epoch=2, **levers)):
        differing = sum(x != y for x, y in zip(a, other))
        assert differing > 0.5 * len(a)


def test_levers_draw_independently(xquad_examples):
    context_only = augment_examples(xquad_examples, seed=0, epoch=0, context_word_dropout=0.3)
    both = augment_examples(xquad_examples, seed=0, epoch=0, context_word_dropout=0.3, question_word_dropout=0.5)
    assert [e.context for e in context_only] == [e.context for e in both]
    assert [e.question for e in context_only] == [e.question for e in xquad_examples]
    assert [e.question for e in both] != [e.question for e in xquad_examples]


def test_all_off_returns_the_same_objects(xquad_examples):
    out = augment_examples(xquad_examples[:50], seed=0, epoch=0)
    assert all(a is b for a, b in zip(out, xquad_examples[:50]))


CONTEXT = "Alpha beta. Gamma delta epsilon. Zeta eta."


def test_sentence_dropout_keeps_only_the_answer_sentence():
    ex = example(CONTEXT, [("delta", 18)])
    out, = augment_examples([ex], seed=0, epoch=0, context_sentence_dropout=1.0)
    assert out.context == "Gamma delta epsilon. "
    assert out.answer_starts == (6,)


def test_word_dropout_keeps_only_words_touching_answers():
    # Two gold answers, one starting inside a word ("1990" of "1990s"): both protected.
    context = "In the 1990s the band toured widely across Europe and Asia."
    ex = example(context, [("1990", 7), ("across Europe", 36)])
    out, = augment_examples([ex], seed=5, epoch=1, context_word_dropout=1.0)
    assert out.context == "1990s across Europe "
    assert out.answer_starts == (0, 6)
    assert out.answer_texts == ex.answer_texts


def test_unanswerable_context_noise_keeps_one_sentence_or_word():
    ex = example(CONTEXT)
    sentences = {"Alpha beta. ", "Gamma delta epsilon. ", "Zeta eta."}
    words = set(CONTEXT.split())
    seen_sentences, seen_words = set(), set()
    for epoch in range(20):
        s, = augment_examples([ex], seed=0, epoch=epoch, context_sentence_dropout=1.0)
        w, = augment_examples([ex], seed=0, epoch=epoch, context_word_dropout=1.0)
        assert s.context in sentences
        assert len(w.context.split()) == 1 and w.context.split()[0] in words
        seen_sentences.add(s.context)
        seen_words.add(w.context.split()[0])
    assert len(seen_sentences) > 1 and len(seen_words) > 1  # the survivor is drawn, not fixed


def test_question_swap_and_dropout_at_probability_one():
    ex = example(CONTEXT, [("delta", 18)], question="a b c d e")
    swapped, = augment_examples([ex], seed=0, epoch=0, question_swap=1.0)
    assert swapped.question == "b a d c e"
    dropped, = augment_examples([ex], seed=0, epoch=0, question_word_dropout=1.0)
    assert len(dropped.question.split()) == 1 and dropped.question in "a b c d e".split()
    assert dropped.context == ex.context and dropped.answer_starts == ex.answer_starts


def test_bad_probabilities_are_rejected():
    with pytest.raises(ValueError, match="context_word_dropout"):
        augment_examples([], seed=0, epoch=0, context_word_dropout=1.5)
    with pytest.raises(ValueError, match="load_paraphrases"):
        augment_examples([], seed=0, epoch=0, paraphrase_prob=0.5)


# ---------------------------------------------------------------------------------- paraphrases


def test_paraphrases_from_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "para.tsv"
    tsv.write_text("# id<TAB>question\nq1\tWhich thing is it?\n\nq1\tName the thing.\n7\tWhat number?\n")
    jsonl = tmp_path / "para.jsonl"
    jsonl.write_text(json.dumps({"id": "q1", "questions": ["Which thing is it?", "Name the thing."]}) + "\n"
                     + json.dumps({"id": 7, "questions": ["What number?"]}) + "\n")
    expected = {"q1": ("Which thing is it?", "Name the thing."), "7": ("What number?",)}
    assert load_paraphrases(tsv) == expected
    assert load_paraphrases(jsonl) == expected

    examples = [example(CONTEXT, [("delta", 18)], id_="q1"), example(CONTEXT, [("beta", 6)], id_="other")]
    assert unmatched_paraphrase_ids(expected, examples) == ["7"]
    seen = set()
    for epoch in range(12):
        first, second = augment_examples(examples, seed=0, epoch=epoch, paraphrase_prob=1.0, paraphrases=expected)
        assert first.question in expected["q1"]
        assert second is examples[1]
        seen.add(first.question)
    assert seen == set(expected["q1"])
    none, _ = augment_examples(examples, seed=0, epoch=0, paraphrase_prob=0.0, paraphrases=expected)
    assert none is examples[0]


@pytest.mark.parametrize("name, text, message", [
    ("p.tsv", "q1\tok\nq2 no tab here\n", r"p\.tsv:2: no tab.*Fix: write `id<TAB>"),
    ("p.tsv", "q1\t   \n", r"p\.tsv:1: empty question for id 'q1'"),
    ("p.tsv", "\tquestion\n", r"p\.tsv:1: empty id"),
    ("p.jsonl", '{"id": "q1", "questions": ["a"]}\n{"id": "q2", "questions": ["b"\n', r"p\.jsonl:2: invalid JSON"),
    ("p.jsonl", '{"id": "q1", "question": ["a"]}\n', r"p\.jsonl:1: expected an object with 'id' and 'questions'"),
    ("p.jsonl", '{"id": "q1", "questions": []}\n', r"p\.jsonl:1: 'questions' for id 'q1' must be a non-empty list"),
    ("p.jsonl", '{"id": true, "questions": ["a"]}\n', r"p\.jsonl:1: 'id' must be"),
    ("p.csv", "q1,a\n", r"p\.csv: unknown paraphrase file type '\.csv'"),
    ("p.tsv", "# only a comment\n", r"p\.tsv: no paraphrases"),
])
def test_paraphrase_file_errors_name_file_line_and_fix(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ParaphraseError, match=message) as info:
        load_paraphrases(path)
    assert "Fix:" in str(info.value)


def test_missing_paraphrase_file(tmp_path):
    with pytest.raises(ParaphraseError, match="missing.tsv: file not found"):
        load_paraphrases(tmp_path / "missing.tsv")
