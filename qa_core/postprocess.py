"""From the start/end logits of every window to each example's answer span, vectorised.

The result is exactly what the classic n-best double loop (run_qa.py) gives: for every
window, its top-`n_best` start and top-`n_best` end positions (among the window's real
tokens, `lengths[i]` of them) are paired; a pair is a candidate when both tokens belong
to the context (offsets not (-1, -1)), end >= start and end - start + 1 <=
`max_answer_length`; its score is start_logit + end_logit (float32). An example's
candidates from all its windows are ranked and the first `n_best` kept. Candidates are
not de-duplicated: the same text found in two overlapping windows appears twice, as in
run_qa.py.

How, without a Python loop over windows or token pairs:
1. top-k start and end positions of all windows at once (argpartition; rows with a tie
   at the k-th value are redone with unique integer keys);
2. the k x k grid of pairs of all windows by broadcasting, invalid pairs masked;
3. each window's best `n_best` pairs, then one stable sort groups them by example.

Tie-breaking is total and deterministic:
- top-k positions of a window: higher logit first, then lower position;
- candidates: higher score first, then earlier window (lower index in `windows`), then
  earlier start token, then earlier end token (the shorter span);
- the SQuAD v2 null candidate ranks after spans with an equal score.

SQuAD v2: the null score of an example is the minimum over its windows of
start_logits[w, 0] + end_logits[w, 0] (the CLS token; on ties the earliest window). The
null candidate joins the ranking (if it is not among the first `n_best` it is appended,
as in run_qa.py) and probabilities are a softmax over the whole list, so
`null_probability` is a real probability. The prediction is "no answer" when
`null_score - best_span_score > null_threshold` (scores as float64 from the float32
values); with no valid span at all the prediction is "no answer" too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple, Sequence

import numpy as np

# Windows per block of the vectorised search (see _best_spans_per_window).
WINDOW_BLOCK = 512


class SpanCandidate(NamedTuple):
    text: str
    start_char: int  # -1 for the null candidate
    end_char: int  # exclusive; -1 for the null candidate
    score: float  # start_logit + end_logit (the null score for the null candidate)
    probability: float  # softmax over the example's n-best list (null included in v2)
    window: int  # index of the window in `windows` it came from
    is_null: bool = False


@dataclass(eq=False)
class ExamplePrediction:
    """The answer to one example; the span fields describe the chosen answer.

    When the answer is "no answer" (`is_null`), text is "", start_char = end_char = -1,
    and score/probability are the null's (v2) or -inf/0.0 (no valid span in v1).
    `null_score`, `null_probability`, `null_score_diff` (null_score - best span score)
    are None outside SQuAD v2 and for an example without windows.
    """

    id: Any
    text: str
    start_char: int
    end_char: int
    score: float
    probability: float
    is_null: bool
    null_score: float | None = None
    null_probability: float | None = None
    null_score_diff: float | None = None
    _n_best_table: Any = field(default=None, repr=False)
    _n_best_slice: tuple[int, int] = field(default=(0, 0), repr=False)

    @cached_property
    def n_best(self) -> list[SpanCandidate]:
        # Built on first access: most callers only need the answer, and building
        # ~200k small objects would cost more than the whole vectorised search.
        if self._n_best_table is None:
            return []
        return self._n_best_table.candidates(*self._n_best_slice)


@dataclass(eq=False)
class _NBestTable:
    """Every example's n-best list, concatenated in ranked order (one array row per candidate)."""

    contexts: list[str]
    example: np.ndarray
    start_char: np.ndarray
    end_char: np.ndarray
    score: np.ndarray  # float32
    probability: np.ndarray
    window: np.ndarray
    is_null: np.ndarray
    begin: np.ndarray  # [n_examples] first row of each example's list
    size: np.ndarray  # [n_examples] its length
    top: np.ndarray  # [n_examples] its softmax's max score
    norm: np.ndarray  # [n_examples] and normaliser

    @cached_property
    def _columns(self) -> tuple[list, ...]:
        # Python lists once for the whole table: slicing them per example is cheap.
        return (self.example.tolist(), self.start_char.tolist(), self.end_char.tolist(), self.score.tolist(),
                self.probability.tolist(), self.window.tolist(), self.is_null.tolist())

    def candidates(self, lo: int, hi: int) -> list[SpanCandidate]:
        if hi <= lo:
            return []
        example, *columns = self._columns
        context = self.contexts[example[lo]]  # a slice holds one example's rows
        return [SpanCandidate("" if null else context[s:e], s, e, score, prob, window, null)
                for s, e, score, prob, window, null in zip(*(column[lo:hi] for column in columns))]


