"""Read SQuAD-format QA data into one example type, validate every record, split by article.

Formats: SQuAD v1.1 / v2.0 JSON (`data/paragraphs/qas`) and JSON Lines with one flat record
per line as a `datasets` export writes it (`answers: {text: [...], answer_start: [...]}`).
Sources: local paths and `hf://datasets/<owner>/<name>[@revision]/<file>`.

Every answer must equal `context[start:start + len(text)]`. Two kinds of real-world drift are
repaired, and counted, when the repair is unambiguous: a start a few characters off (the text
occurs exactly once at the nearest distance within a small window), and answer text with
surrounding whitespace. Anything else is a `DataError` naming the file, the record and the fix,
or, with `on_error="skip"`, a dropped record counted under its reason.

`python -m qa_core.data validate FILE...` prints counts and exits non-zero on bad records.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

# How far (in characters) from the given answer_start we look for the answer text.
REPAIR_WINDOW = 32
# Error messages kept in ReadStats for display (the counts cover everything).
MAX_KEPT_MESSAGES = 20
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class QAExample:
    id: str | int
    title: str
    context: str
    question: str
    answer_texts: tuple[str, ...]
    answer_starts: tuple[int, ...]
    is_impossible: bool
    article: int
    paragraph: int


class DataError(ValueError):
    """A bad file or record. `reason` is the key under which `skip` counts it."""

    def __init__(self, file: str, where: str, problem: str, fix: str, reason: str):
        self.file, self.where, self.problem, self.fix, self.reason = file, where, problem, fix, reason
        location = f"{file}: {where}" if where else file
        super().__init__(f"{location}: {problem}. Fix: {fix}")


@dataclass
class ReadStats:
    articles: int = 0
    paragraphs: int = 0
    questions: int = 0
    unanswerable: int = 0
    repaired: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def count_bad(self, error: DataError) -> None:
        self.bad[error.reason] = self.bad.get(error.reason, 0) + 1
        if len(self.messages) < MAX_KEPT_MESSAGES:
            self.messages.append(str(error))


class ReadResult(NamedTuple):
    examples: list[QAExample]
    stats: ReadStats


# ---------------------------------------------------------------------------------------------
# Sources


def resolve_path(path_or_url: str | Path) -> Path:
    """Local path as is; `hf://datasets/<owner>/<name>[@rev]/<file>` downloaded to the HF cache."""
    text = str(path_or_url)
    if not text.startswith("hf://"):
        return Path(text)
    prefix = "hf://datasets/"
    parts = text[len(prefix):].split("/") if text.startswith(prefix) else []
    if len(parts) < 2 or not all(parts):
        raise DataError(text, "", "not a Hub dataset file URL",
                        "write it as hf://datasets/<owner>/<name>/<path/to/file.json>", "bad_url")
    # Repos are usually owner/name; a bare canonical name is allowed when only a file follows.
    repo_parts, file_parts = (parts[:2], parts[2:]) if len(parts) >= 3 else (parts[:1], parts[1:])
    repo_id = "/".join(repo_parts)
    revision = None
    if "@" in repo_id:
        repo_id, revision = repo_id.split("@", 1)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, "/".join(file_parts), repo_type="dataset", revision=revision))
    except Exception as exc:  # network, auth, missing file: all need the user's action
        raise DataError(text, "", f"could not download from the Hub ({type(exc).__name__}: {exc})",
                        "check the repo id and file path, log in with `huggingface-cli login` for "
                        "private data, or download the file and pass a local path", "download_failed") from exc


# ---------------------------------------------------------------------------------------------
# Record validation (shared by both formats)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _locate_answer(context: str, text: str, start: int) -> tuple[str, int] | None | str:
    """(text, start) after an unambiguous repair, None when nothing matches, "ambiguous" on a tie."""
    candidates = [(text, start)]
    stripped = text.strip()
    if stripped and stripped != text:
        candidates.append((stripped, start + (len(text) - len(text.lstrip()))))
    for candidate, expected in candidates:
        if 0 <= expected and context[expected:expected + len(candidate)] == candidate:
            return candidate, expected
        lo = max(0, expected - REPAIR_WINDOW)
        hi = min(len(context), expected + REPAIR_WINDOW + len(candidate))
        found: list[int] = []
        pos = context.find(candidate, lo, hi)
        while pos != -1:
            found.append(pos)
            pos = context.find(candidate, pos + 1, hi)
        if not found:
            continue
        distances = [abs(p - expected) for p in found]
        nearest = min(distances)
        if distances.count(nearest) > 1:
            return "ambiguous"
        return candidate, found[distances.index(nearest)]
    return None


class _RecordChecker:
    """Turns raw fields into a QAExample or raises DataError; tracks ids and repairs."""

    def __init__(self, file: str, stats: ReadStats):
        self.file = file
        self.stats = stats
        self.seen_ids: dict[Any, str] = {}

    def error(self, where: str, problem: str, fix: str, reason: str) -> DataError:
        return DataError(self.file, where, problem, fix, reason)

    def text_field(self, record: dict, name: str, where: str, *, required: bool = True) -> str:
        if name not in record or record[name] is None:
            if not required:
                return ""
            raise self.error(where, f"missing field '{name}'", f"add a '{name}' string to the record",
                             "missing_field")
        value = record[name]
        if not isinstance(value, str):
            raise self.error(where, f"field '{name}' is {type(value).__name__}, expected a string",
                             f"store '{name}' as a JSON string", "wrong_type")
        return value

    def example(self, record: dict, context: str, where: str, *, title: str, article: int,
                paragraph: int) -> QAExample:
        if "id" not in record:
            raise self.error(where, "missing field 'id'", "give every question a unique 'id' (string or integer)",
                             "missing_field")
        qid = record["id"]
        if not (isinstance(qid, str) or _is_int(qid)):
            raise self.error(where, f"field 'id' is {type(qid).__name__}, expected a string or integer",
                             "store ids as JSON strings or integers", "wrong_type")
        qid = int(qid) if _is_int(qid) else qid
        where = f"{where} (id {qid!r})"
        question = self.text_field(record, "question", where)
        if not question.strip():
            raise self.error(where, "empty question", "write the question text or drop the record",
                             "empty_question")
        if not context.strip():
            raise self.error(where, "empty context", "give the paragraph its text or drop the record",
                             "empty_context")
        texts, starts = self._answers(record, where)
        impossible = record.get("is_impossible")
        if impossible is not None and not isinstance(impossible, bool):
            raise self.error(where, f"field 'is_impossible' is {type(impossible).__name__}, expected true/false",
                             "store is_impossible as a JSON boolean", "wrong_type")
        if impossible and texts:
            raise self.error(where, "is_impossible is true but answers are given",
                             "empty 'answers' for an unanswerable question (keep guesses in "
                             "'plausible_answers'), or set is_impossible to false", "contradictory_answers")
        if impossible is False and not texts:
            raise self.error(where, "is_impossible is false but there are no answers",
                             "add the answer, or set is_impossible to true", "contradictory_answers")
        repaired_texts, repaired_starts, repairs = [], [], 0
        for k, (text, start) in enumerate(zip(texts, starts)):
            if not text.strip():
                raise self.error(where, f"answer {k} is empty", "give the answer text or drop the answer",
                                 "empty_answer")
            located = _locate_answer(context, text, start)
            if located is None or located == "ambiguous":
                found = context[max(start, 0):max(start, 0) + len(text)]
                detail = ("occurs more than once at the same distance from answer_start"
                          if located == "ambiguous" else f"is not found near answer_start {start} "
                          f"(the context there reads {found!r})")
                raise self.error(where, f"answer {k} text {text!r} {detail}",
                                 "set answer_start to the character offset of the answer in the context",
                                 "answer_mismatch")
            new_text, new_start = located
            repairs += (new_text, new_start) != (text, start)
            repaired_texts.append(new_text)
            repaired_starts.append(new_start)
        if qid in self.seen_ids:
            raise self.error(where, f"duplicate id {qid!r} (first seen at {self.seen_ids[qid]})",
                             "give every question a unique id", "duplicate_id")
        self.seen_ids[qid] = where
        self.stats.repaired += repairs
        return QAExample(id=qid, title=title, context=context, question=question,
                         answer_texts=tuple(repaired_texts), answer_starts=tuple(repaired_starts),
                         is_impossible=not texts, article=article, paragraph=paragraph)

    def _answers(self, record: dict, where: str) -> tuple[list[str], list[int]]:
        answers = record.get("answers", [])
        if answers is None:
            answers = []
        if isinstance(answers, dict):  # datasets export: {"text": [...], "answer_start": [...]}
            texts, starts = answers.get("text"), answers.get("answer_start")
            if texts is None or starts is None:
                raise self.error(where, "'answers' needs both 'text' and 'answer_start'",
                                 "write answers as {\"text\": [...], \"answer_start\": [...]}", "missing_field")
            if not isinstance(texts, list) or not isinstance(starts, list):
                raise self.error(where, "'answers.text' and 'answers.answer_start' must be lists",
                                 "wrap single answers in lists", "wrong_type")
            if len(texts) != len(starts):
                raise self.error(where, f"{len(texts)} answer texts but {len(starts)} answer starts",
                                 "give one answer_start per answer text", "mismatched_answers")
        elif isinstance(answers, list):  # SQuAD: [{"text": ..., "answer_start": ...}, ...]
            texts, starts = [], []
            for k, answer in enumerate(answers):
                if not isinstance(answer, dict) or "text" not in answer or "answer_start" not in answer:
                    raise self.error(where, f"answer {k} is not an object with 'text' and 'answer_start'",
                                     "write each answer as {\"text\": ..., \"answer_start\": ...}",
                                     "missing_field")
                texts.append(answer["text"])
                starts.append(answer["answer_start"])
        else:
            raise self.error(where, f"field 'answers' is {type(answers).__name__}",
                             "write answers as a list of {text, answer_start} objects or as "
                             "{\"text\": [...], \"answer_start\": [...]}", "wrong_type")
        for k, (text, start) in enumerate(zip(texts, starts)):
            if not isinstance(text, str) or not _is_int(start):
                raise self.error(where, f"answer {k} has text {type(text).__name__} and answer_start "
                                 f"{type(start).__name__}, expected a string and an integer",
                                 "store answer text as a string and answer_start as an integer", "wrong_type")
        return list(texts), [int(s) for s in starts]


# ---------------------------------------------------------------------------------------------
# Formats


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(file, f"line {line}", f"bytes are not valid UTF-8 ({exc.reason} at byte {exc.start})",
                        "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)", "not_utf8") from None


def _looks_like_jsonl(path: Path, raw: bytes) -> bool:
    if path.name.lower().endswith(JSONL_SUFFIXES):
        return True
    # `datasets` writes JSON Lines even under a .json name: several lines that are each an object.
    lines = [line for line in raw.split(b"\n") if line.strip()]
    if len(lines) < 2 or not lines[0].lstrip().startswith(b"{"):
        return False
    try:
        first = json.loads(lines[0])
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and "data" not in first


def _read_squad_json(raw: bytes, file: str, on_error: str, stats: ReadStats) -> list[QAExample]:
    text = _decode(raw, file)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(file, f"line {exc.lineno} column {exc.colno}", f"invalid JSON ({exc.msg})",
                        "repair the JSON syntax there (check with `python -m json.tool FILE`)",
                        "invalid_json") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(file, "top level", "expected an object with a 'data' list of articles (SQuAD format)",
                        "wrap articles as {\"data\": [{\"title\": ..., \"paragraphs\": [...]}]} or use "
                        "JSON Lines (one question per line, file named *.jsonl)", "bad_structure")
    checker = _RecordChecker(file, stats)
    examples: list[QAExample] = []
    for a, article in enumerate(document["data"]):
        where_article = f"article {a}"
        try:
            if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
                raise checker.error(where_article, "article has no 'paragraphs' list",
                                    "give each article a 'paragraphs' list", "missing_field")
            title = checker.text_field(article, "title", where_article, required=False)
        except DataError as exc:
            _handle(exc, on_error, stats)
            continue
        if title:
            where_article = f"article {a} ({title!r})"
        stats.articles += 1
        for p, paragraph in enumerate(article["paragraphs"]):
            where_paragraph = f"{where_article}, paragraph {p}"
            try:
                if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                    raise checker.error(where_paragraph, "paragraph has no 'qas' list",
                                        "give each paragraph a 'qas' list", "missing_field")
                context = checker.text_field(paragraph, "context", where_paragraph)
            except DataError as exc:
                _handle(exc, on_error, stats)
                continue
            stats.paragraphs += 1
            for q, qa in enumerate(paragraph["qas"]):
                where = f"{where_paragraph}, question {q}"
                try:
                    if not isinstance(qa, dict):
                        raise checker.error(where, f"question is {type(qa).__name__}, expected an object",
                                            "write each question as an object", "wrong_type")
                    examples.append(checker.example(qa, context, where, title=title, article=a, paragraph=p))
                except DataError as exc:
                    _handle(exc, on_error, stats)
    return examples


def _jsonl_records(raw: bytes, file: str) -> Iterator[tuple[int, dict | DataError]]:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield number, DataError(file, where, f"bytes are not valid UTF-8 ({exc.reason} at column {exc.start + 1})",
                                    "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)", "not_utf8")
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, DataError(file, where, f"invalid JSON ({exc.msg} at column {exc.colno})",
                                    "write one complete JSON object per line", "invalid_json")
            continue
        if not isinstance(record, dict):
            yield number, DataError(file, where, f"line holds a JSON {type(record).__name__}, expected an object",
                                    "write one JSON object per line", "wrong_type")
            continue
        yield number, record


def _read_jsonl(raw: bytes, file: str, on_error: str, stats: ReadStats) -> list[QAExample]:
    checker = _RecordChecker(file, stats)
    examples: list[QAExample] = []
    # Articles are groups of records sharing a title (or, untitled, a context); paragraphs are
    # distinct contexts inside an article. Numbered in order of first appearance.
    articles: dict[str, int] = {}
    paragraphs: dict[tuple[int, str], int] = {}
    per_article: dict[int, int] = {}
    for number, record in _jsonl_records(raw, file):
        where = f"line {number}"
        try:
            if isinstance(record, DataError):
                raise record
            context = checker.text_field(record, "context", where)
            title = checker.text_field(record, "title", where, required=False)
            group = title if title else "\0" + context
            article = articles.setdefault(group, len(articles))
            if (article, context) not in paragraphs:
                paragraph = per_article.get(article, 0)
            else:
                paragraph = paragraphs[(article, context)]
            example = checker.example(record, context, where, title=title, article=article, paragraph=paragraph)
        except DataError as exc:
            _handle(exc, on_error, stats)
            continue
        if (article, context) not in paragraphs:
            paragraphs[(article, context)] = paragraph
            per_article[article] = paragraph + 1
        examples.append(example)
    stats.articles = len({e.article for e in examples})
    stats.paragraphs = len({(e.article, e.paragraph) for e in examples})
    return examples


def _handle(error: DataError, on_error: str, stats: ReadStats) -> None:
    if on_error == "raise":
        raise error
    stats.count_bad(error)


def read_examples(path_or_url: str | Path, *, on_error: str = "raise") -> ReadResult:
    """Read one SQuAD JSON or JSON Lines file (local or hf://datasets/...) into QAExamples.

    on_error="raise" stops at the first bad record; "skip" drops bad records and counts them
    per reason in `stats.bad`. Problems with the file as a whole always raise."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    file = str(path_or_url)
    path = resolve_path(path_or_url)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(file, "", f"cannot read the file ({exc.strerror or exc})",
                        "check the path (relative paths start at the current directory)", "unreadable") from None
    stats = ReadStats()
    if _looks_like_jsonl(path, raw):
        examples = _read_jsonl(raw, file, on_error, stats)
    else:
        examples = _read_squad_json(raw, file, on_error, stats)
    stats.questions = len(examples)
    stats.unanswerable = sum(e.is_impossible for e in examples)
    return ReadResult(examples, stats)


# ---------------------------------------------------------------------------------------------
# Splits


def split_by_article(examples: list[QAExample], val_fraction: float, seed: int, *,
                     unit: str = "article") -> tuple[list[QAExample], list[QAExample]]:
    """Deterministic (train, val) split where no article (or paragraph) lands on both sides.

    round(val_fraction * groups) groups, at least one on each side, chosen by a seeded
    permutation; examples keep their original order within each side."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if unit == "article":
        keys = [e.article for e in examples]
    elif unit == "paragraph":
        keys = [(e.article, e.paragraph) for e in examples]
    else:
        raise ValueError(f"unit must be 'article' or 'paragraph', got {unit!r}")
    groups = sorted(set(keys))
    if len(groups) < 2:
        raise ValueError(f"cannot split {len(groups)} {unit}(s) into train and validation; "
                         "split by unit='paragraph' or provide a separate validation file")
    n_val = min(max(1, round(val_fraction * len(groups))), len(groups) - 1)
    order = np.random.default_rng(seed).permutation(len(groups))
    val_groups = {groups[i] for i in order[:n_val]}
    train = [e for e, k in zip(examples, keys) if k not in val_groups]
    val = [e for e, k in zip(examples, keys) if k in val_groups]
    return train, val


def parse_ranges(spec: str) -> list[int]:
    """'0-39' / '40-47' / '0,3,5-9' -> sorted unique ints (ranges inclusive)."""
    values: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ValueError(f"bad article range {part!r} in {spec!r}; write e.g. '0-39' or '0,3,5-9'") from None
        if first < 0 or last < first:
            raise ValueError(f"bad article range {part!r} in {spec!r}; ranges run low-high from 0")
        values.update(range(first, last + 1))
    return sorted(values)


def select_articles(examples: list[QAExample], spec: str) -> list[QAExample]:
    """Examples whose article index is in `spec` ('0-39', '0,3,5-9'); unknown indices are an error."""
    wanted = set(parse_ranges(spec))
    present = {e.article for e in examples}
    missing = sorted(wanted - present)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"articles {shown} requested by {spec!r} do not exist "
                         f"(the data has articles {min(present, default=0)}-{max(present, default=-1)})")
    return [e for e in examples if e.article in wanted]


# ---------------------------------------------------------------------------------------------
# CLI


def _validate_cli(files: list[str]) -> int:
    failed = False
    for file in files:
        try:
            _, stats = read_examples(file, on_error="skip")
        except DataError as exc:
            print(f"{file}: ERROR {exc}")
            failed = True
            continue
        bad = sum(stats.bad.values())
        print(f"{file}: articles={stats.articles} paragraphs={stats.paragraphs} questions={stats.questions} "
              f"unanswerable={stats.unanswerable} repaired={stats.repaired} bad={bad}")
        for reason, count in sorted(stats.bad.items()):
            print(f"  bad {reason}: {count}")
        for message in stats.messages:
            print(f"  {message}")
        if bad > len(stats.messages):
            print(f"  ... {bad - len(stats.messages)} more")
        failed |= bad > 0
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa_core.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check SQuAD JSON / JSONL files and print counts")
    validate.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    return _validate_cli(args.files)


if __name__ == "__main__":
    sys.exit(main())
