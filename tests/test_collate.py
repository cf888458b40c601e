"""Length-grouped sampler (determinism, coverage, sharding) and the padding collator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qa_core.collate import LengthGroupedBatchSampler, QACollator
from qa_core.data import QAExample, read_examples
from qa_core.features import Windows, build_windows


def epoch_batches(lengths, batch_size, epoch=0, **kwargs):
    sampler = LengthGroupedBatchSampler(lengths, batch_size, **kwargs)
    sampler.set_epoch(epoch)
    return list(sampler)


def padding_efficiency(lengths, batches):
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return real / padded


@pytest.fixture(scope="module")
def xquad_lengths(xquad_path, minilm_tokenizer):
    examples = read_examples(xquad_path).examples
    return build_windows(examples, minilm_tokenizer, max_seq_length=384, doc_stride=128).lengths


LENGTHS = np.random.default_rng(0).integers(20, 385, size=1003)


def test_same_seed_and_epoch_give_the_same_order_and_others_differ():
    a = epoch_batches(LENGTHS, 16, seed=5, epoch=2)
    assert a == epoch_batches(LENGTHS, 16, seed=5, epoch=2)
    assert a != epoch_batches(LENGTHS, 16, seed=5, epoch=3)
    assert a != epoch_batches(LENGTHS, 16, seed=6, epoch=2)


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_exactly_once_per_epoch(group_by_length, shuffle):
    batches = epoch_batches(LENGTHS, 16, seed=1, shuffle=shuffle, group_by_length=group_by_length)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(LENGTHS)))
    assert len(batches) == len(LengthGroupedBatchSampler(LENGTHS, 16, seed=1)) == 63
    assert sorted(len(b) for b in batches)[0] == 1003 - 62 * 16  # only the tail is short


@pytest.mark.parametrize("num_replicas", [2, 3, 4])
def test_replicas_share_the_epoch_without_repeats(num_replicas):
    per_rank = [epoch_batches(LENGTHS, 8, epoch=1, seed=3, num_replicas=num_replicas, rank=r)
                for r in range(num_replicas)]
    flat = [i for batches in per_rank for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    steps = {len(batches) for batches in per_rank}
    assert steps == {len(LengthGroupedBatchSampler(LENGTHS, 8, seed=3, num_replicas=num_replicas))}
    # Step k of every rank comes from the same global batch: sizes differ by at most one.
    for step in zip(*per_rank):
        sizes = [len(b) for b in step]
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= 8


def test_tail_smaller_than_the_replicas_gives_empty_batches_not_repeats():
    lengths = np.arange(1, 10)  # 9 windows, global batch 2 * 4 = 8: a tail of one
    per_rank = [epoch_batches(lengths, 2, seed=0, num_replicas=4, rank=r) for r in range(4)]
    assert [len(batches) for batches in per_rank] == [2, 2, 2, 2]
    step_sizes = sorted(sorted(len(b) for b in step) for step in zip(*per_rank))
    assert step_sizes == [[0, 0, 0, 1], [2, 2, 2, 2]]
    assert sorted(i for batches in per_rank for b in batches for i in b) == list(range(9))


def test_drop_last_drops_only_the_ragged_tail():
    batches = epoch_batches(LENGTHS, 16, seed=1, drop_last=True)
    assert len(batches) == len(LengthGroupedBatchSampler(LENGTHS, 16, seed=1, drop_last=True)) == 62
    assert all(len(b) == 16 for b in batches)
    assert len(set(np.concatenate(batches).tolist())) == 62 * 16
    sharded = [epoch_batches(LENGTHS, 8, seed=1, drop_last=True, num_replicas=2, rank=r) for r in range(2)]
    assert all(len(b) == 8 for batches in sharded for b in batches) and len(sharded[0]) == 62


def test_groups_are_sorted_within_mega_batches_and_the_longest_batch_comes_first():
    batches = epoch_batches(LENGTHS, 16, seed=9, mega_batch_mult=4)
    assert LENGTHS[batches[0]].max() == LENGTHS.max()
    for b in batches:
        assert list(LENGTHS[b]) == sorted(LENGTHS[b], reverse=True)
    # Mega-batches of 64: the first mega-batch of this epoch's permutation spans four batches.
    permutation = np.random.default_rng((9, 0)).permutation(len(LENGTHS))
    first_mega = sorted(permutation[:64], key=lambda i: -LENGTHS[i])
    assert sorted(map(tuple, [first_mega[k:k + 16] for k in range(0, 64, 16)])) == sorted(
        tuple(b) for b in batches if set(b) <= set(permutation[:64]))


def test_unshuffled_ungrouped_batches_are_consecutive():
    batches = epoch_batches(LENGTHS, 100, seed=0, shuffle=False, group_by_length=False)
    assert batches[0] == list(range(100)) and batches[-1] == list(range(1000, 1003))


@pytest.mark.parametrize("batch_size", [16, 32])
def test_length_grouping_cuts_padding_on_xquad(xquad_lengths, batch_size):
    random_batches = epoch_batches(xquad_lengths, batch_size, seed=0, group_by_length=False)
    grouped = epoch_batches(xquad_lengths, batch_size, seed=0)
    random_eff, grouped_eff = padding_efficiency(xquad_lengths, random_batches), padding_efficiency(xquad_lengths, grouped)
    assert grouped_eff > 0.9 and grouped_eff > random_eff + 0.15, (random_eff, grouped_eff)


def test_rank_and_sizes_are_validated():
    with pytest.raises(ValueError, match=r"rank must be in \[0, num_replicas=2\), got 2"):
        LengthGroupedBatchSampler(LENGTHS, 4, seed=0, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedBatchSampler(LENGTHS, 0, seed=0)


# ---------------------------------------------------------------------------------------------
# Collator


@pytest.fixture(scope="module")
def windows(minilm_tokenizer) -> Windows:
    context = " ".join(f"word{i}" for i in range(60)) + " the answer is here."
    examples = [QAExample(i, "t", context[: 40 + 30 * i], f"Question number {i}?", (), (), True, 0, 0)
                for i in range(6)]
    examples.append(QAExample("a", "t", context, "Where is it?", ("the answer",), (context.index("the answer"),),
                              False, 0, 0))
    return build_windows(examples, minilm_tokenizer, max_seq_length=60, doc_stride=12, max_query_length=12)


def test_collator_pads_to_the_longest_window_in_the_batch(windows):
    indices = [2, 0, len(windows) - 1]
    batch = QACollator(windows, use_token_type_ids=True)(indices)
    width = int(windows.lengths[indices].max())
    assert batch["input_ids"].shape == (3, width)
    for key in ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions", "window_index"):
        assert batch[key].dtype == torch.long, key
    np.testing.assert_array_equal(batch["input_ids"].numpy(), windows.input_ids[indices, :width])
    np.testing.assert_array_equal(batch["token_type_ids"].numpy(), windows.token_type_ids[indices, :width])
    np.testing.assert_array_equal(batch["attention_mask"].numpy().sum(1), windows.lengths[indices])
    np.testing.assert_array_equal(batch["attention_mask"].numpy(), (windows.input_ids[indices, :width] != 0))
    assert batch["window_index"].tolist() == indices
    assert batch["start_positions"].tolist() == windows.start_positions[indices].tolist()
    assert batch["end_positions"].tolist() == windows.end_positions[indices].tolist()
    assert windows.start_positions[indices[-1]] > 0  # the answer label survives collation


def test_collator_drops_token_type_ids_when_unused(windows):
    batch = QACollator(windows, use_token_type_ids=False)([0, 1])
    assert set(batch) == {"input_ids", "attention_mask", "start_positions", "end_positions", "window_index"}


def test_pad_to_multiple_of_8_even_past_the_stored_length(windows):
    collator = QACollator(windows, use_token_type_ids=True, pad_to_multiple_of=8)
    short = int(np.argmin(windows.lengths))
    batch = collator([short])
    assert batch["input_ids"].shape[1] == -(-int(windows.lengths[short]) // 8) * 8
    longest = int(np.argmax(windows.lengths))
    assert windows.lengths[longest] == 60
    batch = collator([longest])  # 60 rounds up to 64, beyond the stored 60 columns
    assert batch["input_ids"].shape == (1, 64)
    assert (batch["input_ids"][0, 60:] == windows.pad_token_id).all() and batch["attention_mask"][0, 60:].sum() == 0
    assert (batch["token_type_ids"][0, 60:] == 0).all()