def postprocess_predictions(start_logits, end_logits, windows, examples: Sequence, *, n_best: int = 20,
                            max_answer_length: int = 30, version_2: bool = False,
                            null_threshold: float = 0.0) -> list[ExamplePrediction]:
    """One `ExamplePrediction` per example (in the order of `examples`).

    start_logits, end_logits: float `[N, W]` (numpy or torch) aligned with `windows`
    (anything with `offsets [N, L, 2]`, `lengths [N]`, `example_index [N]`), W <= L and
    at least every window's length. Positions >= lengths[i] are never chosen, whatever
    their logits. An example without windows gets an empty prediction.
    """
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(f"n_best ({n_best}) and max_answer_length ({max_answer_length}) must be >= 1")
    start, end, offsets, lengths, example_index = _checked_inputs(start_logits, end_logits, windows, len(examples))
    n_examples = len(examples)
    n_windows, width = start.shape

    # Work on costs (negated logits; lower is better) with +inf on padding: partitioning
    # at k - 1 stays fast over runs of +inf, and negation is exact, so every score is
    # recovered bit for bit as -(cost_start + cost_end).
    padding = np.arange(width) >= lengths[:, None]
    start_cost, end_cost = np.negative(start), np.negative(end)
    np.copyto(start_cost, np.float32(np.inf), where=padding)
    np.copyto(end_cost, np.float32(np.inf), where=padding)

    span = _best_spans_per_window(start_cost, end_cost, offsets, n_best, max_answer_length)
    span = _rank_by_example(span, example_index, n_examples, n_best)

    if version_2:
        null_score, null_window, has_null = _null_per_example(start_cost, end_cost, example_index, n_examples)
    else:
        null_score = np.zeros(n_examples, np.float32)
        null_window = np.full(n_examples, -1, np.int64)
        has_null = np.zeros(n_examples, bool)
    table = _n_best_table(span, null_score, null_window, has_null, offsets, n_examples, n_best,
                          [ex.context for ex in examples])
    return _example_predictions(table, examples, span, offsets, null_score, has_null, version_2, null_threshold)


def _checked_inputs(start_logits, end_logits, windows, n_examples):
    start = _as_float32(start_logits, "start_logits")
    end = _as_float32(end_logits, "end_logits")
    offsets = np.asarray(windows.offsets)
    lengths = np.asarray(windows.lengths).astype(np.int64)
    example_index = np.asarray(windows.example_index).astype(np.int64)
    n_windows = len(lengths)
    if start.shape != end.shape or start.ndim != 2 or start.shape[0] != n_windows:
        raise ValueError(f"start_logits {start.shape} and end_logits {end.shape} must both be "
                         f"[n_windows={n_windows}, seq_len]; pass the logits of exactly these windows")
    width = start.shape[1]
    if offsets.shape[:1] != (n_windows,) or offsets.ndim != 3 or offsets.shape[2] != 2 or offsets.shape[1] < width:
        raise ValueError(f"windows.offsets has shape {offsets.shape}; expected [{n_windows}, >= {width}, 2]")
    if n_windows and (lengths.min() < 1 or lengths.max() > width):
        raise ValueError(f"windows.lengths must lie in [1, {width}] (the logits' width); got "
                         f"[{lengths.min()}, {lengths.max()}]: logits must cover every window's real tokens")
    if n_windows and (example_index.min() < 0 or example_index.max() >= n_examples):
        raise ValueError(f"windows.example_index reaches {example_index.max()} but {n_examples} examples were "
                         f"given: pass the examples the windows were built from")
    for name, logits in (("start_logits", start), ("end_logits", end)):
        # NaN and +inf break the ranking (-inf is harmless: never chosen, like padding).
        bad = ~(logits < np.inf) & (np.arange(width) < lengths[:, None])
        if bad.any():
            w, pos = map(int, np.argwhere(bad)[0])
            raise ValueError(f"{name} is {logits[w, pos]} at window {w}, position {pos}: check the model's "
                             f"output (overflow under float16 autocast?)")
    return start, end, offsets[:, :width], lengths, example_index


