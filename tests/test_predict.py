"""Answerer and predict CLI: parity with transformers' question-answering pipeline, file
evaluation equal to training's, clear errors on bad input.

The reference is benchmarks/hf_qa_pipeline.py: transformers 5.x removed the "question-answering"
pipeline task, so it rebuilds that pipeline from transformers' own tokenizer, model and span
scorer (`select_starts_ends`); see its docstring."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from qa_core.data import read_examples
from qa_core.modeling import load_model
from qa_core.predict import Answer, Answerer, PredictError, main

transformers = pytest.importorskip("transformers")


def _load_reference():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hf_qa_pipeline.py"
    spec = importlib.util.spec_from_file_location("hf_qa_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PipelineReference


PipelineReference = _load_reference()


# ---------------------------------------------------------------------------------------------- reference

def assert_same_answers(ours: list[Answer], reference: list[dict], where: str) -> None:
    assert len(ours) == len(reference), where
    for rank, (a, r) in enumerate(zip(ours, reference)):
        assert (a.text, a.start, a.end) == (r["answer"], r["start"], r["end"]), f"{where} rank {rank}"
        assert math.isclose(a.probability, r["score"], rel_tol=2e-4, abs_tol=1e-9), f"{where} rank {rank}"


def xquad_pairs(path, articles):
    """(question, context) of the chosen articles, in file order."""
    examples = read_examples(path).examples
    return [(e.question, e.context) for e in examples if e.article in articles]


def long_documents(path, articles, paragraphs_per_doc=5, questions_per_doc=4):
    """Several paragraphs of an article joined into one document, with the questions of the first."""
    examples = read_examples(path).examples
    out = []
    for article in articles:
        mine = [e for e in examples if e.article == article]
        contexts = list(dict.fromkeys(e.context for e in mine))[:paragraphs_per_doc]
        document = "\n\n".join(contexts)
        out += [(e.question, document) for e in mine if e.context == contexts[0]][:questions_per_doc]
    return out


@pytest.fixture(scope="module")
def minilm_export(minilm_dir, tmp_path_factory):
    """The real MiniLM encoder with a seeded random QA head (weights N(0, 0.5): well separated
    logits, so float rounding between implementations cannot reorder spans), saved by us."""
    model = load_model(str(minilm_dir))
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        model.qa_outputs.weight.copy_(torch.randn(model.qa_outputs.weight.shape, generator=generator) * 0.5)
        model.qa_outputs.bias.zero_()
    return model.save_pretrained(tmp_path_factory.mktemp("minilm_qa"), tokenizer_dir=minilm_dir)


# ---------------------------------------------------------------------------------------------- parity

@pytest.mark.parametrize("fixture, seq, stride, articles", [
    ("tiny_bert_dir", 384, 128, range(48)),       # every XQuAD question
    ("tiny_distilbert_dir", 128, 32, range(0, 48, 6)),  # short windows: many questions need several
])
def test_answers_equal_pipeline_on_xquad(request, xquad_path, fixture, seq, stride, articles):
    model_dir = request.getfixturevalue(fixture)
    reference = PipelineReference(model_dir, max_seq_len=seq, doc_stride=stride)
    answerer = Answerer.from_pretrained(model_dir, device="cpu", max_seq_length=seq, doc_stride=stride)
    pairs = xquad_pairs(xquad_path, set(articles))
    ours = answerer.answer_many([q for q, _ in pairs], [c for _, c in pairs], top_k=2)
    expected, n_windows = reference(pairs, top_k=2)
    for i, (answers, reference_answers) in enumerate(zip(ours, expected)):
        assert_same_answers(answers, reference_answers, f"question {i} {pairs[i][0]!r}")
    if seq == 128:
        assert sum(n > 1 for n in n_windows) > len(pairs) // 2  # the cross-window merge is really exercised


def test_minilm_answers_equal_pipeline(minilm_export, xquad_path):
    reference = PipelineReference(minilm_export)
    answerer = Answerer.from_pretrained(minilm_export, device="cpu")
    pairs = xquad_pairs(xquad_path, {0})[:6] + long_documents(xquad_path, [1, 2], questions_per_doc=2)
    expected, n_windows = reference(pairs, top_k=3)
    assert min(n_windows[6:]) >= 3
    ours = answerer.answer_many([q for q, _ in pairs], [c for _, c in pairs], top_k=3)
    for (question, _), answers, reference_answers in zip(pairs, ours, expected):
        assert_same_answers(answers, reference_answers, repr(question))
        # score is the logit sum behind the probability: log p = score - log Z(window) < score
        assert answers[0].score > math.log(answers[0].probability)
    question, context = pairs[-1]
    assert answerer.answer(question, context) == answerer.answer(question, context, top_k=3)[0]


def test_probability_is_start_times_end_softmax_in_its_window(tiny_bert_dir):
    answerer = Answerer.from_pretrained(tiny_bert_dir, device="cpu")
    question, context = "Where is the tram depot?", "The depot of the Velmora tramway stands by the river."
    best = answerer.answer(question, context)
    windows = answerer.windows([read_example(question, context)])
    start, end = answerer.window_logits(windows)
    allowed = windows.offsets[0, : start.shape[1], 0] >= 0
    allowed[0] = True
    s_tok = int(np.flatnonzero(windows.offsets[0, :, 0] == best.start)[0])
    e_tok = int(np.flatnonzero(windows.offsets[0, :, 1] == best.end)[-1])
    p_start = np.exp(start[0, s_tok]) / np.exp(start[0][allowed]).sum()
    p_end = np.exp(end[0, e_tok]) / np.exp(end[0][allowed]).sum()
    assert best.probability == pytest.approx(p_start * p_end, rel=1e-5)
    assert best.score == pytest.approx(start[0, s_tok] + end[0, e_tok], rel=1e-6)
    assert context[best.start:best.end] == best.text


def read_example(question, context):
    from qa_core.predict import _example
    return _example(0, question, context)


def test_null_threshold_prefers_no_answer_only_when_null_score_is_higher(tiny_bert_dir):
    answerer = Answerer.from_pretrained(tiny_bert_dir, device="cpu")
    question, context = "Who runs the trams?", "The city council runs the trams of Velmora since 1902."
    best = answerer.answer(question, context)
    null = answerer.answer(question, context, null_threshold=-1e9)  # any null beats any span
    assert null.is_null and (null.text, null.start, null.end) == ("", -1, -1)
    windows = answerer.windows([read_example(question, context)])
    start, end = answerer.window_logits(windows)
    assert null.score == pytest.approx(float(start[0, 0] + end[0, 0]), rel=1e-6)
    margin = null.score - best.score
    assert answerer.answer(question, context, null_threshold=margin + 1e-3) == best
    assert answerer.answer(question, context, null_threshold=margin - 1e-3).is_null


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_question_prints_answer_score_probability_offsets(tiny_bert_dir, tmp_path, capsys):
    context = "The Velmora tramway opened in 1902 and was run by the city council for forty years. " * 20
    (tmp_path / "doc.txt").write_text(context, encoding="utf-8")
    answerer = Answerer.from_pretrained(tiny_bert_dir, device="cpu")
    expected = answerer.answer("When did it open?", context, top_k=3)
    assert main(["--model", str(tiny_bert_dir), "--question", "When did it open?", "--context-file",
                 str(tmp_path / "doc.txt"), "--top-k", "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, a in zip(lines, expected):
        assert f"{a.text!r}" in line and f"chars [{a.start}, {a.end})" in line
        assert f"score {a.score:.4f}" in line and f"probability {a.probability:.4f}" in line
    assert lines[0].strip().startswith("answer:") and lines[1].strip().startswith("#2:")


def write_squad(path, examples, *, drop_answers_of=()):
    """A SQuAD v1.1-style file of these examples (one article per title)."""
    articles: dict = {}
    for e in examples:
        paragraphs = articles.setdefault(e.title, {})
        qas = paragraphs.setdefault(e.context, [])
        answers = [] if e.id in drop_answers_of else [
            {"text": t, "answer_start": s} for t, s in zip(e.answer_texts, e.answer_starts)]
        qas.append({"id": e.id, "question": e.question, "answers": answers})
    data = [{"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]}
            for t, ps in articles.items()]
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def test_cli_data_prints_training_evaluation_metrics(tiny_distilbert_dir, xquad_path, tmp_path, capsys):
    from qa_core.evaluation import evaluate
    from qa_core.features import build_windows
    from qa_core.tokenization import load_tokenizer

    examples = [e for e in read_examples(xquad_path).examples if e.article in (3, 4)]
    data = write_squad(tmp_path / "dev.json", examples)
    out = tmp_path / "preds.json"
    assert main(["--model", str(tiny_distilbert_dir), "--data", str(data), "--output", str(out),
                 "--device", "cpu", "--no-progress", "--max-seq-length", "128", "--doc-stride", "32"]) == 0
    printed = capsys.readouterr().out

    windows = build_windows(examples, load_tokenizer(str(tiny_distilbert_dir)), max_seq_length=128, doc_stride=32)
    expected = evaluate(load_model(str(tiny_distilbert_dir)), windows, examples, progress=False)
    for key in ("exact", "f1", "token_acc"):
        assert f"{key} {expected[key]:.4f}" in printed
    written = json.loads(out.read_text(encoding="utf-8"))
    assert list(written) == [str(e.id) for e in examples]  # ids kept as given, in file order
    expected_texts = expected["predictions"]
    if not isinstance(expected_texts, dict):
        expected_texts = {p.id: p.text for p in expected_texts}
    assert written == {str(k): v for k, v in expected_texts.items()}


def bad(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_cli_bad_input_gives_one_line_errors(tiny_bert_dir, xquad_path, tmp_path, capsys):
    model = ["--model", str(tiny_bert_dir), "--device", "cpu"]
    missing = tmp_path / "no-such-model"
    assert str(missing) in bad(["--model", str(missing), "--question", "Who?", "--context", "x"], capsys)
    assert "empty" in bad(model + ["--question", "  ", "--context", "Some text."], capsys)
    err = bad(model + ["--question", "Who?", "--context-file", str(tmp_path / "nope.txt")], capsys)
    assert "nope.txt" in err and "not found" in err

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert "no best/" in bad(["--model", str(tmp_path / "run"), "--question", "Who?", "--context", "x"], capsys)

    examples = [e for e in read_examples(xquad_path).examples if e.article == 5][:6]
    data = write_squad(tmp_path / "v2.json", examples, drop_answers_of={examples[2].id})
    err = bad(model + ["--data", str(data)], capsys)
    assert "--version-2" in err and repr(examples[2].id) in err and "v2.json" in err
    assert main(model + ["--data", str(data), "--version-2", "--no-progress"]) == 0


def test_api_rejects_empty_question(tiny_bert_dir):
    answerer = Answerer.from_pretrained(tiny_bert_dir, device="cpu")
    with pytest.raises(PredictError, match="empty question"):
        answerer.answer("", "Some context.")


def test_reference_equals_the_real_pipeline_where_transformers_still_has_it(tiny_bert_dir, xquad_path):
    from transformers.pipelines import REMOVED_TASKS

    if "question-answering" in REMOVED_TASKS:
        pytest.skip(f"transformers {transformers.__version__} removed the question-answering pipeline")
    pipe = transformers.pipeline("question-answering", model=str(tiny_bert_dir), tokenizer=str(tiny_bert_dir))
    pairs = xquad_pairs(xquad_path, {0})[:10]
    expected, _ = PipelineReference(tiny_bert_dir)(pairs, top_k=2)
    for (question, context), reference_answers in zip(pairs, expected):
        real = pipe(question=question, context=context, top_k=2, max_answer_len=30, max_seq_len=384,
                    doc_stride=128, align_to_words=False)
        assert [(a["answer"], a["start"], a["end"]) for a in real] == \
            [(a["answer"], a["start"], a["end"]) for a in reference_answers]
