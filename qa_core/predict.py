"""Answer questions with a trained model: the `Answerer` API and `python -m qa_core.predict`.

Load once, answer many:

    answerer = Answerer.from_pretrained("runs/my-run")          # uses runs/my-run/best
    best = answerer.answer("Who built it?", context)              # Answer(text, start, end, score, probability)
    top3 = answerer.answer("Who built it?", context, top_k=3)     # list[Answer], best first
    result = answerer.predict_file("dev.json")                    # {"predictions": {id: text}, "metrics": {...}}

Two numbers come with every answer:
  * `score`: start logit + end logit, the quantity training's evaluation ranks spans by;
  * `probability`: P(start) * P(end), each a softmax over the window's context tokens and its
    CLS token: the definition of the "score" of transformers' question-answering pipeline
    (`select_starts_ends`), so the two can be compared number for number.

`answer()` / `answer_many()` rank like that pipeline: every valid span of every window is a
candidate (no top-20 shortcut), windows are searched separately and their spans merged by
`probability`. On a context that fits one window this is the same ranking as by `score`;
across windows the per-window softmax makes spans of different windows comparable.
`predict_file()` is the evaluation used in training (qa_core.evaluation.evaluate: n-best
search ranked by `score`), so its EM/F1 are exactly the numbers training reports.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from qa_core.collate import QACollator
from qa_core.data import DataError, QAExample, read_examples
from qa_core.features import Windows, build_windows
from qa_core.hub import ModelNotFoundError, resolve_model_dir
from qa_core.modeling import QAModel, load_model
from qa_core.postprocess import postprocess_predictions
from qa_core.tokenization import load_tokenizer

__all__ = ["Answer", "Answerer", "PredictError", "resolve_predict_model_dir", "main"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Windows per post-processing call in the exhaustive search: its L x L grids stay a few MB.
SEARCH_CHUNK = 16


class PredictError(ValueError):
    """Bad input to prediction (model, question, context or data file); the message says the fix."""


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset of the answer in the context; -1 for "no answer"
    end: int  # exclusive; -1 for "no answer"
    score: float  # start logit + end logit (the null score for "no answer")
    probability: float  # P(start) * P(end) within its window (transformers' pipeline "score")
    is_null: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_predict_model_dir(ref: str | os.PathLike) -> Path:
    """A run directory means its best/; anything else resolves as in training (qa_core.hub)."""
    path = Path(ref).expanduser()
    if path.is_dir() and not (path / "config.json").exists():
        if (path / "best" / "config.json").exists():
            return (path / "best").resolve()
        if (path / "summary.json").exists() or (path / "checkpoints").is_dir():
            raise PredictError(f"{path}: this run has no best/ model (it may still be training, or ran with "
                               f"checkpoint.save_best off); export one from a checkpoint with "
                               f"`python -m qa_core.export {path} OUT --checkpoint latest` and pass OUT")
        raise PredictError(f"{path}: not a model directory (no config.json) and not a run directory "
                           f"(no best/config.json)")
    try:
        return resolve_model_dir(ref)
    except ModelNotFoundError as error:
        raise PredictError(str(error).splitlines()[0].rstrip(".") + ". Pass a run directory, a best/ directory, "
                           "a Hub id or pkg:<package>/<subdir>.") from None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PredictError(f"--device {device}: CUDA is not available on this machine; use cpu or auto")
    return torch.device(device)


class Answerer:
    """A model and its tokenizer, loaded once, with the window settings used for every question."""

    def __init__(self, model: QAModel, tokenizer, *, device: str | torch.device = "cpu", precision: str = "fp32",
                 max_seq_length: int = 384, doc_stride: int = 128, max_query_length: int = 64,
                 batch_size: int = 32):
        if precision not in PRECISIONS:
            raise PredictError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if batch_size < 1:
            raise PredictError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.precision = precision
        self.autocast_dtype = PRECISIONS[precision]
        self.window_args = dict(max_seq_length=max_seq_length, doc_stride=doc_stride,
                                max_query_length=max_query_length)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, ref: str | os.PathLike, *, device: str = "auto", precision: str = "fp32",
                        max_seq_length: int = 384, doc_stride: int = 128, max_query_length: int = 64,
                        batch_size: int = 32) -> "Answerer":
        """ref: a run directory (its best/ is used), a best/-style directory, a Hub id or pkg:..."""
        model_dir = resolve_predict_model_dir(ref)
        model = load_model(str(model_dir))
        if model.load_report.fresh:
            warnings.warn(f"{model_dir} has no trained QA head (a base encoder?): it was initialised at random, "
                          f"so the answers are meaningless; pass a fine-tuned run or model", stacklevel=2)
        return cls(model, load_tokenizer(str(model_dir)), device=device, precision=precision,
                   max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length,
                   batch_size=batch_size)

    # ------------------------------------------------------------------ questions

    def answer(self, question: str, context: str, *, top_k: int = 1, max_answer_length: int = 30,
               null_threshold: float | None = None) -> Answer | list[Answer]:
        """The best answer (top_k=1) or a list of up to top_k answers, best first.

        null_threshold=None never answers "no answer". With a number, "no answer" wins when
        null score - best span score > null_threshold (SQuAD v2 rule; the null score is the
        lowest CLS start+end logit over the windows)."""
        answers = self.answer_many([question], [context], top_k=top_k, max_answer_length=max_answer_length,
                                   null_threshold=null_threshold)[0]
        return answers[0] if top_k == 1 else answers

    def answer_many(self, questions: Sequence[str], contexts: Sequence[str], *, top_k: int = 1,
                    max_answer_length: int = 30, null_threshold: float | None = None) -> list[list[Answer]]:
        """Up to top_k answers per (question, context) pair, windows of all pairs batched together."""
        if len(questions) != len(contexts):
            raise PredictError(f"{len(questions)} questions but {len(contexts)} contexts; pass one context per question")
        if top_k < 1 or max_answer_length < 1:
            raise PredictError(f"top_k ({top_k}) and max_answer_length ({max_answer_length}) must be >= 1")
        examples = [_example(i, q, c) for i, (q, c) in enumerate(zip(questions, contexts))]
        windows = self.windows(examples)
        start, end = self.window_logits(windows)
        spans = _per_window_spans(start, end, windows, examples, top_k, max_answer_length)
        results = []
        for i in range(len(examples)):
            mine = np.flatnonzero(windows.example_index == i)
            ranked = sorted((a for w in mine for a in spans[w]), key=lambda a: -a.probability)  # stable: window order
            if null_threshold is not None:
                null = _null_answer(start[mine], end[mine], windows.lengths[mine], windows.offsets[mine])
                if not ranked or null.score - ranked[0].score > null_threshold:
                    ranked.insert(0, null)
            results.append(ranked[:top_k])
        return results

    # ------------------------------------------------------------------ files

    def predict_file(self, path: str | os.PathLike, *, version_2: bool = False, null_threshold: float = 0.0,
                     n_best: int = 20, max_answer_length: int = 30, progress: bool = True) -> dict:
        """{"predictions": {id: answer text}, "metrics": {...} or None}; ids as given in the file.

        Metrics (EM/F1, token accuracy, ...) come from qa_core.evaluation.evaluate, the very
        evaluation training runs; they are None when the file has no gold answers at all."""
        from qa_core.evaluation import evaluate

        try:
            examples = read_examples(path).examples
        except DataError as error:
            raise PredictError(str(error)) from None
        if not examples:
            raise PredictError(f"{path}: no questions found")
        unanswerable = [e for e in examples if e.is_impossible]
        has_gold = len(unanswerable) < len(examples) or version_2
        if not version_2 and unanswerable and has_gold:
            raise PredictError(f"{path}: {len(unanswerable)} of {len(examples)} questions have no answer "
                               f"(first: id {unanswerable[0].id!r}); this is SQuAD v2 data: pass --version-2 "
                               f"(and --null-threshold) to predict 'no answer'")
        windows = self.windows(examples)
        result = evaluate(self.model, windows, examples, batch_size=self.batch_size, device=self.device,
                          autocast_dtype=self.autocast_dtype, n_best=n_best, max_answer_length=max_answer_length,
                          version_2=version_2, null_threshold=null_threshold, progress=progress)
        predictions = _prediction_texts(result["predictions"], examples)
        metrics = {k: v for k, v in result.items() if isinstance(v, (int, float))} if has_gold else None
        return {"predictions": predictions, "metrics": metrics}

    # ------------------------------------------------------------------ model

    def windows(self, examples: Sequence[QAExample]) -> Windows:
        try:
            return build_windows(examples, self.tokenizer, **self.window_args)
        except ValueError as error:  # window settings that cannot work (doc_stride too large, ...)
            raise PredictError(str(error)) from None

    @torch.inference_mode()
    def window_logits(self, windows: Windows) -> tuple[np.ndarray, np.ndarray]:
        """float32 start and end logits [N, longest window]; batches of similar length, no wasted padding."""
        width = int(windows.lengths.max())
        start = np.zeros((len(windows), width), np.float32)
        end = np.zeros((len(windows), width), np.float32)
        collate = QACollator(windows, use_token_type_ids=self.model.uses_token_type_ids)
        order = np.argsort(-windows.lengths, kind="stable")
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo:lo + self.batch_size]
            batch = collate(rows)
            inputs = {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids")
                      if k in batch}
            with autocast:
                batch_start, batch_end = self.model(**inputs)
            used = batch_start.shape[1]
            start[rows, :used] = batch_start.float().cpu().numpy()
            end[rows, :used] = batch_end.float().cpu().numpy()
        return start, end


def _example(index: int, question: str, context: str) -> QAExample:
    if not isinstance(question, str) or not question.strip():
        raise PredictError(f"question {index}: empty question; write the question text")
    if not isinstance(context, str) or not context.strip():
        raise PredictError(f"question {index}: empty context; give the text to search for the answer")
    return QAExample(id=index, title="", context=context, question=question, answer_texts=(), answer_starts=(),
                     is_impossible=True, article=0, paragraph=0)


def _window_log_normalisers(logits: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """log-sum-exp of each window's logits over its context tokens and CLS: the pipeline's softmax support."""
    width = logits.shape[1]
    allowed = (offsets[:, :width, 0] >= 0) & (np.arange(width) < lengths[:, None])
    allowed[:, 0] = True
    masked = np.where(allowed, logits.astype(np.float64), -np.inf)
    top = masked.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(masked - top).sum(axis=1, keepdims=True)))[:, 0]


def _per_window_spans(start, end, windows: Windows, examples, top_k, max_answer_length) -> list[list[Answer]]:
    """Each window's top_k spans over all valid (start, end) pairs.

    postprocess_predictions does the search, each window posing as its own example; with
    n_best >= the window width its top-k step keeps every position, so no span is missed."""
    width = start.shape[1]
    log_z = _window_log_normalisers(start, windows.lengths, windows.offsets) + \
        _window_log_normalisers(end, windows.lengths, windows.offsets)
    spans: list[list[Answer]] = []
    for lo in range(0, len(windows), SEARCH_CHUNK):
        rows = np.arange(lo, min(lo + SEARCH_CHUNK, len(windows)))
        alone = replace(windows.subset(rows), example_index=np.arange(len(rows), dtype=np.int64))
        owners = [examples[int(i)] for i in windows.example_index[rows]]
        found = postprocess_predictions(start[rows], end[rows], alone, owners, n_best=max(width, top_k),
                                        max_answer_length=max_answer_length)
        for row, prediction in zip(rows, found):
            if prediction.is_null:  # no valid span in this window
                spans.append([])
                continue
            candidates = prediction.n_best[:top_k] if top_k > 1 else [prediction]
            spans.append([Answer(text=c.text, start=c.start_char, end=c.end_char, score=float(c.score),
                                 probability=float(np.exp(c.score - log_z[row])))
                          for c in candidates])
    return spans


def _null_answer(start, end, lengths, offsets) -> Answer:
    """'No answer': the lowest CLS score over the windows; probability as the pipeline's min_null_score."""
    null_logits = start[:, 0].astype(np.float64) + end[:, 0]
    log_z = _window_log_normalisers(start, lengths, offsets) + _window_log_normalisers(end, lengths, offsets)
    return Answer(text="", start=-1, end=-1, score=float(null_logits.min()),
                  probability=float(np.exp(null_logits - log_z).min()), is_null=True)