def _as_float32(logits, name) -> np.ndarray:
    if hasattr(logits, "detach"):  # a torch tensor, on any device, in any float dtype
        logits = logits.detach().float().cpu().numpy()
    array = np.asarray(logits)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _ascending_key(values: np.ndarray) -> np.ndarray:
    """int32 keys in the ascending order of float32 values (no NaN); -0.0 and +0.0 share one."""
    bits = (values + np.float32(0)).view(np.int32)  # + 0 turns -0.0 into +0.0
    return bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))


def _top_k(costs: np.ndarray, k: int, tie_order) -> np.ndarray:
    """Column indices of each row's k lowest costs, ties to the lower tie order.

    costs: float32 [R, C], no NaN; +inf marks entries that are never valid.
    tie_order(rows) -> int64 [len(rows), C] or [C], unique within a row.
    A float argpartition does the work; only rows with a tie at the k-th cost (rare for
    real logits) are redone with exact integer keys.
    """
    n_cols = costs.shape[1]
    if k >= n_cols:
        return np.broadcast_to(np.arange(n_cols), costs.shape).copy()
    chosen = np.argpartition(costs, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(costs, chosen, 1).max(axis=1)
    # Ties among +inf entries do not matter: those are never valid.
    crowded = np.flatnonzero((kth < np.inf) & (np.count_nonzero(costs <= kth[:, None], axis=1) > k))
    if len(crowded):
        keys = (_ascending_key(costs[crowded]).astype(np.int64) << 32) | tie_order(crowded)
        chosen[crowded] = np.argpartition(keys, k - 1, axis=1)[:, :k]
    return chosen


@dataclass
class _Spans:
    """Candidate spans as flat arrays (one row each)."""

    window: np.ndarray
    start: np.ndarray  # token positions
    end: np.ndarray
    score: np.ndarray  # float32
    example: np.ndarray | None = None
    rank: np.ndarray | None = None  # 0 = best of its example


def _best_spans_per_window(start_cost, end_cost, offsets, n_best, max_answer_length) -> _Spans:
    # Blocks of windows keep the [block, k, k] temporaries in cache (faster than
    # one pass over all windows); the loop runs over blocks, never over tokens.
    parts = [_best_spans_in_block(start_cost[lo:lo + WINDOW_BLOCK], end_cost[lo:lo + WINDOW_BLOCK],
                                  offsets[lo:lo + WINDOW_BLOCK], n_best, max_answer_length, lo)
             for lo in range(0, len(start_cost), WINDOW_BLOCK)]
    if not parts:
        empty = np.zeros(0, np.int64)
        return _Spans(window=empty, start=empty, end=empty, score=np.zeros(0, np.float32))
    return _Spans(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("window", "start", "end", "score")))


