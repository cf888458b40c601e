"""Two CPU processes under torchrun (gloo): sharded evaluation equals one process exactly,
and a rank that raises takes the job down. Each test launches
`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py ...`
(--standalone: a free local port) and reads what the ranks wrote."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"


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
