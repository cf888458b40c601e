"""Resumable checkpoints: atomic writes, keep-last-N, every RNG state."""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same directory, fsync, then rename: a crash mid-write
    never leaves a truncated checkpoint under the real name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, state: dict, keep_last: int) -> Path:
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"checkpoint-{step}.pt"
    atomic_torch_save(state, path)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink()
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest_checkpoint(run_dir: Path) -> dict:
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(
            f"no checkpoint to resume from in {Path(run_dir) / 'checkpoints'}; "
            "start a new run without --resume, or point --resume at a run directory that has checkpoints/")
    # Our own files; they hold optimizer state and RNG tuples, so full unpickling is needed.
    return torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