def _best_spans_in_block(start_cost, end_cost, offsets, n_best, max_answer_length, first_window) -> _Spans:
    n_windows, width = start_cost.shape
    k = min(n_best, width)
    positions = np.arange(width, dtype=np.int64)
    # int32 positions halve the memory traffic of the [N, k, k] grid below.
    top_start = _top_k(start_cost, k, lambda rows: positions).astype(np.int32)
    top_end = _top_k(end_cost, k, lambda rows: positions).astype(np.int32)
    rows = np.arange(n_windows)[:, None]
    # As unsigned, a negative length (end before start) is huge: one comparison checks both.
    span_len = (top_end[:, None, :] - top_start[:, :, None]).view(np.uint32)
    invalid = ((span_len >= max_answer_length) | (offsets[rows, top_start, 0] < 0)[:, :, None]
               | (offsets[rows, top_end, 0] < 0)[:, None, :])
    cost = start_cost[rows, top_start][:, :, None] + end_cost[rows, top_end][:, None, :]  # [N, k, k]
    # Pairs with a padding token already cost +inf (finite costs elsewhere): +inf = invalid.
    np.copyto(cost, np.float32(np.inf), where=invalid)
    cost = cost.reshape(n_windows, k * k)

    def pair_order(rows):  # start token, then end token
        return (top_start[rows, :, None].astype(np.int64) * width + top_end[rows, None, :]).reshape(len(rows), k * k)

    chosen = _top_k(cost, min(n_best, k * k), pair_order)
    chosen_cost = cost[rows, chosen]
    start_slot, end_slot = np.divmod(chosen, k)
    start_pos = top_start[rows, start_slot].astype(np.int64)
    end_pos = top_end[rows, end_slot].astype(np.int64)
    # Sorted inside each window, so the stable sort by example later keeps this order on ties.
    keys = (_ascending_key(chosen_cost).astype(np.int64) << 32) | (start_pos * width + end_pos)
    within = np.argsort(keys, axis=1)
    chosen_cost = chosen_cost[rows, within]
    keep = chosen_cost != np.inf
    window = np.broadcast_to(rows + first_window, chosen.shape)[keep]
    return _Spans(window=window, start=start_pos[rows, within][keep], end=end_pos[rows, within][keep],
                  score=-chosen_cost[keep])


def _rank_by_example(span: _Spans, example_index, n_examples, n_best) -> _Spans:
    example = example_index[span.window]
    # (example, score descending) in one int64; the stable sort keeps window/start/end order on ties.
    primary = (example << 32) | (_ascending_key(-span.score).astype(np.int64) + (1 << 31))
    order = np.argsort(primary, kind="stable")
    example = example[order]
    counts = np.bincount(example, minlength=n_examples)
    rank = np.arange(len(example)) - (np.cumsum(counts) - counts)[example]
    top = rank < n_best
    return _Spans(window=span.window[order][top], start=span.start[order][top], end=span.end[order][top],
                  score=span.score[order][top], example=example[top], rank=rank[top])


def _null_per_example(start_cost, end_cost, example_index, n_examples):
    null = -(start_cost[:, 0] + end_cost[:, 0])
    order = np.lexsort((np.arange(len(null)), null, example_index))
    first = np.ones(len(order), bool)
    sorted_example = example_index[order]
    first[1:] = sorted_example[1:] != sorted_example[:-1]
    null_score = np.zeros(n_examples, np.float32)
    null_window = np.full(n_examples, -1, np.int64)
    has_null = np.zeros(n_examples, bool)
    null_score[sorted_example[first]] = null[order[first]]
    null_window[sorted_example[first]] = order[first]
    has_null[sorted_example[first]] = True
    return null_score, null_window, has_null


