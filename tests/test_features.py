"""Windows and span labels against Hugging Face's run_qa.py preprocessing, run through transformers."""
from __future__ import annotations

import importlib.util
import json
import re
import string
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers.processors import TemplateProcessing

from qa_core import features
from qa_core.data import QAExample, read_examples
from qa_core.features import Windows, build_windows

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(minilm_dir), use_fast=True)


@pytest.fixture(scope="module")
def xquad_examples(xquad_path):
    return read_examples(xquad_path).examples


def hf_prepare_train_features(hf_tokenizer, examples, max_seq_length, doc_stride):
    """run_qa.py's prepare_train_features: tokenize with overflow, then walk offsets to the span
    (the walk is the race benchmark's own `span_labels`, so both check the same reference)."""
    encoded = hf_tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples],
                           truncation="only_second", max_length=max_seq_length, stride=doc_stride,
                           return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    starts, ends = _race_benchmark().span_labels(encoded, examples, hf_tokenizer.cls_token_id)
    return encoded, np.array(starts), np.array(ends)


def _race_benchmark():
    spec = importlib.util.spec_from_file_location("bench_vs_hf_trainer", REPO_ROOT / "benchmarks" / "vs_hf_trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_equal_to_hf(windows: Windows, hf_tokenizer, examples, max_seq_length, doc_stride):
    encoded, starts, ends = hf_prepare_train_features(hf_tokenizer, examples, max_seq_length, doc_stride)
    np.testing.assert_array_equal(windows.input_ids, np.array(encoded["input_ids"]))
    np.testing.assert_array_equal(windows.token_type_ids, np.array(encoded["token_type_ids"]))
    np.testing.assert_array_equal(windows.lengths, np.array(encoded["attention_mask"]).sum(1))
    np.testing.assert_array_equal(windows.example_index, np.array(encoded["overflow_to_sample_mapping"]))
    context = np.array([[s == 1 for s in encoded.sequence_ids(i)] for i in range(len(windows))])
    expected_offsets = np.where(context[..., None], np.array(encoded["offset_mapping"]), -1)
    np.testing.assert_array_equal(windows.offsets, expected_offsets)
    np.testing.assert_array_equal(windows.start_positions, starts)
    np.testing.assert_array_equal(windows.end_positions, ends)


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def labelled_text(windows: Windows, examples, row: int) -> str:
    context = examples[windows.example_index[row]].context
    start, end = windows.offsets[row, windows.start_positions[row], 0], windows.offsets[row, windows.end_positions[row], 1]
    return context[start:end]


def example(context, question, answer=None, *, qid="q", start=None) -> QAExample:
    if answer is None:
        return QAExample(qid, "t", context, question, (), (), True, 0, 0)
    start = context.index(answer) if start is None else start
    return QAExample(qid, "t", context, question, (answer,), (start,), False, 0, 0)


@pytest.mark.parametrize("max_seq_length,doc_stride", [(384, 128), (128, 32)])
def test_every_xquad_window_equals_hf_preprocessing(xquad_examples, minilm_tokenizer, hf_tokenizer,
                                                    max_seq_length, doc_stride):
    windows = build_windows(xquad_examples, minilm_tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride)
    assert len(windows) > len(xquad_examples)  # some contexts need several windows
    assert_equal_to_hf(windows, hf_tokenizer, xquad_examples, max_seq_length, doc_stride)


def test_labelled_spans_hold_the_gold_answer_and_cls_windows_do_not(xquad_examples, minilm_tokenizer):
    windows = build_windows(xquad_examples, minilm_tokenizer, max_seq_length=128, doc_stride=32)
    positive = np.flatnonzero(windows.start_positions > 0)
    assert len(positive) >= len(xquad_examples)  # every question has an answer window
    assert np.array_equal(np.unique(windows.example_index[positive]), np.arange(len(xquad_examples)))
    cut_tokens = 0
    for row in positive:
        e = xquad_examples[windows.example_index[row]]
        gold, start, end = e.answer_texts[0], e.answer_starts[0], e.answer_starts[0] + len(e.answer_texts[0])
        first, last = windows.offsets[row, windows.start_positions[row]], windows.offsets[row, windows.end_positions[row]]
        # The label is the smallest token span covering the gold characters.
        assert first[0] <= start < first[1] and last[0] < end <= last[1], row
        if normalize(labelled_text(windows, xquad_examples, row)) != normalize(gold):
            # Only possible when the gold answer stops inside a token, e.g. "(2,70" of "(2,700".
            assert e.context[end - 1].isalnum() and e.context[end].isalnum(), row
            cut_tokens += 1
    assert cut_tokens <= 2
    for row in np.flatnonzero(windows.start_positions == 0):
        e = xquad_examples[windows.example_index[row]]
        inside = windows.offsets[row, :windows.lengths[row]]
        inside = inside[inside[:, 0] >= 0]
        start, end = e.answer_starts[0], e.answer_starts[0] + len(e.answer_texts[0])
        assert not (inside[0, 0] <= start and inside[-1, 1] >= end), row
    assert (windows.end_positions >= windows.start_positions).all()


@pytest.mark.parametrize("context,answer", [
    ("Le café de Zoë à Montréal ouvre à l'aube, près de la rivière.", "Zoë à Montréal"),
    ("東京は日本の首都であり、人口は約一千四百万人です。", "日本の首都"),
    ("القاهرة هي عاصمة مصر وأكبر مدنها من حيث عدد السكان.", "عاصمة مصر"),
    ("We met at the café 🎉🎉 and ordered two 🍕 slices with friends.", "two 🍕 slices"),
    ("Naïve façades: the Ångström unit measures wavelengths.", "Ångström unit"),
])
def test_non_ascii_text_maps_back_to_exact_characters(context, answer, minilm_tokenizer, hf_tokenizer):
    examples = [example(context, "What is mentioned here?", answer)]
    windows = build_windows(examples, minilm_tokenizer, max_seq_length=64, doc_stride=16, max_query_length=16)
    assert_equal_to_hf(windows, hf_tokenizer, examples, 64, 16)
    assert len(windows) == 1 and windows.start_positions[0] > 0
    assert labelled_text(windows, examples, 0) == answer


def test_answers_at_the_very_start_and_end_of_the_context(minilm_tokenizer, hf_tokenizer):
    context = "Marie Curie won two Nobel prizes in physics and chemistry"
    first = example(context, "Who won?", "Marie Curie", qid="first")
    last = example(context, "Which field?", "chemistry", qid="last")
    windows = build_windows([first, last], minilm_tokenizer, max_seq_length=64, doc_stride=16, max_query_length=16)
    assert labelled_text(windows, [first, last], 0) == "Marie Curie"
    assert windows.offsets[0, windows.start_positions[0], 0] == 0
    assert labelled_text(windows, [first, last], 1) == "chemistry"
    last_context_token = windows.lengths[1] - 2  # ... chemistry [SEP]
    assert windows.start_positions[1] == windows.end_positions[1] == last_context_token
    # run_qa.py's start loop walks past the last context token when the answer starts on it
    # (the [SEP] and pad offsets are (0, 0) <= start_char) and labels a pad token instead.
    _, hf_starts, hf_ends = hf_prepare_train_features(hf_tokenizer, [first, last], 64, 16)
    assert hf_starts[0] == windows.start_positions[0] and hf_ends[1] == windows.end_positions[1]
    assert hf_starts[1] == 63


def test_answer_straddling_window_boundaries(minilm_tokenizer, hf_tokenizer):
    context = " ".join(f"w{i}" for i in range(120))  # "w17" is two tokens: "w", "##17"
    answer = " ".join(f"w{i}" for i in range(40, 52))
    examples = [example(context, "Which words?", answer)]
    windows = build_windows(examples, minilm_tokenizer, max_seq_length=64, doc_stride=24, max_query_length=8)
    assert_equal_to_hf(windows, hf_tokenizer, examples, 64, 24)
    assert len(windows) >= 4
    positive = np.flatnonzero(windows.start_positions > 0)
    assert len(positive) >= 1 and all(labelled_text(windows, examples, r) == answer for r in positive)
    # Windows that hold part of the answer but not all of it are labelled CLS.
    start, end = context.index(answer), context.index(answer) + len(answer)
    partial = [r for r in np.flatnonzero(windows.start_positions == 0)
               if (windows.offsets[r, :, 1] > start).any() and (windows.offsets[r, :, 0] >= 0).any()
               and ((windows.offsets[r, :, 0] >= 0) & (windows.offsets[r, :, 0] < end)).any()]
    assert partial, "expected windows cutting through the answer"
    # Consecutive windows overlap by exactly doc_stride context tokens.
    context_tokens = [windows.input_ids[r][windows.offsets[r, :, 0] >= 0] for r in range(len(windows))]
    for a, b in zip(context_tokens, context_tokens[1:]):
        np.testing.assert_array_equal(a[-24:], b[:24])


def test_context_shorter_than_one_window(minilm_tokenizer):
    e = example("Short context here.", "What?", "Short")
    windows = build_windows([e], minilm_tokenizer, max_seq_length=32, doc_stride=8, max_query_length=8)
    question = minilm_tokenizer.encode("What?", add_special_tokens=False).ids
    context = minilm_tokenizer.encode("Short context here.", add_special_tokens=False).ids
    expected = [101, *question, 102, *context, 102]
    assert len(windows) == 1 and windows.lengths[0] == len(expected)
    assert windows.input_ids[0, :len(expected)].tolist() == expected
    assert (windows.input_ids[0, len(expected):] == windows.pad_token_id).all()
    assert (windows.offsets[0, len(expected):] == -1).all() and (windows.offsets[0, :len(question) + 2] == -1).all()
    assert windows.token_type_ids[0].tolist() == [0] * (len(question) + 2) + [1] * (len(context) + 1) + [0] * (
        32 - len(expected))


def test_question_longer_than_max_query_length_is_truncated(minilm_tokenizer):
    question = "Which " + " ".join(["very"] * 40) + " long question?"
    e = example("The answer is forty two, said the computer.", question, "forty two")
    windows = build_windows([e], minilm_tokenizer, max_seq_length=48, doc_stride=8, max_query_length=10)
    question_ids = minilm_tokenizer.encode(question, add_special_tokens=False).ids
    assert windows.input_ids[0, 1:11].tolist() == question_ids[:10]
    assert windows.input_ids[0, 11] == 102 and windows.offsets[0, 12, 0] == 0
    assert labelled_text(windows, [e], 0) == "forty two"


def test_unanswerable_examples_are_labelled_cls(minilm_tokenizer):
    e = example("Nothing to find in this paragraph at all.", "Who?")
    windows = build_windows([e], minilm_tokenizer, max_seq_length=32, doc_stride=8, max_query_length=8)
    assert windows.start_positions.tolist() == [0] and windows.end_positions.tolist() == [0]


def test_other_special_token_templates_are_placed_generically(minilm_dir, minilm_tokenizer):
    transformers = pytest.importorskip("transformers")
    # A RoBERTa-like layout: [CLS] q [SEP] [SEP] c [SEP], with its own type ids.
    tokenizer = Tokenizer.from_str(minilm_tokenizer.to_str())
    tokenizer.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] [SEP] $B:1 [SEP]:1",
                                                  special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    reference = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer.to_str()),
                                                     cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                                     model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    context = " ".join(f"token{i}" for i in range(60)) + " the answer is here."
    examples = [example(context, "Where is the answer?", "the answer")]
    windows = build_windows(examples, tokenizer, max_seq_length=40, doc_stride=10, max_query_length=8)
    assert_equal_to_hf(windows, reference, examples, 40, 10)
    assert windows.input_ids[0, 6:8].tolist() == [102, 102]


