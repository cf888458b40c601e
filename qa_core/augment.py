"""Span-preserving noise for training examples, re-drawn every epoch.

Question noise: word dropout, adjacent word swaps, and replacement by a paraphrase from a
user-supplied file (`load_paraphrases`). Context noise: word dropout and sentence dropout,
only outside the answer spans; every answer's character offset is recomputed exactly and the
answer text is never altered. Unanswerable examples get context noise anywhere.

Each lever is its own probability (0 = off). Draws come from
`np.random.default_rng((seed, epoch, lever))`: the same seed and epoch give the same
augmentation, another epoch gives another one, and turning one lever on or off does not
change what the others draw.

    examples = augment_examples(train_examples, seed=cfg.train.seed, epoch=epoch,
                                question_word_dropout=0.1, context_sentence_dropout=0.2)
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from qa_core.data import QAExample

# One independent random stream per lever (the third element of the generator's seed).
_LEVER_QUESTION_PARAPHRASE = 1
_LEVER_QUESTION_DROPOUT = 2
_LEVER_QUESTION_SWAP = 3
_LEVER_CONTEXT_SENTENCE = 4
_LEVER_CONTEXT_WORD = 5

_WORD = re.compile(r"\S+")
# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+")


class ParaphraseError(ValueError):
    """A bad paraphrase file: names the file, the line and the fix."""

    def __init__(self, path: Path, line: int | None, problem: str, fix: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}. Fix: {fix}")


# ---------------------------------------------------------------------------------------------
# Paraphrase files


def load_paraphrases(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Alternative questions per example id (ids as strings).

    `.tsv`: one `id<TAB>alternative question` per line (an id may repeat); blank lines and
    lines starting with `#` are skipped. `.jsonl`: one `{"id": ..., "questions": [...]}`
    per line."""
    path = Path(path)
    if not path.exists():
        raise ParaphraseError(path, None, "file not found", "check augment.paraphrase_file")
    suffix = path.suffix.lower()
    if suffix not in (".tsv", ".jsonl"):
        raise ParaphraseError(path, None, f"unknown paraphrase file type {suffix or '(none)'!r}",
                              "use a .tsv file (id<TAB>question per line) or a .jsonl file "
                              '({"id": ..., "questions": [...]} per line)')
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ParaphraseError(path, None, f"not UTF-8 text ({err})", "save the file as UTF-8") from None
    parse_line = _parse_tsv_line if suffix == ".tsv" else _parse_jsonl_line
    found: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        example_id, questions = parse_line(line, path, number)
        found.setdefault(example_id, []).extend(questions)
    if not found:
        raise ParaphraseError(path, None, "no paraphrases in the file", "add one line per alternative question")
    return {k: tuple(v) for k, v in found.items()}


def _parse_tsv_line(line: str, path: Path, number: int) -> tuple[str, list[str]]:
    if "\t" not in line:
        raise ParaphraseError(path, number, "no tab between the id and the question",
                              "write `id<TAB>alternative question`")
    example_id, question = line.split("\t", 1)
    if not example_id.strip():
        raise ParaphraseError(path, number, "empty id", "put the example's id before the tab")
    if not question.strip():
        raise ParaphraseError(path, number, f"empty question for id {example_id.strip()!r}",
                              "put the alternative question after the tab, or delete the line")
    return example_id.strip(), [question.strip()]


