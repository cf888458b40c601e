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
    ctx.wait_for_all()
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


def tiny_run_config(model_dir: str, out_dir: Path, name: str, *extra: str):
    """The tiny run of tests/test_loop.py (shipped quickstart data, no dropout)."""
    from qa_core.config import load_config

    return load_config(None, [
        f"model.name_or_path={model_dir}",
        f"data.train_file={REPO / 'data/quickstart/train.json'}",
        f"data.val_file={REPO / 'data/quickstart/val.json'}",
        "data.max_train_examples=20", "data.max_val_examples=12",
        "data.max_seq_length=192", "data.doc_stride=64", f"data.cache_dir={out_dir / 'features'}",
        "model.dropout.hidden=0", "model.dropout.attention=0", "model.dropout.head=0",
        "optim.lr=1e-3", "train.epochs=2", "train.batch_size=4", "train.log_every=1", "train.device=cpu",
        "train.progress=false", "eval.train_subset_examples=8", "eval.batch_size=16",
        f"run.output_dir={out_dir / 'runs'}", f"run.name={name}", *extra])


# Two ranks with batch 2 and 2 micro-batches per step = 8 windows per step, as one process
# with batch 8 (test_distributed.py runs that one). 21 windows: the last global batch holds
# one window, so rank 1 gets an empty micro-batch there (the zero-weight stand-in).
EQUIVALENCE = ("data.max_train_examples=21", "train.shuffle=false", "train.group_by_length=false",
               "eval.every_epoch=false", "eval.at_start=false", "optim.weight_decay=0.01", "optim.eps=1e-6")
# Dropout on and the default shuffled, length-grouped batches: each rank's RNG state matters.
RESUME = ("model.dropout.hidden=0.1", "eval.every_steps=2")


def scenario_train(out_dir: Path, model_dir: str) -> None:
    """The same process group for every run, as torchrun gives one run (loop.run reuses it)."""
    from qa_core import loop

    ctx = init_distributed("cpu")
    loop.run(tiny_run_config(model_dir, out_dir, "ddp", "train.batch_size=2", "train.grad_accum_steps=2",
                             *EQUIVALENCE))
    whole = loop.run(tiny_run_config(model_dir, out_dir, "whole", *RESUME))
    part = loop.run(tiny_run_config(model_dir, out_dir, "part", *RESUME), stop_at_step=2)
    resumed = loop.run(loop.config_for_resume(out_dir / "runs" / "part"), resume=out_dir / "runs" / "part")
    torch.save({"whole": whole, "part": part, "resumed": resumed}, out_dir / f"rank{ctx.rank}.pt")
    ctx.wait_for_all()
    ctx.shutdown()


def scenario_fail_in_loop(out_dir: Path, model_dir: str, failing_rank: str) -> None:
    """qa_loss raises on one rank at its 3rd micro-batch, inside loop.run."""
    from qa_core import loop

    ctx = init_distributed("cpu")
    if ctx.rank == int(failing_rank):
        real_loss, calls = loop.qa_loss, []

        def failing_loss(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise FloatingPointError(f"deliberate failure in the loop on rank {ctx.rank}")
            return real_loss(*args, **kwargs)

        loop.qa_loss = failing_loss
    loop.run(tiny_run_config(model_dir, out_dir, "failing", "train.epochs=50", "eval.at_start=false"))
    (out_dir / f"survived{ctx.rank}").write_text("the job was not taken down")


SCENARIOS = {"evaluate": scenario_evaluate, "raise": scenario_raise, "train": scenario_train,
             "fail_in_loop": scenario_fail_in_loop}

if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    SCENARIOS[scenario](out, *sys.argv[3:])
