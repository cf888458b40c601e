"""transformers' question-answering pipeline, rebuilt from transformers' own parts.

transformers 5.x removed the "question-answering" pipeline task (it is listed in
transformers.pipelines.REMOVED_TASKS), but still ships the function that pipeline scored spans
with, `select_starts_ends` (now in pipelines/document_question_answering.py). `PipelineReference`
does what the pipeline did, with transformers' code wherever it exists:
  * windows: the fast tokenizer with truncation="only_second", stride=doc_stride,
    return_overflowing_tokens, return_offsets_mapping (the pipeline's preprocess);
  * p_mask: 1 outside the context, CLS kept unmasked (as the pipeline built it);
  * AutoModelForQuestionAnswering on padded batches of windows (the pipeline's batch_size);
  * `select_starts_ends` per window: softmax of start and end logits over the context tokens
    and CLS, every span with end >= start and length <= max_answer_len scored P(start) * P(end),
    top_k of the window;
  * spans of all windows sorted by that score, top_k kept (the pipeline's postprocess).
Character offsets are token offsets (the pipeline's align_to_words=False). One difference
in cost, not in results: all questions are tokenized in one batched call.

Used by tests/test_predict.py (parity) and benchmarks/predict_speed.py (the baseline).
"""
from __future__ import annotations

import numpy as np
import torch
import transformers
from transformers.pipelines.document_question_answering import select_starts_ends


class PipelineReference:
    """transformers' QA pipeline, rebuilt from transformers' own tokenizer, model and scorer."""

    def __init__(self, model_dir, *, max_seq_len=384, doc_stride=128, max_answer_len=30):
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
        self.model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval()
        self.max_seq_len, self.doc_stride, self.max_answer_len = max_seq_len, doc_stride, max_answer_len

    @torch.no_grad()
    def __call__(self, pairs: list[tuple[str, str]], top_k: int = 1, batch_size: int = 32) -> tuple[list[list[dict]], list[int]]:
        """Answers and window count per (question, context); windows run in padded batches,
        as the pipeline did with its batch_size (padding masked by the attention mask)."""
        enc = self.tokenizer([q for q, _ in pairs], [c for _, c in pairs], truncation="only_second",
                             max_length=self.max_seq_len, stride=self.doc_stride, return_overflowing_tokens=True,
                             return_offsets_mapping=True, return_token_type_ids=True)
        owner = enc["overflow_to_sample_mapping"]
        use_types = self.model.config.model_type != "distilbert"
        logits = []
        for lo in range(0, len(owner), batch_size):
            batch = self.tokenizer.pad({k: enc[k][lo:lo + batch_size] for k in ("input_ids", "token_type_ids",
                                                                       "attention_mask")}, return_tensors="pt")
            if not use_types:
                del batch["token_type_ids"]
            out = self.model(**batch)
            logits += list(zip(out.start_logits.numpy(), out.end_logits.numpy()))
        answers = [[] for _ in pairs]
        min_null_score = [1000000] * len(pairs)
        for w, i in enumerate(owner):
            ids = np.asarray(enc["input_ids"][w])
            # p_mask as the pipeline built it: 1 outside the context, CLS kept unmasked.
            p_mask = np.asarray([s != 1 for s in enc.sequence_ids(w)])
            p_mask[ids == self.tokenizer.cls_token_id] = False
            start, end = (x[None, :len(ids)] for x in logits[w])
            starts, ends, scores, min_null_score[i] = select_starts_ends(
                start, end, p_mask[None].astype(np.int64), np.ones((1, len(ids)), np.int64), min_null_score[i],
                top_k, False, self.max_answer_len)
            context, offsets = pairs[i][1], enc["offset_mapping"][w]
            for s, e, score in zip(starts, ends, scores):
                first, last = offsets[s][0], offsets[e][1]
                answers[i].append({"score": float(score), "start": first, "end": last, "answer": context[first:last]})
        ranked = [sorted(a, key=lambda a: a["score"], reverse=True)[:top_k] for a in answers]
        return ranked, np.bincount(owner, minlength=len(pairs)).tolist()
