"""Scores: SQuAD v1.1 / v2.0 exact match and F1, token accuracy, and the span loss.

EM/F1 follow the official evaluation scripts (v1.1 and v2.0) exactly: answers are
lower-cased, ASCII punctuation (`string.punctuation`) removed, the English articles
a/an/the removed as whole words, whitespace collapsed; a prediction scores the maximum
over its gold answers; results are percentages.

`qa_loss` is the one definition of the training loss; training and evaluation both
call it, so "loss" means the same number everywhere.
"""
from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


# ---------------------------------------------------------------------------------------- EM / F1

def normalize_answer(text: str) -> str:
    """The official SQuAD normalization: lower, drop punctuation, drop articles, collapse spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold_answers: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals a normalized gold answer, else 0.0."""
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(gold) for gold in gold_answers))


def f1(prediction: str, gold_answers: Sequence[str], *, version_2: bool = False) -> float:
    """Token-overlap F1 (bag of normalized words), max over gold answers.

    The scripts differ only on empty token lists: v1.1 scores them 0; v2.0 scores 1 when
    both prediction and gold are empty (a correct "no answer"), else 0."""
    predicted = normalize_answer(prediction).split()
    return max((_f1_tokens(predicted, normalize_answer(gold).split(), version_2) for gold in gold_answers),
               default=0.0)


def _f1_tokens(predicted: list[str], gold: list[str], version_2: bool) -> float:
    if version_2 and (not predicted or not gold):
        return float(predicted == gold)
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_v1(predictions: Mapping[Any, str], examples: Sequence) -> dict:
    """{"exact", "f1", "total"} as the official v1.1 script: percentages over all examples.

    A question without a prediction scores 0 (with a warning), as in the official script.
    Questions without any answer are SQuAD v2 data: use `squad_v2`."""
    _check_unique_ids(examples)
    exact = total_f1 = 0.0
    missing = []
    for example in examples:
        if not example.answer_texts:
            raise ValueError(f"question {example.id!r} has no gold answer: SQuAD v1.1 scoring needs one for "
                             f"every question; score SQuAD v2 data with squad_v2 (version_2=True)")
        if example.id not in predictions:
            missing.append(example.id)
            continue
        exact += exact_match(predictions[example.id], example.answer_texts)
        total_f1 += f1(predictions[example.id], example.answer_texts)
    if missing:
        warnings.warn(f"{len(missing)} questions have no prediction (first: {missing[0]!r}); they score 0",
                      stacklevel=2)
    total = len(examples)
    return {"exact": 100.0 * exact / total if total else 0.0, "f1": 100.0 * total_f1 / total if total else 0.0,
            "total": total}


def squad_v2(predictions: Mapping[Any, str], examples: Sequence, na_probs: Mapping[Any, float] | None = None,
             *, na_prob_thresh: float = 1.0) -> dict:
    """The official v2.0 script's numbers: exact, f1, total, HasAns_/NoAns_ splits (each only
    when such questions exist) and the best-threshold search best_exact(_thresh), best_f1(_thresh).

    predictions: id -> text, "" meaning "no answer"; every question needs one.
    na_probs: id -> probability of "no answer" (default 0.0 for all, as the script). A
    prediction is overruled to "no answer" when its na_prob > na_prob_thresh. The best
    threshold search sorts questions by na_prob (ties keep the order of `examples`) and
    reports the best score reachable by answering only questions up to a threshold.
    """
    _check_unique_ids(examples)
    missing = [e.id for e in examples if e.id not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction (first: {missing[0]!r}): SQuAD v2 "
                         f"scoring needs one for every question (\"\" for no answer)")
    if na_probs is None:
        na_probs = {e.id: 0.0 for e in examples}
    has_ans = {e.id: bool(e.answer_texts) for e in examples}
    exact_raw, f1_raw = {}, {}
    for example in examples:
        # Gold answers that normalize to nothing count as "no answer", as in the script.
        gold = [a for a in example.answer_texts if normalize_answer(a)] or [""]
        exact_raw[example.id] = exact_match(predictions[example.id], gold)
        f1_raw[example.id] = f1(predictions[example.id], gold, version_2=True)

    def thresholded(raw):
        return {qid: float(not has_ans[qid]) if na_probs[qid] > na_prob_thresh else score
                for qid, score in raw.items()}

    exact_scores, f1_scores = thresholded(exact_raw), thresholded(f1_raw)
    ids = [e.id for e in examples]
    result = _percentages(exact_scores, f1_scores, ids)
    for prefix, subset in (("HasAns", [i for i in ids if has_ans[i]]), ("NoAns", [i for i in ids if not has_ans[i]])):
        if subset:
            result.update({f"{prefix}_{k}": v for k, v in _percentages(exact_scores, f1_scores, subset).items()})
    for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
        best, thresh = _best_threshold(predictions, raw, na_probs, has_ans, ids)
        result[f"best_{name}"], result[f"best_{name}_thresh"] = best, thresh
    return result


