"""Examples -> sliding windows of token ids with character offsets and span labels (numpy arrays).

Window semantics match Hugging Face's run_qa.py (`truncation="only_second"`, `stride=doc_stride`,
`return_overflowing_tokens=True`): each window holds `[specials] question [specials] context-slice
[specials]`; a window has room for `max_seq_length - len(question) - n_specials` context tokens and
consecutive windows overlap by `doc_stride` tokens. Labels are the token indices of the first gold
answer when it lies wholly inside the window, else 0 (the CLS token).

Each distinct context is tokenized once (a paragraph usually carries several questions), questions
and contexts in `encode_batch` calls without special tokens; windows are then cut here and the
special tokens placed according to the tokenizer's own post-processor, probed once, so any
`tokenizers.Tokenizer` whose template starts with a special token (BERT, DistilBERT, cased or
uncased WordPiece, RoBERTa-style templates) works.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from qa_core.data import QAExample

# Bump when the window layout or labelling changes, so old caches are never read.
CACHE_FORMAT_VERSION = 1
PAD_TOKEN_CANDIDATES = ("[PAD]", "<pad>", "<PAD>")


@dataclass
class Windows:
    input_ids: np.ndarray        # int32 [N, L], pad_token_id after lengths[i]
    token_type_ids: np.ndarray   # int8 [N, L]
    lengths: np.ndarray          # int32 [N]
    offsets: np.ndarray          # int32 [N, L, 2], (-1, -1) outside the context
    example_index: np.ndarray    # int64 [N]
    start_positions: np.ndarray  # int64 [N], 0 = CLS
    end_positions: np.ndarray    # int64 [N]
    pad_token_id: int

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def subset(self, indices) -> "Windows":
        indices = np.asarray(indices, dtype=np.int64)
        arrays = {f.name: getattr(self, f.name)[indices] for f in fields(self) if f.name != "pad_token_id"}
        return Windows(**arrays, pad_token_id=self.pad_token_id)


@dataclass(frozen=True)
class _Template:
    """Where the tokenizer's post-processor puts special tokens around (question, context)."""
    prefix_ids: np.ndarray
    prefix_types: np.ndarray
    middle_ids: np.ndarray
    middle_types: np.ndarray
    suffix_ids: np.ndarray
    suffix_types: np.ndarray
    question_type: int
    context_type: int

    @property
    def n_special(self) -> int:
        return len(self.prefix_ids) + len(self.middle_ids) + len(self.suffix_ids)


def _working_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer with truncation and padding off (we cut windows ourselves); a copy if needed."""
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _pad_token_id(tokenizer: Tokenizer) -> int:
    if tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    for token in PAD_TOKEN_CANDIDATES:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has no padding token ([PAD] or <pad>); add one to tokenizer.json")


def _probe_template(tokenizer: Tokenizer) -> _Template:
    encoding = tokenizer.encode("a", "b", add_special_tokens=True)
    ids = np.asarray(encoding.ids, dtype=np.int32)
    types = np.asarray(encoding.type_ids, dtype=np.int8)
    sequence = np.asarray([-1 if s is None else s for s in encoding.sequence_ids])
    first_q, last_q = np.flatnonzero(sequence == 0)[[0, -1]]
    first_c, last_c = np.flatnonzero(sequence == 1)[[0, -1]]
    if first_q == 0:
        raise ValueError("the tokenizer's template does not start with a special (CLS) token; "
                         "span labels use index 0 for 'no answer' and need one there")
    return _Template(prefix_ids=ids[:first_q], prefix_types=types[:first_q],
                     middle_ids=ids[last_q + 1:first_c], middle_types=types[last_q + 1:first_c],
                     suffix_ids=ids[last_c + 1:], suffix_types=types[last_c + 1:],
                     question_type=int(types[first_q]), context_type=int(types[first_c]))


def _window_starts(n_context: int, room: int, doc_stride: int) -> np.ndarray:
    """Start token of each window: 0, room-stride, ... until a window reaches the end."""
    if n_context <= room:
        return np.zeros(1, dtype=np.int64)
    step = room - doc_stride
    count = 1 + -(-(n_context - room) // step)
    return np.arange(count, dtype=np.int64) * step


def _span_label(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
    """(first, last) token of the answer among these context tokens, None unless wholly inside.

    Start = the last token starting at or before start_char; end = the first token, scanning
    back from the window end, whose predecessor ends before end_char (run_qa.py's two loops)."""
    if len(offsets) == 0 or offsets[0, 0] > start_char or offsets[-1, 1] < end_char:
        return None
    after = np.flatnonzero(offsets[:, 0] > start_char)
    first = (after[0] if after.size else len(offsets)) - 1
    before = np.flatnonzero(offsets[:, 1] < end_char)
    last = (before[-1] if before.size else -1) + 1
    return int(first), int(last)


def _cache_key(examples: Sequence[QAExample], tokenizer: Tokenizer, params: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT_VERSION, **params}, sort_keys=True).encode())
    digest.update(tokenizer.to_str().encode())
    for e in examples:
        record = [repr(e.id), e.context, e.question, list(e.answer_texts), list(e.answer_starts), e.is_impossible]
        digest.update(json.dumps(record, ensure_ascii=False).encode())
    return digest.hexdigest()


