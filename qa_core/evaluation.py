"""evaluate(): forward every window in inference mode, then loss, token accuracy and EM/F1.

Memory: the only dataset-sized buffers are two float32 [N, longest window] logit arrays,
filled batch by batch (the post-processing needs every window of an example at once).
Batches hold windows of similar length (sorted, longest first), so padding is minimal
and the largest batch runs first.
"""
from __future__ import annotations

import contextlib
import time
from typing import Sequence

import numpy as np
import torch

from qa_core.collate import QACollator
from qa_core.metrics import qa_loss, squad_v1, squad_v2, token_accuracy
from qa_core.postprocess import postprocess_predictions

# Logit written at padding positions: never chosen, and exp() of it is exactly 0.
_PAD_LOGIT = np.finfo(np.float32).min


def evaluate(model, windows, examples: Sequence, *, batch_size: int = 64, device="cpu", autocast_dtype=None,
             n_best: int = 20, max_answer_length: int = 30, version_2: bool = False, null_threshold: float = 0.0,
             collator=None, progress: bool = False, piece_size: int = 0) -> dict:
    """Scores of `model` on `windows` (built from `examples`, all windows kept).

    model(input_ids, attention_mask, token_type_ids=None) -> (start_logits, end_logits), on
    `device` already; its train/eval mode is restored afterwards. autocast_dtype (e.g.
    torch.bfloat16) runs the forward under torch.autocast; logits are kept in float32.
    piece_size > 0 runs each batch's forward in pieces of that many windows (less memory; each
    piece pads to its own longest window, which changes no real logit).

    Returns numbers: loss (qa_loss, mean over windows), start_acc, end_acc, token_acc,
    span_acc (metrics.token_accuracy), exact and f1 (percent; SQuAD v2 adds the HasAns_/NoAns_
    splits and best_* thresholds, with each example's null probability as its na_prob;
    SQuAD v1 data without any gold answer gets no exact/f1), n_windows, n_examples; and
    "predictions" {id: text}, "example_predictions" (postprocess.ExamplePrediction list),
    "timings" {forward_s, postprocess_s, metrics_s, windows_per_s}.
    """
    if len(windows) == 0:
        raise ValueError("no windows to evaluate: build them from the examples with features.build_windows")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    collator = collator or QACollator(windows, use_token_type_ids=model.uses_token_type_ids)

    t0 = time.perf_counter()
    batches = eval_batches(windows.lengths, batch_size)
    start, end = logit_buffers(len(windows), int(np.max(windows.lengths)))
    was_training = model.training
    model.eval()
    try:
        batch_losses = forward_batches(model, batches, collator, start, end, device=device,
                                       autocast_dtype=autocast_dtype, progress=progress, piece_size=piece_size)
    finally:
        model.train(was_training)
    t1 = time.perf_counter()
    result = scores_from_logits(start, end, batch_losses, windows, examples, n_best=n_best,
                                max_answer_length=max_answer_length, version_2=version_2,
                                null_threshold=null_threshold)
    result["timings"].update(forward_s=t1 - t0, windows_per_s=len(windows) / max(t1 - t0, 1e-9))
    return result


def scores_from_logits(start, end, batch_losses: Sequence[float], windows, examples: Sequence, *, n_best: int = 20,
                       max_answer_length: int = 30, version_2: bool = False, null_threshold: float = 0.0) -> dict:
    """evaluate()'s result from the full float32 [N, L] logits and the summed loss of each
    batch (added in order, so a sharded evaluation gets the same float); timings hold
    postprocess_s and metrics_s."""
    t1 = time.perf_counter()
    predictions = postprocess_predictions(start, end, windows, examples, n_best=n_best,
                                          max_answer_length=max_answer_length, version_2=version_2,
                                          null_threshold=null_threshold)
    t2 = time.perf_counter()

    loss_sum = 0.0  # on the host in float64: some devices (MPS) have no float64
    for batch_loss in batch_losses:
        loss_sum += batch_loss
    result = {"loss": loss_sum / len(windows)}
    result.update(token_accuracy(start, end, windows.start_positions, windows.end_positions, windows.lengths))
    texts = {p.id: p.text for p in predictions}
    if version_2:
        na_probs = {p.id: 1.0 if p.null_probability is None else p.null_probability for p in predictions}
        result.update(squad_v2(texts, examples, na_probs))
        del result["total"]
    elif any(e.answer_texts for e in examples):
        scores = squad_v1(texts, examples)
        result.update(exact=scores["exact"], f1=scores["f1"])
    result.update(n_windows=len(windows), n_examples=len(examples))
    t3 = time.perf_counter()
    result["predictions"] = texts
    result["example_predictions"] = predictions
    result["timings"] = {"postprocess_s": t2 - t1, "metrics_s": t3 - t2}
    return result


def eval_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Window indices in batches of similar length, longest first (the largest batch runs first)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def logit_buffers(n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits, float32 [n, width], padding = _PAD_LOGIT."""
    return np.full((n, width), _PAD_LOGIT, np.float32), np.full((n, width), _PAD_LOGIT, np.float32)


def forward_batches(model, batches, collator, start, end, *, rows=None, device="cpu", autocast_dtype=None,
                    progress: bool = False, piece_size: int = 0) -> list[float]:
    """Runs `model` in inference mode on each batch of window indices and writes its float32
    logits into rows of start/end (rows[b] for batch b; default the window indices
    themselves), padding = _PAD_LOGIT. Returns each batch's summed loss. piece_size > 0:
    each batch runs in consecutive pieces of at most that many windows."""
    device = torch.device(device)
    width = start.shape[1]
    rows = batches if rows is None else rows
    pairs = zip(batches, rows)
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, total=len(batches), desc="evaluate", unit="batch", leave=False)
    autocast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    losses = []
    with torch.inference_mode():
        for batch_indices, batch_rows in pairs:
            step = piece_size if piece_size > 0 else max(len(batch_indices), 1)
            batch_loss = 0.0
            for first in range(0, len(batch_indices), step):
                indices, out = batch_indices[first:first + step], batch_rows[first:first + step]
                batch = {k: v.to(device, non_blocking=True) for k, v in collator(indices).items()}
                with autocast:
                    batch_start, batch_end = model(batch["input_ids"], batch["attention_mask"],
                                                   batch.get("token_type_ids"))
                mask = batch["attention_mask"]
                batch_loss += float(qa_loss(batch_start, batch_end, batch["start_positions"],
                                            batch["end_positions"], attention_mask=mask, reduction="sum"))
                used = min(batch_start.shape[1], width)
                real = mask[:, :used].bool()
                start[out, :used] = batch_start[:, :used].float().masked_fill(~real, _PAD_LOGIT).cpu().numpy()
                end[out, :used] = batch_end[:, :used].float().masked_fill(~real, _PAD_LOGIT).cpu().numpy()
            losses.append(batch_loss)
    return losses