def _prediction_texts(predictions, examples) -> dict:
    """evaluate()'s predictions (a dict id -> text, or ExamplePrediction objects) as {id: text}."""
    if isinstance(predictions, dict):
        return {e.id: predictions[e.id] for e in examples}
    return {p.id: p.text for p in predictions}


# ---------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qa_core.predict", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="run directory (uses best/), model directory, Hub id or pkg:<package>/<subdir>")
    parser.add_argument("--question", help="the question to answer")
    context = parser.add_mutually_exclusive_group()
    context.add_argument("--context", help="the text to find the answer in")
    context.add_argument("--context-file", help="read the context from this UTF-8 text file")
    parser.add_argument("--top-k", type=int, default=1, help="print this many alternatives")
    parser.add_argument("--data", help="SQuAD JSON/JSONL file: predict every question")
    parser.add_argument("--output", help="with --data: write predictions JSON {id: answer} here")
    parser.add_argument("--version-2", action="store_true", help="SQuAD v2: allow 'no answer'")
    parser.add_argument("--null-threshold", type=float, default=None,
                        help="'no answer' when null score - best span score exceeds this (default 0.0 with "
                             "--version-2; with --question it enables 'no answer')")
    parser.add_argument("--max-answer-length", type=int, default=30, help="longest answer in tokens")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--max-query-length", type=int, default=64)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar for --data")
    return parser


