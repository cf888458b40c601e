"""Smoke tests for benchmarks/: throughput.py's JSON figures are consistent with each other, and
vs_hf_trainer.py's run_qa.py-style helpers produce exactly qa_core's windows, labels and answers
(otherwise the race would compare two different tasks)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_throughput(*flags: str) -> dict:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "throughput.py"),
                           "--layers", "2", "--hidden", "32", "--heads", "4", "--vocab", "2000", "--batch", "3",
                           "--warmup", "1", "--iters", "2", "--threads", "1", *flags],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_throughput_full_windows_figures_agree():
    seq_len, peak = 48, 0.5
    out = run_throughput("--seq-len", str(seq_len), "--peak-tflops", str(peak), "--model-type", "bert")
    assert out["device"] in ("cpu", "cuda") and out["peak_tflops"] == peak
    n, layers, hidden = out["non_embedding_parameters"], 2, 32
    assert 0 < n < out["parameters"]
    for mode, (dense, attention) in (("train", (6, 12)), ("infer", (2, 4))):
        r = out[mode]
        assert r["windows_per_s"] > 0 and r["peak_memory_mib"] > 0
        assert r["padding_fraction"] == 0.0
        assert r["real_tokens_per_s"] == pytest.approx(r["windows_per_s"] * seq_len)
        assert r["padded_tokens_per_s"] == pytest.approx(r["real_tokens_per_s"])
        flops_per_window = dense * n * seq_len + attention * layers * hidden * seq_len ** 2
        assert r["model_tflops_per_s"] == pytest.approx(r["windows_per_s"] * flops_per_window / 1e12)
        assert r["mfu"] == pytest.approx(r["model_tflops_per_s"] / peak)
        assert r["step_ms"] == pytest.approx(1000 * 3 / r["windows_per_s"])


def test_throughput_padding_and_modes():
    out = run_throughput("--seq-len", "40", "--min-len", "8", "--pad-to-max", "--modes", "infer",
                         "--group-by-length")
    assert "train" not in out and out["peak_tflops"] is None
    r = out["infer"]
    assert r["mfu"] is None  # no peak known for a CPU
    assert r["padded_tokens_per_s"] == pytest.approx(r["windows_per_s"] * 40)
    assert 0 < r["padding_fraction"] < 1
    assert r["real_tokens_per_s"] == pytest.approx(r["padded_tokens_per_s"] * (1 - r["padding_fraction"]))


# ------------------------------------------------------------------ run_qa.py helpers vs qa_core


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("vs_hf_trainer")


@pytest.fixture(scope="module")
def xquad_examples(xquad_path):
    from qa_core.data import read_examples

    examples = read_examples(xquad_path).examples
    # Short and long contexts: the longest ones need several windows at 128/32.
    by_length = sorted(examples, key=lambda e: len(e.context))
    return examples[:30] + by_length[-15:]


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(minilm_dir), use_fast=True)


@pytest.mark.parametrize("max_seq_length,doc_stride", [(384, 128), (128, 32)])
def test_hf_features_equal_qa_core_windows(bench, xquad_examples, hf_tokenizer, minilm_dir, max_seq_length,
                                           doc_stride):
    from qa_core.features import build_windows
    from qa_core.tokenization import load_tokenizer

    windows = build_windows(xquad_examples, load_tokenizer(str(minilm_dir)), max_seq_length=max_seq_length,
                            doc_stride=doc_stride)
    features = bench.prepare_train_features(xquad_examples, hf_tokenizer, max_seq_length=max_seq_length,
                                            doc_stride=doc_stride, pad_to_max_length=False)
    inputs, side = bench.prepare_validation_features(xquad_examples, hf_tokenizer, max_seq_length=max_seq_length,
                                                     doc_stride=doc_stride, pad_to_max_length=False)
    assert len(features) == len(windows) == len(inputs) > len(xquad_examples)  # some examples have 2+ windows
    assert side["example_index"] == windows.example_index.tolist()
    np.testing.assert_array_equal(side["lengths"], windows.lengths)
    for i, feature in enumerate(features):
        n = windows.lengths[i]
        assert feature["input_ids"] == windows.input_ids[i, :n].tolist()
        assert feature["token_type_ids"] == windows.token_type_ids[i, :n].tolist()
        assert (feature["start_positions"], feature["end_positions"]) == (
            windows.start_positions[i], windows.end_positions[i])
        context = [tuple(o) if o is not None else (-1, -1) for o in side["offsets"][i]]
        assert context == [tuple(o) for o in windows.offsets[i, :n].tolist()]
    np.testing.assert_array_equal(side["start_positions"], windows.start_positions)
    assert (windows.start_positions > 0).sum() >= len(xquad_examples) * 0.9  # labels are mostly real spans


def test_hf_padding_to_max_length_keeps_labels(bench, xquad_examples, hf_tokenizer):
    dynamic = bench.prepare_train_features(xquad_examples[:10], hf_tokenizer, pad_to_max_length=False)
    padded = bench.prepare_train_features(xquad_examples[:10], hf_tokenizer, pad_to_max_length=True)
    assert all(len(f["input_ids"]) == 384 for f in padded)
    for d, p in zip(dynamic, padded):
        n = len(d["input_ids"])
        assert p["input_ids"][:n] == d["input_ids"] and set(p["input_ids"][n:]) <= {hf_tokenizer.pad_token_id}
        assert sum(p["attention_mask"]) == n
        assert (p["start_positions"], p["end_positions"]) == (d["start_positions"], d["end_positions"])


def test_hf_postprocessing_equals_qa_core(bench, xquad_examples, hf_tokenizer, minilm_dir):
    from qa_core.features import build_windows
    from qa_core.postprocess import postprocess_predictions
    from qa_core.tokenization import load_tokenizer

    windows = build_windows(xquad_examples, load_tokenizer(str(minilm_dir)), max_seq_length=128, doc_stride=32)
    _, side = bench.prepare_validation_features(xquad_examples, hf_tokenizer, max_seq_length=128, doc_stride=32,
                                                pad_to_max_length=False)
    rng = np.random.default_rng(0)
    start, end = (rng.normal(size=(len(windows), 128)).astype(np.float32) for _ in range(2))
    # What Trainer.predict hands back for dynamic padding: -100 past each window's end.
    pad = np.arange(128)[None, :] >= windows.lengths[:, None]
    start[pad], end[pad] = -100.0, -100.0
    hf_answers = bench.postprocess_qa_predictions(xquad_examples, side, start, end, n_best=20, max_answer_length=30)
    ours = postprocess_predictions(start, end, windows, xquad_examples, n_best=20, max_answer_length=30)
    assert [hf_answers[e.id] for e in xquad_examples] == [p.text for p in ours]
    assert len({p.text for p in ours}) > len(xquad_examples) // 2  # real, varied spans, not a constant


def test_throughput_pad_multiple_rounds_each_batch_up():
    # Batches of 3 windows of 40..64 tokens: their longest (> 32) rounds up to 64 with --pad-multiple 32.
    out = run_throughput("--seq-len", "64", "--min-len", "40", "--pad-multiple", "32", "--modes", "infer")
    r = out["infer"]
    assert out["pad_multiple"] == 32
    assert r["padded_tokens_per_s"] == pytest.approx(r["windows_per_s"] * 64)
    assert r["padding_fraction"] > 0


def test_hf_predictions_are_put_back_in_dataset_order():
    # transformers 5.x evaluates in length-grouped order under group_by_length; the race undoes it.
    vs = load_benchmark("vs_hf_trainer")
    seen = []
    recorder = vs.OrderRecordingCollator(lambda features: seen.extend(features) or len(features))
    assert recorder([{"_index": 2, "x": "c"}, {"_index": 0, "x": "a"}]) == 2
    assert recorder([{"_index": 1, "x": "b"}]) == 1
    assert recorder.order == [2, 0, 1] and [f["x"] for f in seen] == ["c", "a", "b"] and "_index" not in seen[0]
    rows = np.array([[20.0], [0.0], [10.0]])  # produced for windows 2, 0, 1
    assert vs.dataset_order(rows, recorder.order).ravel().tolist() == [0.0, 10.0, 20.0]
    with pytest.raises(RuntimeError, match="not each of 3 once"):
        vs.dataset_order(rows, [0, 0, 1])


def test_accuracy_over_seeds_hand_checked():
    vs = load_benchmark("vs_hf_trainer")

    def run(mode, seed, f1, exact=50.0, val_acc=30.0, train_acc=40.0):
        return {"mode": mode, "seed": seed, "epochs": [{"exact": 0.0, "f1": 0.0}, {"exact": exact, "f1": f1}],
                "val_token_acc": val_acc, "train_token_acc": train_acc}

    results = [run("ours-same", 1, 31.0, exact=20.0), run("hf-best", 1, 33.0, exact=21.0, train_acc=44.0),
               run("ours-same", 2, 40.0, exact=30.0), run("hf-best", 2, 39.0, exact=30.0, train_acc=42.0),
               run("ours-same", 3, 36.0, exact=25.0),  # no hf-best at seed 3: left out
               run("hf-default", 1, 20.0)]  # no ours-default at all: no defaults pair
    spread = vs.accuracy_over_seeds(results)
    assert list(spread) == ["same_settings"]
    same = spread["same_settings"]
    assert same["seeds"] == [1, 2] and same["ours_f1"] == [31.0, 40.0] and same["hf_f1"] == [33.0, 39.0]
    assert same["ours_f1_mean"] == 35.5 and same["hf_f1_mean"] == 36.0
    # F1 differences -2 and +1: mean -0.5, sd sqrt(((-1.5)^2 + 1.5^2) / 1) = 2.12, se 2.12 / sqrt(2) = 1.5.
    assert same["f1_diff"] == {"values": [-2.0, 1.0], "mean": -0.5, "sd": 2.12, "se": 1.5}
    assert same["exact_diff"]["values"] == [-1.0, 0.0] and same["exact_diff"]["mean"] == -0.5
    assert same["train_token_acc_diff"] == {"values": [-4.0, -2.0], "mean": -3.0, "sd": 1.41, "se": 1.0}
    assert vs.mean_sd_se([2.5]) == {"values": [2.5], "mean": 2.5, "sd": None, "se": None}


def test_race_end_to_end_over_two_seeds(tiny_bert_dir, tmp_path):
    # The whole driver on a tiny model: worker subprocesses, per-seed tables and ratio lines, the
    # accuracy spread at the end, --json-out; both sides train on the same windows.
    pytest.importorskip("transformers")
    out = tmp_path / "race.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "vs_hf_trainer.py"), "--model", str(tiny_bert_dir),
         "--data", str(REPO_ROOT / "data/quickstart/train.json"), "--train-articles", "0-4",
         "--eval-articles", "5", "--max-train-examples", "16", "--max-eval-examples", "8",
         "--train-eval-examples", "6", "--max-seq-length", "128", "--doc-stride", "48", "--batch-size", "4",
         "--eval-batch-size", "8", "--epochs", "1", "--threads", "1", "--seeds", "5,6",
         "--modes", "ours-same,hf-best", "--json-out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [line.get("seed") for line in lines] == [5, 6, None]
    for line in lines[:2]:
        same = line["ratios_ours_over_hf"]["same_settings"]
        assert same["pair"] == "ours-same / hf-best" and same["train_windows_per_s"] > 0
    spread = lines[2]["accuracy_over_seeds"]["same_settings"]
    assert spread["seeds"] == [5, 6] and len(spread["f1_diff"]["values"]) == 2
    runs = json.loads(out.read_text())
    assert [(r["mode"], r["seed"]) for r in runs] == [("ours-same", 5), ("hf-best", 5), ("ours-same", 6),
                                                     ("hf-best", 6)]
    assert len({r["train_windows"] for r in runs}) == 1 and runs[0]["train_windows"] >= 16
    for r in runs:
        assert len(r["epochs"]) == 1 and 0 <= r["epochs"][0]["f1"] <= 100 and r["peak_rss_mib"] > 0
    # Each seed's F1 difference is the one its own runs show.
    assert spread["f1_diff"]["values"] == [round(runs[0]["epochs"][0]["f1"] - runs[1]["epochs"][0]["f1"], 2),
                                           round(runs[2]["epochs"][0]["f1"] - runs[3]["epochs"][0]["f1"], 2)]