def test_tokenizer_with_truncation_and_padding_set_gives_the_same_windows(minilm_dir, minilm_tokenizer, xquad_examples):
    configured = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))  # ships truncation 128 and padding
    assert configured.truncation is not None and configured.padding is not None
    subset = xquad_examples[:40]
    a = build_windows(subset, configured, max_seq_length=256, doc_stride=64)
    b = build_windows(subset, minilm_tokenizer, max_seq_length=256, doc_stride=64)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    assert configured.truncation is not None  # the caller's tokenizer is left as it was


def test_negative_down_sampling_keeps_answers_and_is_deterministic(xquad_examples, minilm_tokenizer):
    subset = xquad_examples[:300]
    full = build_windows(subset, minilm_tokenizer, max_seq_length=96, doc_stride=24)
    kept = build_windows(subset, minilm_tokenizer, max_seq_length=96, doc_stride=24, negative_keep_fraction=0.25, seed=3)
    again = build_windows(subset, minilm_tokenizer, max_seq_length=96, doc_stride=24, negative_keep_fraction=0.25, seed=3)
    other = build_windows(subset, minilm_tokenizer, max_seq_length=96, doc_stride=24, negative_keep_fraction=0.25, seed=4)
    np.testing.assert_array_equal(kept.input_ids, again.input_ids)
    assert not np.array_equal(kept.example_index, other.example_index)
    assert (kept.start_positions > 0).sum() == (full.start_positions > 0).sum()
    negatives_full, negatives_kept = (full.start_positions == 0).sum(), (kept.start_positions == 0).sum()
    assert 0.15 * negatives_full < negatives_kept < 0.35 * negatives_full
    # Kept rows are rows of the full set, in order.
    identity = lambda w, i: (w.example_index[i], w.offsets[i].tobytes())  # noqa: E731
    full_rows = {identity(full, i): i for i in range(len(full))}
    rows = [full_rows[identity(kept, i)] for i in range(len(kept))]
    assert rows == sorted(rows)


