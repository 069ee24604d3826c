"""Tokenised tables, fixed-shape batches, host sharding and iterator save/restore."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsc.data import hh_rlhf, pipeline
from lsc.data.hh_rlhf import Demonstration, Pair
from lsc.data.tokenizer import TruncationStats

from data_fixtures import WordTokenizer

WORDS = "Human: Assistant: a b c d e f g h x y z".split()
# ids: pad 0, eos 1, unk 2, Human: 3, Assistant: 4, a 5, b 6, c 7, ..., x 13, y 14, z 15
PAIRS = [Pair("\n\nHuman: a b\n\nAssistant:", "x y", "z"),
         Pair("\n\nHuman: c\n\nAssistant:", "x y z w", "y")]


def test_pairwise_table_padding_and_truncation():
    data = pipeline.tokenize_pairs(PAIRS, WordTokenizer(WORDS), prompt_len=4, response_len=3)
    np.testing.assert_array_equal(data.arrays["prompt"], [[3, 5, 6, 4], [0, 3, 7, 4]])
    np.testing.assert_array_equal(data.arrays["chosen"], [[13, 14, 1], [13, 14, 15]])
    np.testing.assert_array_equal(data.arrays["rejected"], [[15, 1, 0], [14, 1, 0]])
    np.testing.assert_array_equal(data.arrays["valid"], [1, 1])
    assert all(a.dtype == np.int32 for a in data.arrays.values())
    assert data.stats == TruncationStats(examples=2, prompts_truncated=0, responses_truncated=1,
                                         examples_truncated=1)


def test_pointwise_sft_and_prompt_tables():
    tok = WordTokenizer(WORDS)
    point = pipeline.tokenize_pointwise(pipeline.pointwise_from_pairs(PAIRS), tok, 3, 2)
    np.testing.assert_array_equal(point.arrays["prompt"], [[5, 6, 4]] * 2 + [[3, 7, 4]] * 2)
    np.testing.assert_array_equal(point.arrays["response"], [[13, 14], [15, 1], [13, 14], [14, 1]])
    np.testing.assert_array_equal(point.arrays["label"], [1, 0, 1, 0])
    assert point.stats.prompts_truncated == 2 and point.stats.responses_truncated == 2
    with pytest.raises(ValueError, match="labels must be integers"):
        pipeline.tokenize_pointwise([("p", "r", 0.5)], tok, 3, 2)

    sft = pipeline.tokenize_sft([Demonstration(PAIRS[1].prompt, "z y")], tok, 5, 4)
    np.testing.assert_array_equal(sft.arrays["prompt"], [[0, 0, 3, 7, 4]])
    np.testing.assert_array_equal(sft.arrays["response"], [[15, 14, 1, 0]])

    prompts = [PAIRS[0].prompt, PAIRS[1].prompt, PAIRS[0].prompt]
    table = pipeline.tokenize_prompts(prompts, tok, 4)
    ids = [hh_rlhf.prompt_id(p) for p in prompts]
    np.testing.assert_array_equal(table.arrays["prompt_id"], ids)
    assert ids[0] == ids[2] != ids[1]
    assert set(table.arrays) == {"prompt", "prompt_id", "valid"}


def test_prompt_id_collisions_are_resolved_deterministically(monkeypatch):
    monkeypatch.setattr(hh_rlhf, "prompt_id", lambda prompt: 2**31 - 2)
    prompts = ["p0", "p1", "p2", "p1"]
    ids = pipeline.assign_prompt_ids(prompts)
    assert ids[1] == ids[3]
    assert sorted(set(ids.tolist())) == [0, 2**31 - 2, 2**31 - 1]
    assert pipeline.assign_prompt_ids(list(reversed(prompts))).tolist() == ids[::-1].tolist()


def table(n: int, kind: str = "prompts") -> pipeline.TokenizedData:
    """A table whose row i is recognisable: prompt [i+1, i+1], prompt_id i."""
    arrays = {"prompt": np.repeat(np.arange(1, n + 1, dtype=np.int32)[:, None], 2, axis=1),
              "prompt_id": np.arange(n, dtype=np.int32), "valid": np.ones(n, np.int32)}
    return pipeline.TokenizedData(kind, arrays, 0, TruncationStats(examples=n))


def ids_of(batches) -> list[list[int]]:
    return [b["prompt_id"].tolist() for b in batches]


def take(it, k):
    return [next(it) for _ in range(k)]


def test_epochs_are_seeded_permutations():
    data = table(10)
    batches = take(pipeline.batch_iterator(data, 5, seed=3), 6)
    for b in batches:
        assert set(b) == {"prompt", "prompt_id", "valid"}
        assert b["prompt"].shape == (5, 2) and b["prompt"].dtype == np.int32
        np.testing.assert_array_equal(b["prompt"][:, 0], b["prompt_id"] + 1)
    epochs = [sum(ids_of(batches[i:i + 2]), []) for i in (0, 2, 4)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] and epochs[0] != list(range(10))
    assert ids_of(take(pipeline.batch_iterator(data, 5, seed=3), 6)) == ids_of(batches)
    assert ids_of(take(pipeline.batch_iterator(data, 5, seed=4), 6)) != ids_of(batches)


def test_finite_unshuffled_pads_last_batch():
    batches = list(pipeline.batch_iterator(table(10), 4, shuffle=False, num_epochs=1))
    assert ids_of(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, -1, -1]]
    np.testing.assert_array_equal(batches[-1]["valid"], [1, 1, 0, 0])
    np.testing.assert_array_equal(batches[-1]["prompt"], [[9, 9], [10, 10], [0, 0], [0, 0]])
    dropped = list(pipeline.batch_iterator(table(10), 4, shuffle=False, num_epochs=1,
                                           drop_remainder=True))
    assert ids_of(dropped) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    two = list(pipeline.batch_iterator(table(3), 2, shuffle=False, num_epochs=2))
    assert ids_of(two) == [[0, 1], [2, 0], [1, 2]]


def test_host_shards_are_disjoint_and_equal_length():
    data, count = table(10), 3
    seen = []
    for host in range(count):
        batches = list(pipeline.batch_iterator(data, 2, seed=1, num_epochs=1,
                                               process_index=host, process_count=count))
        assert len(batches) == 2  # ceil(10 / 3) = 4 rows per host, padded
        real = [i for b in batches for i, v in zip(b["prompt_id"], b["valid"]) if v]
        assert all(i % count == host for i in real)
        seen += real
    assert sorted(seen) == list(range(10))


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("stop", [0, 1, 3, 7, 13])
def test_restored_iterator_continues_exactly(prefetch, stop):
    data = table(7)
    kwargs = dict(seed=11, prefetch=prefetch, process_index=1, process_count=2)
    reference = ids_of(take(pipeline.batch_iterator(data, 3, **kwargs), stop + 6))
    it = pipeline.batch_iterator(data, 3, **kwargs)
    assert ids_of(take(it, stop)) == reference[:stop]
    state = json.loads(json.dumps(it.get_state()))
    del it
    restored = pipeline.batch_iterator(data, 3, **kwargs)
    restored.set_state(state)
    assert ids_of(take(restored, 6)) == reference[stop:]


def test_restore_of_finite_stream_ends_at_the_same_point():
    data = table(9)
    reference = ids_of(pipeline.batch_iterator(data, 2, seed=5, num_epochs=2))
    it = pipeline.batch_iterator(data, 2, seed=5, num_epochs=2)
    first = ids_of(take(it, 4))
    restored = pipeline.batch_iterator(data, 2, seed=5, num_epochs=2)
    restored.set_state(it.get_state())
    assert first + ids_of(restored) == reference
    assert len(reference) == 9  # 18 rows in 2-row batches


def test_state_from_another_pipeline_is_rejected():
    it = pipeline.batch_iterator(table(10), 4, seed=1)
    next(it)
    state = it.get_state()
    other = pipeline.batch_iterator(table(10), 4, seed=2)
    with pytest.raises(ValueError, match="different pipeline.*'seed': \\(1, 2\\)"):
        other.set_state(state)
    changed = pipeline.batch_iterator(table(11), 4, seed=1)
    with pytest.raises(ValueError, match="'examples': \\(10, 11\\)"):
        changed.set_state(state)
    with pytest.raises(ValueError, match="'grain' and 'pipeline'"):
        other.set_state({"next_index": 3})


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=0), "batch_size"),
    (dict(process_index=2, process_count=2), "process_index"),
    (dict(num_epochs=0), "num_epochs"),
    (dict(process_index=3, process_count=4, num_epochs=None, n=3), "no examples"),
])
def test_bad_iterator_arguments(kwargs, message):
    n = kwargs.pop("n", 10)
    kwargs.setdefault("batch_size", 2)
    with pytest.raises(ValueError, match=message):
        pipeline.batch_iterator(table(n), **kwargs)


def test_state_round_trips_through_an_orbax_checkpoint(tmp_path):
    import orbax.checkpoint as ocp

    data = table(9)
    reference = ids_of(take(pipeline.batch_iterator(data, 4, seed=2), 8))
    it = pipeline.batch_iterator(data, 4, seed=2)
    take(it, 5)
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        manager.save(5, args=ocp.args.Composite(data=ocp.args.JsonSave(it.get_state())))
        manager.wait_until_finished()
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        saved = manager.restore(5, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    restored = pipeline.batch_iterator(data, 4, seed=2)
    restored.set_state(saved["data"])
    assert ids_of(take(restored, 3)) == reference[5:]