def _parse_jsonl_line(line: str, path: Path, number: int) -> tuple[str, list[str]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ParaphraseError(path, number, f"invalid JSON ({err.msg} at column {err.colno})",
                              'write one object per line: {"id": "...", "questions": ["..."]}') from None
    if not isinstance(record, dict) or "id" not in record or "questions" not in record:
        raise ParaphraseError(path, number, "expected an object with 'id' and 'questions'",
                              'write {"id": "...", "questions": ["..."]}')
    example_id, questions = record["id"], record["questions"]
    if not isinstance(example_id, (str, int)) or isinstance(example_id, bool) or not str(example_id).strip():
        raise ParaphraseError(path, number, f"'id' must be a non-empty string or integer, got {example_id!r}",
                              "use the example's id from the training data")
    if (not isinstance(questions, list) or not questions
            or not all(isinstance(q, str) and q.strip() for q in questions)):
        raise ParaphraseError(path, number, f"'questions' for id {example_id!r} must be a non-empty list of "
                              "non-empty strings", 'write "questions": ["first alternative", "second"]')
    return str(example_id).strip(), [q.strip() for q in questions]


def unmatched_paraphrase_ids(paraphrases: Mapping[str, Sequence[str]], examples: Sequence[QAExample]) -> list[str]:
    """Ids in the paraphrase file that no example has (usually a sign of the wrong file)."""
    known = {str(e.id) for e in examples}
    return sorted(k for k in paraphrases if k not in known)


# ---------------------------------------------------------------------------------------------
# Augmentation


def augment_examples(examples: Sequence[QAExample], *, seed: int, epoch: int,
                     question_word_dropout: float = 0.0, question_swap: float = 0.0,
                     paraphrase_prob: float = 0.0, paraphrases: Mapping[str, Sequence[str]] | None = None,
                     context_word_dropout: float = 0.0,
                     context_sentence_dropout: float = 0.0) -> list[QAExample]:
    """A noisy copy of `examples`, same length and order (ids unchanged), for one epoch.

    question_word_dropout: each question word is dropped with this probability (at least one
        word always stays).
    question_swap: each adjacent pair of question words is swapped with this probability
        (pairs do not overlap, left to right).
    paraphrase_prob: each example whose id has paraphrases gets one of them, uniformly, with this
        probability (before the word-level question noise).
    context_word_dropout: each context word that does not touch an answer span is dropped with
        this probability, with the whitespace after it.
    context_sentence_dropout: each sentence that holds no part of an answer is dropped with this
        probability.
    Examples nothing happened to are returned as the same objects."""
    for name, p in (("question_word_dropout", question_word_dropout), ("question_swap", question_swap),
                    ("paraphrase_prob", paraphrase_prob), ("context_word_dropout", context_word_dropout),
                    ("context_sentence_dropout", context_sentence_dropout)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} = {p!r}: a probability must be in [0, 1]")
    if paraphrase_prob > 0 and paraphrases is None:
        raise ValueError("paraphrase_prob > 0 needs paraphrases (load them with load_paraphrases(path))")

    def rng(lever: int) -> np.random.Generator:
        return np.random.default_rng((seed, epoch, lever))

    questions = [e.question for e in examples]
    if paraphrase_prob > 0:
        questions = _paraphrase(examples, questions, paraphrases, paraphrase_prob, rng(_LEVER_QUESTION_PARAPHRASE))
    if question_word_dropout > 0 or question_swap > 0:
        questions = _question_noise(questions, question_word_dropout, question_swap,
                                    rng(_LEVER_QUESTION_DROPOUT), rng(_LEVER_QUESTION_SWAP))

    contexts: list[tuple[str, tuple[int, ...]] | None] = [None] * len(examples)
    if context_word_dropout > 0 or context_sentence_dropout > 0:
        sentence_rng, word_rng = rng(_LEVER_CONTEXT_SENTENCE), rng(_LEVER_CONTEXT_WORD)
        spans_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i, example in enumerate(examples):
            contexts[i] = _context_noise(example, context_word_dropout, context_sentence_dropout,
                                         sentence_rng, word_rng, spans_cache)

    out = []
    for example, question, context in zip(examples, questions, contexts):
        changes = {}
        if question != example.question:
            changes["question"] = question
        if context is not None and context[0] != example.context:
            changes["context"], changes["answer_starts"] = context
        out.append(dataclasses.replace(example, **changes) if changes else example)
    return out


def _paraphrase(examples, questions, paraphrases, p, rng) -> list[str]:
    draws = rng.random((len(examples), 2))  # [apply?, which alternative]
    out = list(questions)
    for i, example in enumerate(examples):
        alternatives = paraphrases.get(str(example.id))
        if alternatives and draws[i, 0] < p:
            out[i] = alternatives[int(draws[i, 1] * len(alternatives))]
    return out


def _question_noise(questions: list[str], drop_p: float, swap_p: float,
                    drop_rng: np.random.Generator, swap_rng: np.random.Generator) -> list[str]:
    words = [q.split() for q in questions]
    counts = np.array([len(w) for w in words])
    bounds = np.concatenate([[0], np.cumsum(counts)])
    # One draw per word for the whole batch, sliced per question.
    drop = drop_rng.random(bounds[-1]) < drop_p if drop_p > 0 else np.zeros(bounds[-1], bool)
    rescue = drop_rng.random(len(words))  # which word survives when all were drawn for dropping
    swap = swap_rng.random(bounds[-1]) < swap_p if swap_p > 0 else np.zeros(bounds[-1], bool)
    out = []
    for i, (question, ws) in enumerate(zip(questions, words)):
        if not ws:
            out.append(question)
            continue
        dropped = drop[bounds[i]:bounds[i + 1]]
        if dropped.all():
            dropped = dropped.copy()
            dropped[int(rescue[i] * len(ws))] = False
        kept = [w for w, d in zip(ws, dropped) if not d]
        swaps = swap[bounds[i]:bounds[i] + len(kept) - 1]
        j = 0
        while j < len(kept) - 1:
            if swaps[j]:
                kept[j], kept[j + 1] = kept[j + 1], kept[j]
                j += 2
            else:
                j += 1
        changed = dropped.any() or swaps.any()
        out.append(" ".join(kept) if changed else question)
    return out


def _word_and_sentence_spans(context: str, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Removal ranges [start, end) of words (with the whitespace after them) and of sentences."""
    if context in cache:
        return cache[context]
    word_starts = np.fromiter((m.start() for m in _WORD.finditer(context)), dtype=np.int64)
    words = np.stack([word_starts, np.append(word_starts[1:], len(context))], axis=1) if len(word_starts) \
        else np.zeros((0, 2), np.int64)
    ends = [m.end() for m in _SENTENCE_END.finditer(context) if m.end() < len(context)]
    sentence_starts = np.array([0] + ends, dtype=np.int64)
    sentences = np.stack([sentence_starts, np.append(sentence_starts[1:], len(context))], axis=1)
    cache[context] = (words, sentences)
    return words, sentences


def _touches(ranges: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Which ranges [a, b) overlap any answer span [s, e)."""
    if len(spans) == 0 or len(ranges) == 0:
        return np.zeros(len(ranges), bool)
    return ((ranges[:, None, 0] < spans[None, :, 1]) & (spans[None, :, 0] < ranges[:, None, 1])).any(axis=1)


def _context_noise(example: QAExample, word_p: float, sentence_p: float, sentence_rng: np.random.Generator,
                   word_rng: np.random.Generator, cache: dict) -> tuple[str, tuple[int, ...]]:
    context = example.context
    words, sentences = _word_and_sentence_spans(context, cache)
    starts = np.asarray(example.answer_starts, dtype=np.int64)
    spans = np.stack([starts, starts + np.array([len(t) for t in example.answer_texts], dtype=np.int64)], axis=1) \
        if len(starts) else np.zeros((0, 2), np.int64)
    # Always draw the same number of values per example so later examples' draws do not
    # depend on what happened to earlier ones.
    sentence_draws, sentence_rescue = sentence_rng.random(len(sentences)), sentence_rng.random()
    word_draws, word_rescue = word_rng.random(len(words)), word_rng.random()

    drop_sentence = (sentence_draws < sentence_p) & ~_touches(sentences, spans)
    if drop_sentence.all():  # only possible without answers: keep one sentence
        drop_sentence[int(sentence_rescue * len(sentences))] = False
    removed = [sentences[drop_sentence]]
    if word_p > 0 and len(words):
        kept_sentence_of_word = ~drop_sentence[np.searchsorted(sentences[:, 0], words[:, 0], side="right") - 1]
        drop_word = (word_draws < word_p) & ~_touches(words, spans) & kept_sentence_of_word
        if len(spans) == 0 and kept_sentence_of_word.any() and not (kept_sentence_of_word & ~drop_word).any():
            survivors = np.flatnonzero(kept_sentence_of_word)
            drop_word[survivors[int(word_rescue * len(survivors))]] = False  # keep one word
        removed.append(words[drop_word])
    removed = np.concatenate(removed)
    if len(removed) == 0:
        return context, example.answer_starts

    # Mark removed characters via +1/-1 boundaries, then cut them out in one pass.
    delta = np.zeros(len(context) + 1, np.int64)
    np.add.at(delta, removed[:, 0], 1)
    np.add.at(delta, removed[:, 1], -1)
    is_removed = np.cumsum(delta[:-1]) > 0
    chars = np.frombuffer(context.encode("utf-32-le"), dtype=np.uint32)
    new_context = chars[~is_removed].tobytes().decode("utf-32-le")
    removed_before = np.concatenate([[0], np.cumsum(is_removed)])
    new_starts = tuple(int(s - removed_before[s]) for s in starts)
    return new_context, new_starts