def _percentages(exact_scores, f1_scores, ids) -> dict:
    total = len(ids)
    return {"exact": 100.0 * sum(exact_scores[i] for i in ids) / total if total else 0.0,
            "f1": 100.0 * sum(f1_scores[i] for i in ids) / total if total else 0.0,
            "total": total}


def _best_threshold(predictions, raw_scores, na_probs, has_ans, ids) -> tuple[float, float]:
    # Start from "no answer" everywhere, then answer questions in order of rising na_prob.
    score = best = float(sum(not has_ans[i] for i in ids))
    best_thresh = 0.0
    for qid in sorted(ids, key=lambda i: na_probs[i]):
        if has_ans[qid]:
            score += raw_scores[qid]
        elif predictions[qid]:
            score -= 1
        if score > best:
            best, best_thresh = score, float(na_probs[qid])
    return (100.0 * best / len(ids) if ids else 0.0), best_thresh


def _check_unique_ids(examples) -> None:
    seen = set()
    for example in examples:
        if example.id in seen:
            raise ValueError(f"question id {example.id!r} occurs twice: SQuAD scoring matches predictions "
                             f"by id; give every question its own id")
        seen.add(example.id)


# ------------------------------------------------------------------------------ token level

def qa_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
            end_positions: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
            label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """The span loss: per window (CE(start) + CE(end)) / 2, computed in float32.

    Unlike Hugging Face's heads, padding positions (attention_mask == 0) are excluded from
    the softmax, so the loss of a window does not depend on how much padding its batch has
    (dynamic and fixed padding give the same loss). Label smoothing spreads its mass over
    the real tokens only. reduction: "mean" over windows, "sum", or "none" ([batch]).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    start_loss = _cross_entropy(start_logits, start_positions, attention_mask, label_smoothing)
    end_loss = _cross_entropy(end_logits, end_positions, attention_mask, label_smoothing)
    per_window = (start_loss + end_loss) / 2
    if reduction == "none":
        return per_window
    return per_window.sum() if reduction == "sum" else per_window.mean()


def _cross_entropy(logits, targets, attention_mask, label_smoothing):
    logits = logits.float()
    real = None
    if attention_mask is not None:
        real = attention_mask.bool()
        # A finite large negative: exp() of it is exactly 0, and no inf - inf NaNs can appear.
        logits = logits.masked_fill(~real, torch.finfo(torch.float32).min)
    log_probs = F.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    if not label_smoothing:
        return nll
    if real is None:
        uniform = -log_probs.mean(dim=-1)
    else:
        uniform = -torch.where(real, log_probs, 0.0).sum(dim=-1) / real.sum(dim=-1)
    return (1 - label_smoothing) * nll + label_smoothing * uniform


def span_loss(start_logits, end_logits, start_positions, end_positions, lengths) -> float:
    """`qa_loss` (mean over windows) from numpy or torch arrays, padding given by `lengths`."""
    start, end = _as_tensor(start_logits), _as_tensor(end_logits)
    mask = torch.arange(start.shape[1]) < _as_tensor(lengths).long()[:, None]
    return float(qa_loss(start, end, _as_tensor(start_positions), _as_tensor(end_positions), attention_mask=mask))


def token_accuracy(start_logits, end_logits, start_positions, end_positions, lengths) -> dict:
    """Token-level accuracy over windows (the "training / validation accuracy" of the recipe).

    For each window the predicted start is the argmax of its start logits over its real
    tokens (positions < lengths[i], CLS included; the first on ties), likewise the end.
    - start_acc: fraction of windows whose predicted start equals start_positions;
    - end_acc: the same for ends;
    - token_acc: (start_acc + end_acc) / 2;
    - span_acc: fraction of windows with both right.
    Windows without an answer have label 0 (CLS) and count like any other. Fractions in [0, 1].
    """
    start, end = _as_numpy(start_logits), _as_numpy(end_logits)
    lengths = _as_numpy(lengths).astype(np.int64)
    padding = np.arange(start.shape[1]) >= lengths[:, None]
    start_ok = np.where(padding, -np.inf, start).argmax(axis=1) == _as_numpy(start_positions)
    end_ok = np.where(padding, -np.inf, end).argmax(axis=1) == _as_numpy(end_positions)
    n = max(len(lengths), 1)
    start_acc, end_acc = start_ok.sum() / n, end_ok.sum() / n
    return {"start_acc": float(start_acc), "end_acc": float(end_acc), "token_acc": float((start_acc + end_acc) / 2),
            "span_acc": float((start_ok & end_ok).sum() / n)}


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        # numpy has no bfloat16
        return (array.float() if array.is_floating_point() else array).numpy()
    return np.asarray(array)


def _as_tensor(array) -> torch.Tensor:
    return array.detach().cpu() if isinstance(array, torch.Tensor) else torch.from_numpy(np.asarray(array))