def _check_arguments(args) -> None:
    if (args.data is None) == (args.question is None):
        raise PredictError("pass either --question (with --context or --context-file) or --data FILE")
    if args.question is not None:
        if not args.question.strip():
            raise PredictError("--question is empty; write the question text")
        if args.context is None and args.context_file is None:
            raise PredictError("--question needs --context TEXT or --context-file FILE")
    if args.data is not None and not Path(args.data).is_file() and "://" not in args.data:
        raise PredictError(f"--data {args.data}: file not found")
    if args.null_threshold is not None and args.data is not None and not args.version_2:
        raise PredictError("--null-threshold applies to SQuAD v2 data: add --version-2")


def _read_context(args) -> str:
    if args.context is not None:
        return args.context
    path = Path(args.context_file)
    if not path.is_file():
        raise PredictError(f"--context-file {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PredictError(f"--context-file {path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not text.strip():
        raise PredictError(f"--context-file {path}: the file is empty")
    return text


def _print_answers(answers: list[Answer]) -> None:
    for rank, a in enumerate(answers, 1):
        label = "answer" if rank == 1 else f"#{rank}"
        text = "(no answer)" if a.is_null else repr(a.text)
        where = "" if a.is_null else f"  chars [{a.start}, {a.end})"
        print(f"{label:>7}: {text}  score {a.score:.4f}  probability {a.probability:.4f}{where}")


def _print_metrics(metrics: dict) -> None:
    shown = {k: v for k, v in metrics.items() if k in ("exact", "f1", "token_acc") or k.startswith(("has_ans", "no_ans"))}
    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))


