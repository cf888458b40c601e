"""Several processes, one training run: torchrun's environment, the process group, DDP, and
evaluation sharded across ranks.

Launched as `torchrun --nproc_per_node N train.py ...`, every process runs the same loop on its
slice of each global batch; DistributedDataParallel all-reduces the gradients. Launched plainly
(no WORLD_SIZE, or WORLD_SIZE=1) everything here is a no-op: one process, no process group, the
model unwrapped, and evaluate_distributed() is evaluation.evaluate().

A rank that raises exits non-zero and torchrun stops the other ranks; the process group's
timeout (QA_CORE_DIST_TIMEOUT_S, default 30 min) bounds any collective that waits on a rank
that is alive but stuck.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from qa_core.collate import QACollator
from qa_core.evaluation import evaluate, eval_batches, forward_batches, logit_buffers, scores_from_logits

DEFAULT_TIMEOUT_S = 1800  # a rank-0-only checkpoint or evaluation of a big model can take minutes


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in the job. world_size == 1: a plain single-process run."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when init_distributed created the process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def launcher(self) -> str:
        """How to start this job again with the same process count (resume needs it)."""
        return f"torchrun --nproc_per_node {self.world_size}" if self.enabled else "python"

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """rank `src`'s obj, on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        holder = [obj if self.rank == src else None]
        dist.broadcast_object_list(holder, src=src, device=self._comm_device)
        return holder[0]

    def gather_object(self, obj: Any, dst: int = 0) -> list | None:
        """[obj of rank 0, obj of rank 1, ...] on rank `dst`, None elsewhere."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, gathered, dst=dst)
        return gathered

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (tensor on this rank's device); returned for chaining."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around `model` (keep the raw model for saving and evaluation); the model
        itself in a single process. Every trainable parameter must get a gradient at every
        step (find_unused_parameters=False: no extra graph traversal)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)

    @contextlib.contextmanager
    def main_stdout_only(self):
        """Other ranks print nothing (stderr, with warnings and tracebacks, is kept)."""
        if self.is_main:
            yield
            return
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield

    def wait_for_all(self) -> None:
        """A barrier at the end of normal work: a rank that finishes early and tears its process
        group down while another rank still works made gloo abort the process ("terminate called
        without an active exception") in about 1 run in 4 of the distributed evaluation test."""
        if self.enabled and dist.is_initialized():
            dist.barrier()

    def shutdown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device | None:
        # NCCL moves pickled objects through the GPU; gloo through the CPU.
        return self.device if self.device.type == "cuda" else None


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device | str = "cpu", timeout_s: float | None = None) -> DistributedContext:
    """The context of this process: from torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or a
    single process. `device` is the configured device ("cpu", "cuda", "auto" or a
    torch.device); under torchrun, CUDA becomes cuda:LOCAL_RANK. An existing process group
    (e.g. created by a test or a notebook) is reused and left open."""
    device = _resolve(device)
    if not launched_by_torchrun():
        return DistributedContext(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        # A collective that times out aborts this process (so torchrun stops the job)
        # instead of leaving it blocked.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    owns_group = not dist.is_initialized()
    if owns_group:
        timeout = timeout_s or float(os.environ.get("QA_CORE_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout),
                                **({"device_id": device} if device.type == "cuda" else {}))
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise RuntimeError(f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match "
                           f"torchrun's RANK={rank} WORLD_SIZE={world_size}")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                              owns_group=owns_group)


def _resolve(device: torch.device | str) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def no_sync_unless_last(model: torch.nn.Module, is_last: bool):
    """Around the forward and backward of a micro-batch: only the last micro-batch of an
    optimizer step all-reduces (DDP sums the gradients accumulated locally until then)."""
    if is_last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def global_step_windows(global_batch_sizes: Sequence[int], first: int, accum: int) -> int:
    """Windows of one optimizer step across all ranks: the global batches first ..
    first + accum - 1 (every rank knows them from sampler.global_batches(), no communication)."""
    return int(sum(global_batch_sizes[first:first + accum]))


def evaluate_distributed(ctx: DistributedContext, model, windows, examples: Sequence, *, batch_size: int = 64,
                         device="cpu", autocast_dtype=None, n_best: int = 20, max_answer_length: int = 30,
                         version_2: bool = False, null_threshold: float = 0.0, collator=None,
                         progress: bool = False, piece_size: int = 0) -> dict:
    """evaluation.evaluate() with the forward pass split across ranks.

    The length-sorted batches are exactly evaluate()'s, dealt round-robin to the ranks, so
    every window meets the same batch (same padding) as in one process: the logits, and so
    every metric, are identical. Rank 0 gathers the logits into the full [N, L] arrays in
    window order, sums the batch losses in evaluate()'s order, and runs the same scoring.
    Every rank returns the numeric results (broadcast from rank 0, for identical
    early-stopping decisions); rank 0 also gets predictions and timings."""
    kwargs = dict(n_best=n_best, max_answer_length=max_answer_length, version_2=version_2,
                  null_threshold=null_threshold)
    if not ctx.enabled:
        return evaluate(model, windows, examples, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype,
                        collator=collator, progress=progress, piece_size=piece_size, **kwargs)
    if len(windows) == 0:
        raise ValueError("no windows to evaluate: build them from the examples with features.build_windows")
    collator = collator or QACollator(windows, use_token_type_ids=model.uses_token_type_ids)
    t0 = time.perf_counter()
    batches = eval_batches(windows.lengths, batch_size)
    mine = batches[ctx.rank::ctx.world_size]
    width = int(np.max(windows.lengths))
    local_start, local_end = logit_buffers(sum(len(b) for b in mine), width)
    bounds = np.cumsum([0] + [len(b) for b in mine])
    local_rows = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(mine))]
    was_training = model.training
    model.eval()
    try:
        local_losses = forward_batches(model, mine, collator, local_start, local_end, rows=local_rows,
                                       device=torch.device(device), autocast_dtype=autocast_dtype,
                                       progress=progress and ctx.is_main, piece_size=piece_size)
    finally:
        model.train(was_training)
    gathered = ctx.gather_object((local_start, local_end, local_losses))
    t1 = time.perf_counter()

    numbers = None
    if ctx.is_main:
        start, end = logit_buffers(len(windows), width)
        batch_losses = [0.0] * len(batches)
        for rank, (rank_start, rank_end, rank_losses) in enumerate(gathered):
            rank_batches = batches[rank::ctx.world_size]
            rows = np.concatenate(rank_batches) if rank_batches else np.zeros(0, np.int64)
            start[rows], end[rows] = rank_start, rank_end
            batch_losses[rank::ctx.world_size] = rank_losses
        del gathered
        result = scores_from_logits(start, end, batch_losses, windows, examples, **kwargs)
        result["timings"].update(forward_s=t1 - t0, windows_per_s=len(windows) / max(t1 - t0, 1e-9))
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    numbers = ctx.broadcast_object(numbers)
    return result if ctx.is_main else numbers

