"""The shipped quickstart dataset: counts, id uniqueness, article-level split, exact answer
offsets, and byte-identical regeneration from tools/make_quickstart_data.py."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data" / "quickstart"
GENERATOR = REPO_ROOT / "tools" / "make_quickstart_data.py"
SPLITS = ("train", "val")


def load(split: str) -> dict:
    return json.loads((DATA_DIR / f"{split}.json").read_text(encoding="utf-8"))


def paragraphs(dataset: dict) -> list[dict]:
    return [p for article in dataset["data"] for p in article["paragraphs"]]


def questions(dataset: dict) -> list[dict]:
    return [qa for p in paragraphs(dataset) for qa in p["qas"]]


@pytest.fixture(scope="module")
def datasets() -> dict[str, dict]:
    return {split: load(split) for split in SPLITS}


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_quickstart_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_squad_v1_shape_and_counts(datasets):
    for dataset in datasets.values():
        assert dataset["version"] == "1.1"
        assert all(isinstance(a["title"], str) and a["paragraphs"] for a in dataset["data"])
    n_paragraphs = sum(len(paragraphs(d)) for d in datasets.values())
    n_questions = sum(len(questions(d)) for d in datasets.values())
    assert n_paragraphs >= 30
    assert n_questions >= 150
    # Train must hold most of the data; val is a couple of held-out articles.
    assert len(paragraphs(datasets["train"])) > 2 * len(paragraphs(datasets["val"])) > 0


def test_ids_unique_across_both_files(datasets):
    ids = [qa["id"] for d in datasets.values() for qa in questions(d)]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, str) and i.startswith("qs-a") for i in ids)


def test_split_is_by_article(datasets):
    train, val = datasets["train"], datasets["val"]
    assert not {a["title"] for a in train["data"]} & {a["title"] for a in val["data"]}
    assert not {p["context"] for p in paragraphs(train)} & {p["context"] for p in paragraphs(val)}


def test_every_answer_start_slices_out_its_text(datasets):
    for dataset in datasets.values():
        for paragraph in paragraphs(dataset):
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                assert len(qa["answers"]) == 1, qa["id"]
                answer = qa["answers"][0]
                start = answer["answer_start"]
                assert context[start : start + len(answer["text"])] == answer["text"], qa["id"]
                assert answer["text"] == answer["text"].strip() and answer["text"], qa["id"]


def test_ambiguous_answer_uses_the_chosen_occurrence(datasets):
    # "four" occurs twice in this paragraph ("first four weeks", "final four"); the data picks the second.
    by_id = {qa["id"]: (p["context"], qa) for p in paragraphs(datasets["train"]) for qa in p["qas"]}
    context, qa = by_id["qs-a05-p3-q3"]
    start = qa["answers"][0]["answer_start"]
    assert context.count("four") == 2
    assert start == context.rindex("four")
    assert context[start - 6 : start] == "final "


def test_regeneration_is_byte_identical(tmp_path):
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    for split in SPLITS:
        assert (tmp_path / f"{split}.json").read_bytes() == (DATA_DIR / f"{split}.json").read_bytes(), split


def test_generator_rejects_missing_ambiguous_and_out_of_range_answers(generator):
    context = "The depot opened in 1927 and was extended in 1927 style."
    with pytest.raises(generator.QuickstartDataError, match=r"qs-x.*'1928' does not occur"):
        generator.answer_start(context, "1928", None, "qs-x")
    with pytest.raises(generator.QuickstartDataError, match=r"qs-x.*occurs 2 times"):
        generator.answer_start(context, "1927", None, "qs-x")
    with pytest.raises(generator.QuickstartDataError, match=r"qs-x.*occurrence 2 out of range"):
        generator.answer_start(context, "1927", 2, "qs-x")
    assert generator.answer_start(context, "1927", 1, "qs-x") == context.rindex("1927")


def test_generator_exits_nonzero_naming_the_bad_question(generator, tmp_path, monkeypatch, capsys):
    broken = [dict(a) for a in generator.ARTICLES]
    context, qas = broken[0]["paragraphs"][0]
    broken[0] = {**broken[0], "paragraphs": [(context, [("Where?", "Atlantis")])]}
    monkeypatch.setattr(generator, "ARTICLES", broken)
    assert generator.main(["--out-dir", str(tmp_path)]) == 1
    assert "qs-a01-p1-q1: answer 'Atlantis' does not occur" in capsys.readouterr().err
    assert not (tmp_path / "train.json").exists()
