"""Stage-1 pair sampling: distinct captions, full epochs, determinism, rank slicing."""
from collections import Counter

import pytest

from llm2clip.data.pair_schedule import PairSchedule
from llm2clip.data.records import CaptionRecord
from llm2clip.data.text_pairs import TextPair


def make_records(n, captions=3):
    return [CaptionRecord(f"r{i}", [f"r{i} c{j}" for j in range(captions)]) for i in range(n)]


def test_each_epoch_visits_every_record_once_with_two_distinct_captions():
    records = make_records(20) + [CaptionRecord("single", ["only one"]), CaptionRecord("same", ["x", "x"])]
    schedule = PairSchedule(records, global_batch_size=5, seed=3)
    assert schedule.skipped_single_caption == 2 and schedule.steps_per_epoch == 4
    for epoch in range(2):
        seen = Counter()
        for step in range(epoch * 4, epoch * 4 + 4):
            for ex in schedule.global_batch(step):
                owner_a, owner_b = ex.anchor.split()[0], ex.positive.split()[0]
                assert owner_a == owner_b and ex.anchor != ex.positive
                seen[owner_a] += 1
        assert seen == Counter({f"r{i}": 1 for i in range(20)})
    # epochs are shuffled differently
    assert [e.anchor for e in schedule.global_batch(0)] != [e.anchor for e in schedule.global_batch(4)]


def test_batches_depend_only_on_seed_and_step():
    a = PairSchedule(make_records(30), global_batch_size=6, seed=1)
    b = PairSchedule(make_records(30), global_batch_size=6, seed=1)
    c = PairSchedule(make_records(30), global_batch_size=6, seed=2)
    assert [b.global_batch(s) for s in (7, 2, 0)] == [a.global_batch(s) for s in (7, 2, 0)]
    assert a.global_batch(0) != c.global_batch(0)
    anchors = Counter(e.anchor.split()[1] for s in range(50) for e in a.global_batch(s))
    assert set(anchors) == {"c0", "c1", "c2"}  # both orders and all captions get used


def test_rank_slices_concatenate_to_the_global_batch():
    schedule = PairSchedule(make_records(16), global_batch_size=8, seed=0)
    for step in range(3):
        parts = [schedule.local_batch(step, rank, 4) for rank in range(4)]
        assert sum(parts, []) == schedule.global_batch(step)
    with pytest.raises(ValueError, match="does not split"):
        schedule.local_batch(0, 0, 3)


def test_text_pairs_fill_their_share_of_every_batch():
    pairs = [TextPair(f"q{i}", f"p{i}", f"n{i}" if i % 2 else None) for i in range(6)]
    schedule = PairSchedule(make_records(12), text_pairs=pairs, text_pair_ratio=0.25, global_batch_size=8)
    assert (schedule.n_text, schedule.n_caption, schedule.has_negatives) == (2, 6, True)
    used = Counter()
    for step in range(6):
        batch = schedule.global_batch(step)
        assert Counter(e.source for e in batch) == {"caption": 6, "text": 2}
        used.update(e.anchor for e in batch if e.source == "text")
    assert used == Counter({f"q{i}": 2 for i in range(6)})  # two full passes over the pairs


def test_misconfigurations_are_clear():
    with pytest.raises(ValueError, match="cannot fill a batch of 8"):
        PairSchedule(make_records(5), global_batch_size=8)
    with pytest.raises(ValueError, match="needs text pairs"):
        PairSchedule(make_records(5), text_pair_ratio=0.5, global_batch_size=2)
