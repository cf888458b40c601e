"""Two CPU processes under torchrun (gloo): sharded evaluation equals one process exactly,
and a rank that raises takes the job down. Each test launches
`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py ...`
(--standalone: a free local port) and reads what the ranks wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
sys.path.insert(0, str(WORKER.parent))  # the worker's run configs, for the single-process reference


def torchrun(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def rank_results(out_dir: Path) -> list:
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_distributed_evaluation_equals_single_process(tiny_bert_dir, xquad_path, tmp_path):
    proc = torchrun("evaluate", tmp_path, tiny_bert_dir, xquad_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    main, other = rank_results(tmp_path)
    assert main["n_windows"] > 60  # several windows per question: merging across windows is exercised
    for name in ("v1-batch7", "v1-one-batch", "v2-batch16"):
        distributed, single = main[name]["distributed"], main[name]["single"]
        # Exactly equal: the same logits (same batches, same padding), the same float sums.
        assert distributed["predictions"] == single["predictions"], name
        assert distributed["example_predictions"] == single["example_predictions"], name
        numbers = {k: v for k, v in single.items() if isinstance(v, (int, float))}
        assert {k: distributed[k] for k in numbers} == numbers, name
        assert "exact" in numbers and "f1" in numbers and numbers["loss"] > 0
        # Rank 1 gets the same numbers (broadcast), for the same early-stopping decision.
        assert other[name]["distributed"] == numbers, name
        assert other[name]["single"] is None
    assert "HasAns_exact" in main["v2-batch16"]["distributed"]


@pytest.mark.parametrize("failing_rank", [1, 0])
def test_a_rank_that_raises_takes_the_job_down(tmp_path, failing_rank):
    started = time.perf_counter()
    proc = torchrun("raise", tmp_path, failing_rank, timeout=90)
    elapsed = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"ValueError: deliberate failure on rank {failing_rank}" in output
    survivor = 1 - failing_rank
    # The other rank was running (busy for 120 s) and was stopped well before that.
    assert (tmp_path / f"busy{survivor}").exists()
    assert not (tmp_path / f"survived{survivor}").exists()
    assert elapsed < 60, f"took {elapsed:.0f} s"


def run_weights(run_dir: Path) -> dict:
    from qa_core import checkpoint as ckpt

    return ckpt.load_latest_checkpoint(run_dir)["model"]


def records_without_timing(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "timing"} for line in lines]


@pytest.fixture(scope="module")
def two_rank_runs(tiny_bert_dir, tmp_path_factory):
    """One torchrun job (2 ranks) runs: batch 2 x 2 micro-batches; a whole run; the same run
    stopped at step 2 and resumed. See distributed_worker.scenario_train."""
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun("train", out, tiny_bert_dir, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


def test_two_ranks_equal_one_process_with_the_global_batch(two_rank_runs, tiny_bert_dir, tmp_path):
    from distributed_worker import EQUIVALENCE, tiny_run_config
    from qa_core import loop

    out, _ = two_rank_runs
    loop.run(tiny_run_config(tiny_bert_dir, tmp_path, "single", "train.batch_size=8", *EQUIVALENCE))
    ddp, single = out / "runs" / "ddp", tmp_path / "runs" / "single"
    ddp_train = [r for r in records_without_timing(ddp) if r["event"] == "train"]
    single_train = [r for r in records_without_timing(single) if r["event"] == "train"]
    assert len(ddp_train) == len(single_train) == 6  # 21 windows: steps of 8, 8, 5 per epoch
    assert [r["loss"] for r in ddp_train] == pytest.approx([r["loss"] for r in single_train], rel=1e-5)
    assert [r["grad_norm"] for r in ddp_train] == pytest.approx([r["grad_norm"] for r in single_train], rel=1e-5)
    weights_ddp, weights_single = run_weights(ddp), run_weights(single)
    assert set(weights_ddp) == set(weights_single)
    for key in weights_single:
        if key == "qa_outputs.bias":
            # Softmax is shift-invariant: this bias has an exactly-zero true gradient, so
            # Adam only ever sees (and normalises) float rounding noise for it.
            continue
        torch.testing.assert_close(weights_ddp[key], weights_single[key], atol=2e-6, rtol=1e-5,
                                   msg=lambda m: f"{key}: {m}")
    # Only rank 0 wrote files: one metrics line per event, one summary, best/ exported.
    assert (ddp / "summary.json").exists() and (ddp / "best" / "model.safetensors").exists()
    assert [r["event"] for r in records_without_timing(ddp)].count("end") == 1


def test_resumed_two_rank_run_equals_the_uninterrupted_one(two_rank_runs):
    out, stdout = two_rank_runs
    results = rank_results(out)
    for rank in results:
        assert rank["part"] == {"interrupted": True, "run_dir": str(out / "runs" / "part"), "step": 2}
        # Every rank returns the same summary (metrics broadcast, identical early-stopping state).
        assert rank["resumed"]["best"] == rank["whole"]["best"] and rank["resumed"]["steps"] == 6
    whole, part = out / "runs" / "whole", out / "runs" / "part"
    for key, value in run_weights(whole).items():
        assert torch.equal(run_weights(part)[key], value), key
    assert records_without_timing(part) == records_without_timing(whole)
    assert json.loads((part / "summary.json").read_text())["best"] == json.loads((whole / "summary.json").read_text())["best"]
    from qa_core import checkpoint as ckpt

    state = ckpt.load_latest_checkpoint(whole)
    assert state["world_size"] == 2 and len(state["rng_per_rank"]) == 2
    assert stdout.count("resumed from step 2") == 1  # rank 0 prints, rank 1 does not


def test_a_failure_inside_the_loop_stops_every_rank(tiny_bert_dir, tmp_path):
    started = time.perf_counter()
    proc = torchrun("fail_in_loop", tmp_path, tiny_bert_dir, 1, timeout=120)
    elapsed = time.perf_counter() - started
    assert proc.returncode != 0
    assert "FloatingPointError: deliberate failure in the loop on rank 1" in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("survived*"))
    # 50 epochs would take minutes; the job ends within seconds of the failure.
    assert elapsed < 60, f"took {elapsed:.0f} s"


def test_resume_with_another_process_count_is_refused(two_rank_runs):
    from qa_core import loop
    from qa_core.config import ConfigError

    whole = two_rank_runs[0] / "runs" / "whole"
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\), this run has 1; .*--nproc_per_node 2"):
        loop.run(loop.config_for_resume(whole), resume=whole)
