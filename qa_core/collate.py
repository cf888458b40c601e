"""Batches of windows: a length-grouped batch sampler and a collator that pads to the batch's longest.

Sampler, per epoch (rng = np.random.default_rng((seed, epoch))):
  1. permute all window indices (or keep them in order when shuffle=False);
  2. cut the order into mega-batches of `global_batch * mega_batch_mult` indices and sort each by
     length, longest first, so a batch holds windows of similar length (little padding);
  3. cut into global batches of `batch_size * num_replicas` indices; only the very last one can be
     short (the ragged tail); drop_last drops it;
  4. shuffle the batch order, then move the batch holding the longest window to the front so an
     out-of-memory error shows at the first step, not hours in;
  5. rank r takes `global_batch[r::num_replicas]`: ranks get windows of similar length and every
     index is used exactly once per epoch, none repeated.
The ragged tail (when kept) is split the same way, so ranks get batches whose sizes differ by at
most one; when the tail has fewer windows than replicas, some ranks get an empty list for that
step (every rank still takes the same number of steps; the loop must skip empty batches).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from qa_core.features import Windows


class LengthGroupedBatchSampler:
    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, *, seed: int, shuffle: bool = True,
                 group_by_length: bool = True, mega_batch_mult: int = 50, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0):
        if batch_size < 1 or mega_batch_mult < 1:
            raise ValueError(f"batch_size ({batch_size}) and mega_batch_mult ({mega_batch_mult}) must be >= 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.mega_batch_mult = mega_batch_mult
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def __len__(self) -> int:
        n, size = len(self.lengths), self.global_batch_size
        return n // size if self.drop_last else -(-n // size)

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's batches across all replicas, before the split by rank."""
        rng = np.random.default_rng((self.seed, self.epoch))
        n, size = len(self.lengths), self.global_batch_size
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.group_by_length:
            mega = size * self.mega_batch_mult
            chunks = [order[i:i + mega] for i in range(0, n, mega)]
            # Stable sort: equal lengths keep their shuffled order.
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks]) if n else order
        batches = [order[i:i + size] for i in range(0, n, size)]
        if self.drop_last and batches and len(batches[-1]) < size:
            batches.pop()
        if self.shuffle and len(batches) > 1:
            batches = [batches[i] for i in rng.permutation(len(batches))]
            if self.group_by_length:
                longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b]].max())
                batches.insert(0, batches.pop(longest))
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield batch[self.rank::self.num_replicas].tolist()


class QACollator:
    """indices -> dict of tensors, padded to the longest window in the batch (optionally rounded
    up to a multiple, e.g. 8 for tensor cores)."""

    def __init__(self, windows: Windows, *, use_token_type_ids: bool, pad_to_multiple_of: int | None = None):
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.windows = windows
        self.use_token_type_ids = use_token_type_ids
        self.pad_to_multiple_of = pad_to_multiple_of

    def padded_length(self, indices: np.ndarray) -> int:
        longest = int(self.windows.lengths[indices].max()) if len(indices) else 0
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return longest

    def __call__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        width = self.padded_length(indices)
        stored = min(width, self.windows.input_ids.shape[1])
        # Rows are already padded with pad_token_id up to L; only a multiple past L needs more.
        input_ids = np.full((len(indices), width), self.windows.pad_token_id, dtype=np.int64)
        input_ids[:, :stored] = self.windows.input_ids[indices, :stored]
        attention_mask = (np.arange(width)[None, :] < self.windows.lengths[indices][:, None]).astype(np.int64)
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "start_positions": torch.from_numpy(self.windows.start_positions[indices].astype(np.int64)),
            "end_positions": torch.from_numpy(self.windows.end_positions[indices].astype(np.int64)),
            "window_index": torch.from_numpy(indices.copy()),
        }
        if self.use_token_type_ids:
            token_type_ids = np.zeros((len(indices), width), dtype=np.int64)
            token_type_ids[:, :stored] = self.windows.token_type_ids[indices, :stored]
            batch["token_type_ids"] = torch.from_numpy(token_type_ids)
        return batch