def test_negative_down_sampling_keeps_one_window_of_unanswerable_questions(minilm_tokenizer):
    context = " ".join(f"word{i}" for i in range(200))
    examples = [example(context, f"Question {i}?", qid=i) for i in range(5)]
    windows = build_windows(examples, minilm_tokenizer, max_seq_length=48, doc_stride=8, negative_keep_fraction=0.0,
                            max_query_length=8)
    assert windows.example_index.tolist() == [0, 1, 2, 3, 4]


def test_doc_stride_that_leaves_no_room_is_rejected(minilm_tokenizer):
    with pytest.raises(ValueError, match=r"doc_stride \(100\) must be below the context room of a window "
                                         r"\(max_seq_length 128 - max_query_length 64 - 3 special tokens = 61\)"):
        build_windows([example("a b", "q?", "a")], minilm_tokenizer, max_seq_length=128, doc_stride=100)


def test_feature_cache_skips_tokenization_on_the_second_run(xquad_examples, minilm_tokenizer, tmp_path, monkeypatch):
    subset = xquad_examples[:50]
    first = build_windows(subset, minilm_tokenizer, max_seq_length=128, doc_stride=32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("windows-*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(features, "_tokenize_into_windows", fail)
    second = build_windows(subset, minilm_tokenizer, max_seq_length=128, doc_stride=32, cache_dir=tmp_path)
    for name in ("input_ids", "token_type_ids", "lengths", "offsets", "example_index", "start_positions", "end_positions"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
        assert getattr(first, name).dtype == getattr(second, name).dtype
    assert second.pad_token_id == first.pad_token_id
    monkeypatch.undo()
    # Any change to parameters or content is a different key.
    build_windows(subset, minilm_tokenizer, max_seq_length=128, doc_stride=16, cache_dir=tmp_path)
    changed = [subset[0].__class__(**{**subset[0].__dict__, "question": "Changed?"})] + list(subset[1:])
    build_windows(changed, minilm_tokenizer, max_seq_length=128, doc_stride=32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("windows-*.npz"))) == 3


def test_windows_dtypes_and_subset(xquad_examples, minilm_tokenizer):
    windows = build_windows(xquad_examples[:20], minilm_tokenizer, max_seq_length=128, doc_stride=32)
    assert windows.input_ids.dtype == np.int32 and windows.token_type_ids.dtype == np.int8
    assert windows.offsets.dtype == np.int32 and windows.offsets.shape == (len(windows), 128, 2)
    assert windows.lengths.dtype == np.int32 and windows.example_index.dtype == np.int64
    assert windows.start_positions.dtype == np.int64 and windows.end_positions.dtype == np.int64
    part = windows.subset([3, 1])
    assert len(part) == 2 and part.input_ids[0].tolist() == windows.input_ids[3].tolist()
    assert part.example_index.tolist() == windows.example_index[[3, 1]].tolist()


def test_cased_wordpiece_from_load_tokenizer_equals_hf(minilm_dir, xquad_examples, tmp_path):
    transformers = pytest.importorskip("transformers")
    from qa_core.tokenization import load_tokenizer

    # A cased WordPiece built from vocab.txt alone (no tokenizer.json): casing changes tokens
    # and offsets ("Panthers" is [UNK] in this lowercase vocabulary), labels must still agree.
    (tmp_path / "vocab.txt").write_text((minilm_dir / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False,
                                                                "tokenizer_class": "BertTokenizer"}))
    tokenizer = load_tokenizer(tmp_path)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), use_fast=True)
    assert reference.tokenize("Paris") == ["[UNK]"]  # the reference is cased too
    subset = xquad_examples[:300]
    windows = build_windows(subset, tokenizer, max_seq_length=128, doc_stride=32)
    assert (windows.input_ids == reference.unk_token_id).any()
    assert_equal_to_hf(windows, reference, subset, 128, 32)