def _n_best_table(span: _Spans, null_score, null_window, has_null, offsets, n_examples, n_best, contexts):
    # Spans scoring >= the null rank before it; when the null lands inside the first
    # n_best it pushes the last span out, otherwise it is appended (as run_qa.py does).
    ahead = np.bincount(span.example, weights=span.score >= null_score[span.example], minlength=n_examples)
    null_pos = np.where(has_null, ahead, 0).astype(np.int64)
    span_limit = np.where(has_null & (null_pos < n_best), n_best - 1, n_best)
    keep = span.rank < span_limit[span.example]
    example, rank = span.example[keep], span.rank[keep]
    window, start_tok, end_tok, score = span.window[keep], span.start[keep], span.end[keep], span.score[keep]

    size = np.bincount(example, minlength=n_examples) + has_null
    begin = np.cumsum(size) - size
    total = int(size.sum())
    row = begin[example] + rank + (has_null[example] & (rank >= null_pos[example]))
    null_rows = (begin + null_pos)[has_null]

    t_example = np.empty(total, np.int64)
    t_start = np.empty(total, np.int64)
    t_end = np.empty(total, np.int64)
    t_score = np.empty(total, np.float32)
    t_window = np.empty(total, np.int64)
    t_null = np.zeros(total, bool)
    t_example[row], t_start[row], t_end[row] = example, offsets[window, start_tok, 0], offsets[window, end_tok, 1]
    t_score[row], t_window[row] = score, window
    null_examples = np.flatnonzero(has_null)
    t_example[null_rows], t_start[null_rows], t_end[null_rows] = null_examples, -1, -1
    t_score[null_rows], t_window[null_rows], t_null[null_rows] = null_score[has_null], null_window[has_null], True

    # Softmax per example; each list is sorted, so its first row holds the maximum.
    scores64 = t_score.astype(np.float64)
    top = np.zeros(n_examples)
    top[size > 0] = scores64[begin[size > 0]]
    exp = np.exp(scores64 - top[t_example])
    norm = np.bincount(t_example, weights=exp, minlength=n_examples)
    return _NBestTable(contexts, t_example, t_start, t_end, t_score, exp / norm[t_example], t_window, t_null,
                       begin, size, top, norm)


def _example_predictions(table: _NBestTable, examples, span, offsets, null_score, has_null, version_2,
                         null_threshold):
    n_examples = len(examples)
    # The best span comes from the ranking itself, not the n-best list: with n_best = 1
    # the null may take the list's only place.
    first = span.rank == 0
    has_span = np.zeros(n_examples, bool)
    has_span[span.example[first]] = True
    best_score = np.full(n_examples, -np.inf)
    best_score[span.example[first]] = span.score[first]
    best_window, best_start, best_end = (np.zeros(n_examples, np.int64) for _ in range(3))
    best_window[span.example[first]] = span.window[first]
    best_start[span.example[first]] = span.start[first]
    best_end[span.example[first]] = span.end[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        best_prob = np.where(has_span, np.exp(best_score - table.top) / table.norm, 0.0)
    null64 = null_score.astype(np.float64)
    null_diff = null64 - best_score
    if version_2:
        is_null = ~has_span | (null_diff > null_threshold)
        null_prob = np.zeros(n_examples)
        null_rows = np.flatnonzero(table.is_null)
        null_prob[table.example[null_rows]] = table.probability[null_rows]
    else:
        is_null = ~has_span

    starts = offsets[best_window, best_start, 0].tolist()
    ends = offsets[best_window, best_end, 1].tolist()
    begin, size = table.begin.tolist(), table.size.tolist()
    is_null_l, has_null_l = is_null.tolist(), has_null.tolist()
    best_score_l, best_prob_l = best_score.tolist(), best_prob.tolist()
    null_l, null_diff_l = null64.tolist(), null_diff.tolist()
    null_prob_l = null_prob.tolist() if version_2 else None

    predictions = []
    for i, example in enumerate(examples):
        v2_fields = {}
        if version_2 and has_null_l[i]:
            v2_fields = dict(null_score=null_l[i], null_probability=null_prob_l[i], null_score_diff=null_diff_l[i])
        if not is_null_l[i]:
            s, e = starts[i], ends[i]
            text, score, prob = example.context[s:e], best_score_l[i], best_prob_l[i]
        elif version_2 and has_null_l[i]:
            text, s, e, score, prob = "", -1, -1, null_l[i], null_prob_l[i]
        else:
            text, s, e, score, prob = "", -1, -1, float("-inf"), 0.0
        predictions.append(ExamplePrediction(example.id, text, s, e, score, prob, is_null_l[i], **v2_fields,
                                             _n_best_table=table, _n_best_slice=(begin[i], begin[i] + size[i])))
    return predictions