def run(args) -> int:
    _check_arguments(args)
    context = _read_context(args) if args.question is not None else None
    answerer = Answerer.from_pretrained(args.model, device=args.device, precision=args.precision,
                                        max_seq_length=args.max_seq_length, doc_stride=args.doc_stride,
                                        max_query_length=args.max_query_length, batch_size=args.batch_size)
    if args.question is not None:
        answers = answerer.answer(args.question, context, top_k=args.top_k,
                                  max_answer_length=args.max_answer_length, null_threshold=args.null_threshold)
        _print_answers(answers if isinstance(answers, list) else [answers])
        return 0
    threshold = 0.0 if args.null_threshold is None else args.null_threshold
    result = answerer.predict_file(args.data, version_2=args.version_2, null_threshold=threshold,
                                   max_answer_length=args.max_answer_length, progress=not args.no_progress)
    predictions = result["predictions"]
    print(f"{len(predictions)} questions answered")
    if result["metrics"] is not None:
        _print_metrics(result["metrics"])
    if args.output:
        # JSON object keys are strings; integer ids keep their digits.
        Path(args.output).write_text(json.dumps({str(k): v for k, v in predictions.items()}, ensure_ascii=False,
                                                indent=1) + "\n", encoding="utf-8")
        print(f"predictions written to {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (PredictError, DataError, ModelNotFoundError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