def _save(windows: Windows, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a crashed run never leaves a half-written cache behind.
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(handle)
    arrays = {f.name: getattr(windows, f.name) for f in fields(windows)}
    arrays["pad_token_id"] = np.asarray(windows.pad_token_id)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load(path: Path) -> Windows:
    with np.load(path) as data:
        arrays = {f.name: data[f.name] for f in fields(Windows) if f.name != "pad_token_id"}
        return Windows(**arrays, pad_token_id=int(data["pad_token_id"]))


def build_windows(examples: Sequence[QAExample], tokenizer: Tokenizer, *, max_seq_length: int = 384,
                  doc_stride: int = 128, max_query_length: int = 64, negative_keep_fraction: float = 1.0,
                  seed: int = 0, cache_dir: str | Path | None = None) -> Windows:
    """Tokenize examples into windows. negative_keep_fraction < 1 keeps every window that holds
    the answer, one window of each example that has none, and that fraction of the rest
    (seeded): for training on long documents; evaluation needs all windows."""
    if not 0.0 <= negative_keep_fraction <= 1.0:
        raise ValueError(f"negative_keep_fraction must be in [0, 1], got {negative_keep_fraction}")
    tokenizer = _working_tokenizer(tokenizer)
    template = _probe_template(tokenizer)
    min_room = max_seq_length - template.n_special - max_query_length
    if doc_stride < 0 or min_room <= doc_stride:
        raise ValueError(f"doc_stride ({doc_stride}) must be below the context room of a window "
                         f"(max_seq_length {max_seq_length} - max_query_length {max_query_length} - "
                         f"{template.n_special} special tokens = {min_room}); lower doc_stride or "
                         "max_query_length, or raise max_seq_length")
    params = dict(max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length,
                  negative_keep_fraction=negative_keep_fraction, seed=seed)
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"windows-{_cache_key(examples, tokenizer, params)[:40]}.npz"
        if cache_path.exists():
            return _load(cache_path)
    windows = _tokenize_into_windows(examples, tokenizer, template, max_seq_length, doc_stride, max_query_length)
    if negative_keep_fraction < 1.0:
        windows = windows.subset(_keep_negatives(windows, negative_keep_fraction, seed))
    if cache_path is not None:
        _save(windows, cache_path)
    return windows


def _tokenize_into_windows(examples: Sequence[QAExample], tokenizer: Tokenizer, template: _Template,
                           max_seq_length: int, doc_stride: int, max_query_length: int) -> Windows:
    questions = tokenizer.encode_batch([e.question.lstrip() for e in examples], add_special_tokens=False)
    context_index: dict[str, int] = {}
    for e in examples:
        context_index.setdefault(e.context, len(context_index))
    contexts = tokenizer.encode_batch(list(context_index), add_special_tokens=False)
    context_ids = [np.asarray(c.ids, dtype=np.int32) for c in contexts]
    context_offsets = [np.asarray(c.offsets, dtype=np.int32).reshape(-1, 2) for c in contexts]
    question_ids = [np.asarray(q.ids[:max_query_length], dtype=np.int32) for q in questions]
    which_context = [context_index[e.context] for e in examples]

    prefix, middle, suffix = len(template.prefix_ids), len(template.middle_ids), len(template.suffix_ids)
    rooms = [max_seq_length - template.n_special - len(q) for q in question_ids]
    starts = [_window_starts(len(context_ids[c]), room, doc_stride) for c, room in zip(which_context, rooms)]
    total = sum(len(s) for s in starts)

    pad_id = _pad_token_id(tokenizer)
    input_ids = np.full((total, max_seq_length), pad_id, dtype=np.int32)
    token_type_ids = np.zeros((total, max_seq_length), dtype=np.int8)
    offsets = np.full((total, max_seq_length, 2), -1, dtype=np.int32)
    lengths = np.zeros(total, dtype=np.int32)
    example_index = np.zeros(total, dtype=np.int64)
    start_positions = np.zeros(total, dtype=np.int64)
    end_positions = np.zeros(total, dtype=np.int64)

    row = 0
    for i, example in enumerate(examples):
        q = question_ids[i]
        c_ids, c_offsets = context_ids[which_context[i]], context_offsets[which_context[i]]
        context_at = prefix + len(q) + middle  # position of the first context token in every window
        has_answer = not example.is_impossible and example.answer_texts
        if has_answer:
            start_char = example.answer_starts[0]
            end_char = start_char + len(example.answer_texts[0])
        for window_start in starts[i]:
            piece = slice(window_start, window_start + rooms[i])
            ids, offs = c_ids[piece], c_offsets[piece]
            end = context_at + len(ids)
            length = end + suffix
            input_ids[row, :prefix] = template.prefix_ids
            input_ids[row, prefix:prefix + len(q)] = q
            input_ids[row, prefix + len(q):context_at] = template.middle_ids
            input_ids[row, context_at:end] = ids
            input_ids[row, end:length] = template.suffix_ids
            token_type_ids[row, :prefix] = template.prefix_types
            token_type_ids[row, prefix:prefix + len(q)] = template.question_type
            token_type_ids[row, prefix + len(q):context_at] = template.middle_types
            token_type_ids[row, context_at:end] = template.context_type
            token_type_ids[row, end:length] = template.suffix_types
            offsets[row, context_at:end] = offs
            lengths[row] = length
            example_index[row] = i
            if has_answer:
                span = _span_label(offs, start_char, end_char)
                if span is not None:
                    start_positions[row] = context_at + span[0]
                    end_positions[row] = context_at + span[1]
            row += 1
    return Windows(input_ids=input_ids, token_type_ids=token_type_ids, lengths=lengths, offsets=offsets,
                   example_index=example_index, start_positions=start_positions, end_positions=end_positions,
                   pad_token_id=pad_id)


def _keep_negatives(windows: Windows, fraction: float, seed: int) -> np.ndarray:
    """Indices to keep: answer windows, one window per answer-less example, `fraction` of the rest."""
    positive = windows.start_positions > 0
    draws = np.random.default_rng(seed).random(len(windows))
    keep = positive | (draws < fraction)
    # An example with no answer window keeps its lowest-draw window, so no question vanishes.
    examples_with_answer = np.unique(windows.example_index[positive])
    orphan = ~np.isin(windows.example_index, examples_with_answer)
    if orphan.any():
        order = np.lexsort((draws[orphan], windows.example_index[orphan]))
        orphan_rows = np.flatnonzero(orphan)[order]
        first_of_each = np.r_[True, np.diff(windows.example_index[orphan_rows]) != 0]
        keep[orphan_rows[first_of_each]] = True
    return np.flatnonzero(keep)
