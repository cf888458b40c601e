"""What each rank runs in tests/test_distributed.py, launched as
`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py SCENARIO OUT_DIR ...`.

Each scenario writes rank<r>.pt into OUT_DIR; the tests read them back and assert."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qa_core.distributed import evaluate_distributed, init_distributed  # noqa: E402


def tiny_model(model_dir: str):
    """As in test_evaluation: a QA head of weights N(0, 0.5), well separated logits."""
    from qa_core.modeling import load_model

    model = load_model(model_dir, dropout={"hidden": 0.0, "attention": 0.0, "head": 0.0})
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        model.qa_outputs.weight.copy_(torch.randn(model.qa_outputs.weight.shape, generator=generator) * 0.5)
    return model


def scenario_evaluate(out_dir: Path, model_dir: str, xquad: str) -> None:
    """evaluate_distributed vs evaluate() in the same process, several batchings and v1/v2."""
    import dataclasses

    from qa_core.data import read_examples
    from qa_core.evaluation import evaluate
    from qa_core.features import build_windows
    from qa_core.tokenization import load_tokenizer

    ctx = init_distributed("cpu")
    examples = [e for e in read_examples(xquad).examples if e.article in (0, 1)][:60]
    # Every third question loses its answers for the SQuAD v2 case.
    v2_examples = [dataclasses.replace(e, answer_texts=(), answer_starts=(), is_impossible=True) if i % 3 == 0
                   else e for i, e in enumerate(examples)]
    windows = build_windows(examples, load_tokenizer(model_dir), max_seq_length=128, doc_stride=32)
    model = tiny_model(model_dir)
    cases = {"v1-batch7": (examples, dict(batch_size=7)),  # an odd number of batches: ranks get 2 sizes
             "v1-one-batch": (examples, dict(batch_size=10_000)),  # rank 1 gets no batch at all
             "v2-batch16": (v2_examples, dict(batch_size=16, version_2=True, null_threshold=-0.5))}
    results = {}
    for name, (case_examples, kwargs) in cases.items():
        distributed = evaluate_distributed(ctx, model, windows, case_examples, **kwargs)
        single = evaluate(model, windows, case_examples, **kwargs) if ctx.is_main else None
        results[name] = {"distributed": _without_timings(distributed), "single": _without_timings(single)}
    results["n_windows"] = len(windows)
    torch.save(results, out_dir / f"rank{ctx.rank}.pt")
    ctx.shutdown()


def _without_timings(result):
    """Comparable results: ExamplePrediction compares by identity, so as tuples with n-best lists."""
    if result is None:
        return None
    result = {k: v for k, v in result.items() if k != "timings"}
    if "example_predictions" in result:
        result["example_predictions"] = [
            (p.id, p.text, p.start_char, p.end_char, p.score, p.probability, p.is_null, p.null_score,
             p.null_probability, p.null_score_diff, p.n_best) for p in result["example_predictions"]]
    return result


def scenario_raise(out_dir: Path, failing_rank: str) -> None:
    """One rank raises; the other is busy (not in a collective) and must still be stopped."""
    ctx = init_distributed("cpu")
    if ctx.rank == int(failing_rank):
        while not (out_dir / f"busy{1 - ctx.rank}").exists():  # the other rank is at work
            time.sleep(0.05)
        raise ValueError(f"deliberate failure on rank {ctx.rank}")
    (out_dir / f"busy{ctx.rank}").write_text(str(time.time()))
    time.sleep(120)
    (out_dir / f"survived{ctx.rank}").write_text("the job was not taken down")


SCENARIOS = {"evaluate": scenario_evaluate, "raise": scenario_raise}

if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    SCENARIOS[scenario](out, *sys.argv[3:])
