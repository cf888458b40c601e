"""Readers, validation and repair, skip counts, article splits and the validate CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qa_core import data
from qa_core.data import DataError, QAExample, read_examples, select_articles, split_by_article

CONTEXT = "Paris is the capital of France. Paris has many museums."


def squad(*qas, context=CONTEXT, title="France", extra_articles=()):
    return {"version": "v2.0", "data": [{"title": title, "paragraphs": [{"context": context, "qas": list(qas)}]},
                                         *extra_articles]}


def qa(qid="q1", question="What is the capital of France?", answers=None, **fields):
    answers = [{"text": "Paris", "answer_start": 0}] if answers is None else answers
    return {"id": qid, "question": question, "answers": answers, **fields}


def write_json(tmp_path, document, name="train.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(tmp_path, records, name="train.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n",
                    encoding="utf-8")
    return path


def flat(qid="q1", context=CONTEXT, question="What is the capital?", texts=("Paris",), starts=(0,), title="France"):
    return {"id": qid, "title": title, "context": context, "question": question,
            "answers": {"text": list(texts), "answer_start": list(starts)}}


# ---------------------------------------------------------------------------------------------
# Reading


def test_reads_xquad_with_counts_and_ids_as_given(xquad_path):
    examples, stats = read_examples(xquad_path)
    raw = json.loads(xquad_path.read_text(encoding="utf-8"))["data"]
    assert (stats.articles, stats.paragraphs, stats.questions) == (48, 240, 1190)
    assert stats.unanswerable == 0 and stats.repaired == 0 and stats.bad == {}
    first = raw[0]["paragraphs"][0]["qas"][0]
    assert examples[0].id == first["id"] and examples[0].title == raw[0]["title"]
    assert examples[0].answer_texts == tuple(a["text"] for a in first["answers"])
    assert examples[-1].article == 47 and examples[-1].paragraph == len(raw[47]["paragraphs"]) - 1
    for e in examples:
        for text, start in zip(e.answer_texts, e.answer_starts):
            assert e.context[start:start + len(text)] == text


def test_squad_v2_unanswerable_questions(tmp_path):
    path = write_json(tmp_path, squad(
        qa("q1"),
        qa("q2", answers=[], is_impossible=True, plausible_answers=[{"text": "Paris", "answer_start": 0}]),
        qa("q3", answers=[]),  # no flag: empty answers mean unanswerable
    ))
    examples, stats = read_examples(path)
    assert [e.is_impossible for e in examples] == [False, True, True]
    assert examples[1].answer_texts == () and examples[1].answer_starts == ()
    assert stats.unanswerable == 2 and stats.questions == 3


def test_jsonl_datasets_export_with_integer_ids_and_article_grouping(tmp_path):
    other = "Berlin is the capital of Germany."
    path = write_jsonl(tmp_path, [
        flat(qid=7),
        flat(qid=8, starts=(32,)),
        flat(qid=9, context=other, texts=("Berlin",), title="Germany"),
        flat(qid=10, context=other + " It is big.", texts=("Berlin",), title="Germany"),
        {**flat(qid=11, texts=(), starts=())},
    ])
    examples, stats = read_examples(path)
    assert [e.id for e in examples] == [7, 8, 9, 10, 11]
    assert all(isinstance(e.id, int) for e in examples)
    assert [(e.article, e.paragraph) for e in examples] == [(0, 0), (0, 0), (1, 0), (1, 1), (0, 0)]
    assert examples[1].answer_starts == (32,) and examples[4].is_impossible
    assert (stats.articles, stats.paragraphs, stats.questions, stats.unanswerable) == (2, 3, 5, 1)


def test_jsonl_under_a_json_name_is_detected(tmp_path):
    path = write_jsonl(tmp_path, [flat(qid="a"), flat(qid="b")], name="export.json")
    assert [e.id for e in read_examples(path).examples] == ["a", "b"]


def test_untitled_jsonl_groups_articles_by_context(tmp_path):
    path = write_jsonl(tmp_path, [flat(qid="a", title=None), flat(qid="b", title=None),
                                  flat(qid="c", title=None, context="Rome is old.", texts=("Rome",))])
    assert [e.article for e in read_examples(path).examples] == [0, 0, 1]


def test_hub_urls_download_through_huggingface_hub(tmp_path, monkeypatch):
    local = write_jsonl(tmp_path, [flat()])
    calls = []

    def fake_download(repo_id, filename, *, repo_type, revision):
        calls.append((repo_id, filename, repo_type, revision))
        return str(local)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    examples, _ = read_examples("hf://datasets/acme/manuals@v2/splits/train.jsonl")
    assert calls == [("acme/manuals", "splits/train.jsonl", "dataset", "v2")]
    assert examples[0].answer_texts == ("Paris",)
    read_examples("hf://datasets/squad/train.jsonl")
    assert calls[-1] == ("squad", "train.jsonl", "dataset", None)
    with pytest.raises(DataError, match=r"hf://models/x/y: not a Hub dataset file URL\. Fix: write it as "
                                        r"hf://datasets/<owner>/<name>/<path/to/file.json>"):
        read_examples("hf://models/x/y")


# ---------------------------------------------------------------------------------------------
# Repairs


def test_answer_start_drift_is_repaired_and_counted(tmp_path):
    path = write_json(tmp_path, squad(
        qa("q1", answers=[{"text": "capital", "answer_start": 10}]),   # true start 13
        qa("q2", answers=[{"text": " France ", "answer_start": 23}]),  # whitespace around, start at the space
        qa("q3", answers=[{"text": "museums", "answer_start": 47}]),   # exact
    ))
    examples, stats = read_examples(path)
    assert examples[0].answer_starts == (13,) and examples[0].answer_texts == ("capital",)
    assert examples[1].answer_texts == ("France",) and examples[1].answer_starts == (24,)
    assert examples[2].answer_starts == (47,)
    assert stats.repaired == 2


def test_nearest_of_two_occurrences_wins_but_a_tie_is_an_error(tmp_path):
    # "Paris" at 0 and 32: a start of 30 is nearest to 32.
    examples, stats = read_examples(write_json(tmp_path, squad(qa(answers=[{"text": "Paris", "answer_start": 30}]))))
    assert examples[0].answer_starts == (32,) and stats.repaired == 1
    context = "ab xx ab"  # "ab" at 0 and 6, a start of 3 is equally far from both
    path = write_json(tmp_path, squad(qa(question="Which?", answers=[{"text": "ab", "answer_start": 3}]),
                                      context=context))
    with pytest.raises(DataError) as info:
        read_examples(path)
    assert str(info.value) == (f"{path}: article 0 ('France'), paragraph 0, question 0 (id 'q1'): answer 0 text 'ab' "
                               "occurs more than once at the same distance from answer_start. Fix: set answer_start "
                               "to the character offset of the answer in the context")
    assert info.value.reason == "answer_mismatch"


def test_answer_not_near_its_start_is_an_error_never_a_guess(tmp_path):
    path = write_json(tmp_path, squad(qa(answers=[{"text": "Berlin", "answer_start": 0}])))
    with pytest.raises(DataError) as info:
        read_examples(path)
    assert str(info.value) == (f"{path}: article 0 ('France'), paragraph 0, question 0 (id 'q1'): answer 0 text "
                               "'Berlin' is not found near answer_start 0 (the context there reads 'Paris '). "
                               "Fix: set answer_start to the character offset of the answer in the context")
    far = "Paris " + "x" * 100 + " capital"
    path = write_json(tmp_path, squad(qa(answers=[{"text": "capital", "answer_start": 0}]), context=far))
    with pytest.raises(DataError, match="'capital' is not found near answer_start 0"):
        read_examples(path)


# ---------------------------------------------------------------------------------------------
# Bad input: exact messages, then the skip policy


BAD_RECORDS = [
    (qa(question=None) | {"question": None}, "missing_field",
     "(id 'q1'): missing field 'question'. Fix: add a 'question' string to the record"),
    ({"question": "Where?", "answers": []}, "missing_field",
     ": missing field 'id'. Fix: give every question a unique 'id' (string or integer)"),
    (qa(question="   "), "empty_question", "(id 'q1'): empty question. Fix: write the question text or drop the record"),
    (qa(qid=1.5), "wrong_type", ": field 'id' is float, expected a string or integer. Fix: store ids as JSON strings "
                                "or integers"),
    (qa(question=["a"]), "wrong_type", "(id 'q1'): field 'question' is list, expected a string. Fix: store 'question' "
                                       "as a JSON string"),
    (qa(answers=[{"text": "Paris", "answer_start": "0"}]), "wrong_type",
     "(id 'q1'): answer 0 has text str and answer_start str, expected a string and an integer. Fix: store answer "
     "text as a string and answer_start as an integer"),
    (qa(answers=[{"text": "", "answer_start": 0}]), "empty_answer",
     "(id 'q1'): answer 0 is empty. Fix: give the answer text or drop the answer"),
    (qa(is_impossible=True), "contradictory_answers",
     "(id 'q1'): is_impossible is true but answers are given. Fix: empty 'answers' for an unanswerable question "
     "(keep guesses in 'plausible_answers'), or set is_impossible to false"),
    (qa(answers=[], is_impossible=False), "contradictory_answers",
     "(id 'q1'): is_impossible is false but there are no answers. Fix: add the answer, or set is_impossible to true"),
    (qa(answers={"text": ["Paris", "France"], "answer_start": [0]}), "mismatched_answers",
     "(id 'q1'): 2 answer texts but 1 answer starts. Fix: give one answer_start per answer text"),
]


@pytest.mark.parametrize("record,reason,message", BAD_RECORDS, ids=[f"{r}-{i}" for i, (_, r, _) in enumerate(BAD_RECORDS)])
def test_bad_json_record_raises_with_location_and_fix(tmp_path, record, reason, message):
    path = write_json(tmp_path, squad(qa("good"), record))
    with pytest.raises(DataError) as info:
        read_examples(path)
    assert str(info.value) == f"{path}: article 0 ('France'), paragraph 0, question 1 {message}".replace(" :", ":")
    assert info.value.reason == reason
    examples, stats = read_examples(path, on_error="skip")
    assert [e.id for e in examples] == ["good"] and stats.bad == {reason: 1}


def test_empty_context_and_duplicate_ids(tmp_path):
    path = write_json(tmp_path, squad(qa("a"), extra_articles=[
        {"title": "Empty", "paragraphs": [{"context": " ", "qas": [qa("b")]}]},
        {"title": "Dup", "paragraphs": [{"context": CONTEXT, "qas": [qa("a")]}]}]))
    with pytest.raises(DataError) as info:
        read_examples(path)
    assert str(info.value) == (f"{path}: article 1 ('Empty'), paragraph 0, question 0 (id 'b'): empty context. "
                               "Fix: give the paragraph its text or drop the record")
    examples, stats = read_examples(path, on_error="skip")
    assert [e.id for e in examples] == ["a"]
    assert stats.bad == {"empty_context": 1, "duplicate_id": 1}
    assert stats.messages[1] == (f"{path}: article 2 ('Dup'), paragraph 0, question 0 (id 'a'): duplicate id 'a' "
                                 "(first seen at article 0 ('France'), paragraph 0, question 0 (id 'a')). "
                                 "Fix: give every question a unique id")


def test_invalid_json_file_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"title": "x",\n   "paragraphs": [}\n]}', encoding="utf-8")
    for policy in ("raise", "skip"):  # the file as a whole cannot be skipped around
        with pytest.raises(DataError) as info:
            read_examples(path, on_error=policy)
        assert str(info.value) == (f"{path}: line 3 column 19: invalid JSON (Expecting value). Fix: repair the JSON "
                                   "syntax there (check with `python -m json.tool FILE`)")


def test_non_utf8_json_names_the_line(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(squad(qa()), indent=1).replace("capital of", "capit\u00e0l of").encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_examples(path)
    assert info.value.reason == "not_utf8"
    assert str(info.value).startswith(f"{path}: line 8: bytes are not valid UTF-8 (invalid continuation byte at byte ")
    assert str(info.value).endswith("Fix: re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


def test_wrong_top_level_structure(tmp_path):
    path = write_json(tmp_path, [flat()])
    with pytest.raises(DataError) as info:
        read_examples(path)
    assert str(info.value) == (f"{path}: top level: expected an object with a 'data' list of articles (SQuAD format). "
                               "Fix: wrap articles as {\"data\": [{\"title\": ..., \"paragraphs\": [...]}]} or use "
                               "JSON Lines (one question per line, file named *.jsonl)")


def test_jsonl_bad_lines_raise_with_line_numbers_and_skip_with_counts(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(flat(qid=1)).encode(),
             b'{"id": 2, "context": "x"',                                     # line 2: truncated JSON
             json.dumps(flat(qid=3, context="Caf\u00e9 Paris"), ensure_ascii=False).encode("latin-1"),  # line 3: latin-1 bytes
             json.dumps(flat(qid=1)).encode(),                                # line 4: duplicate id
             b"",
             json.dumps(flat(qid=5, question="")).encode(),                   # line 6: empty question
             b"[1, 2]",                                                       # line 7: not an object
             json.dumps({k: v for k, v in flat(qid=8).items() if k != "context"}).encode(),  # line 8
             json.dumps(flat(qid=9, starts=(3,))).encode()]                    # line 9: repaired
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError) as info:
        read_examples(path)
    assert str(info.value) == (f"{path}: line 2: invalid JSON (Expecting ',' delimiter at column 25). "
                               "Fix: write one complete JSON object per line")
    examples, stats = read_examples(path, on_error="skip")
    assert [e.id for e in examples] == [1, 9]
    assert stats.bad == {"invalid_json": 1, "not_utf8": 1, "duplicate_id": 1, "empty_question": 1,
                         "wrong_type": 1, "missing_field": 1}
    assert stats.repaired == 1 and stats.questions == 2
    assert stats.messages[1] == (f"{path}: line 3: bytes are not valid UTF-8 (invalid continuation byte at column "
                                 "45). Fix: re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")
    assert stats.messages[2].startswith(f"{path}: line 4 (id 1): duplicate id 1 (first seen at line 1 (id 1))")
    assert stats.messages[4] == (f"{path}: line 7: line holds a JSON list, expected an object. "
                                 "Fix: write one JSON object per line")
    assert stats.messages[5] == (f"{path}: line 8: missing field 'context'. Fix: add a 'context' string to the record")


def test_missing_file_and_bad_policy(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: cannot read the file \(No such file or directory\)"):
        read_examples(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        read_examples(tmp_path / "nope.json", on_error="ignore")


# ---------------------------------------------------------------------------------------------
# Splits


def test_split_by_article_is_deterministic_and_never_splits_an_article(xquad_path):
    examples = read_examples(xquad_path).examples
    train, val = split_by_article(examples, 0.2, seed=13)
    again_train, again_val = split_by_article(examples, 0.2, seed=13)
    assert [e.id for e in train] == [e.id for e in again_train] and [e.id for e in val] == [e.id for e in again_val]
    train_articles, val_articles = {e.article for e in train}, {e.article for e in val}
    assert not train_articles & val_articles and len(val_articles) == round(0.2 * 48)
    assert len(train) + len(val) == len(examples)
    assert [e.id for e in train] == [e.id for e in examples if e.article in train_articles]  # order kept
    assert {e.article for e in split_by_article(examples, 0.2, seed=14)[1]} != val_articles


def test_split_by_paragraph_and_single_article_data(tmp_path):
    contexts = [f"Paragraph {i} about Paris." for i in range(10)]
    document = {"data": [{"title": "One", "paragraphs": [
        {"context": c, "qas": [qa(f"q{i}-{j}", answers=[{"text": "Paris", "answer_start": c.index("Paris")}])
                               for j in range(3)]} for i, c in enumerate(contexts)]}]}
    examples = read_examples(write_json(tmp_path, document)).examples
    with pytest.raises(ValueError, match=r"cannot split 1 article\(s\) into train and validation; split by "
                                         r"unit='paragraph' or provide a separate validation file"):
        split_by_article(examples, 0.2, seed=0)
    train, val = split_by_article(examples, 0.2, seed=0, unit="paragraph")
    assert len({e.paragraph for e in val}) == 2 and len(val) == 6
    assert not {e.paragraph for e in train} & {e.paragraph for e in val}


def test_select_articles_ranges(xquad_path):
    examples = read_examples(xquad_path).examples
    first = select_articles(examples, "0-39")
    assert {e.article for e in first} == set(range(40))
    assert {e.article for e in select_articles(examples, "40-47")} == set(range(40, 48))
    assert {e.article for e in select_articles(examples, "0,3,5-9")} == {0, 3, 5, 6, 7, 8, 9}
    assert len(first) + len(select_articles(examples, "40-47")) == len(examples)
    with pytest.raises(ValueError, match=r"articles 48, 49 requested by '40-49' do not exist \(the data has "
                                         r"articles 0-47\)"):
        select_articles(examples, "40-49")
    for spec in ("9-3", "a-b", "1,,2"):
        with pytest.raises(ValueError, match="bad article range"):
            select_articles(examples, spec)


# ---------------------------------------------------------------------------------------------
# CLI


def test_validate_cli_counts_and_exit_codes(tmp_path, capsys):
    good = write_json(tmp_path, squad(qa("a"), qa("b", answers=[{"text": "capital", "answer_start": 11}]),
                                      qa("c", answers=[], is_impossible=True)), name="good.json")
    assert data.main(["validate", str(good)]) == 0
    assert capsys.readouterr().out == (f"{good}: articles=1 paragraphs=1 questions=3 unanswerable=1 repaired=1 "
                                       "bad=0\n")
    bad = write_jsonl(tmp_path, [flat(qid=1), "{oops", flat(qid=1)], name="bad.jsonl")
    assert data.main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == [f"{bad}: articles=1 paragraphs=1 questions=1 unanswerable=0 repaired=0 bad=2",
                        "  bad duplicate_id: 1", "  bad invalid_json: 1"]
    assert out[4].startswith(f"  {bad}: line 2: invalid JSON")


def test_validate_cli_as_a_module(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "qa_core.data", "validate", str(broken)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{broken}: ERROR {broken}: line 1 column 2: invalid JSON")


def test_example_type_is_frozen():
    e = QAExample("x", "t", "c", "q", ("c",), (0,), False, 0, 0)
    with pytest.raises(AttributeError):
        e.context = "other"
