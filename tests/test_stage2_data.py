"""Stage-2 data plumbing: caption choice, image-path containment, batch plans."""
from collections import Counter

import pytest

from llm2clip.data.batch_plan import BatchPlan
from llm2clip.data.caption_choice import CaptionChoice
from llm2clip.data.errors import DataError
from llm2clip.data.image_paths import resolve_image_path


def test_caption_choice_hits_the_dense_ratio_and_is_deterministic():
    choice = CaptionChoice(("raw_caption",), ("longSV", "longIB"), dense_ratio=0.3, seed=1)
    available = {"raw_caption", "longSV", "longIB"}
    picks = [choice.pick(available, i, epoch=0) for i in range(4000)]
    counts = Counter(picks)
    assert abs(counts["raw_caption"] / 4000 - 0.7) < 0.03
    assert abs(counts["longSV"] - counts["longIB"]) < 150  # dense captions drawn evenly
    assert picks == [choice.pick(available, i, epoch=0) for i in range(4000)]
    assert picks != [choice.pick(available, i, epoch=1) for i in range(4000)]  # epochs differ


def test_caption_choice_falls_back_and_understands_list_fields():
    choice = CaptionChoice(("caption",), ("dense",), dense_ratio=1.0)
    assert choice.pick({"caption.0", "caption.1"}, 0) in {"caption.0", "caption.1"}  # no dense: real
    assert choice.pick({"other"}, 0) is None
    with pytest.raises(ValueError, match="dense_ratio"):
        CaptionChoice(("a",), dense_ratio=1.5)


def test_caption_choice_needs_a_field_of_either_kind_and_starts_at_epoch_0():
    with pytest.raises(ValueError) as err:
        CaptionChoice((), ())
    assert str(err.value) == "stage 2 needs at least one caption field (data.real_fields / data.dense_fields)"
    dense_only = CaptionChoice((), ("dense",), dense_ratio=0.0)  # no real field: dense is the fallback
    assert {dense_only.pick({"dense", "caption"}, i) for i in range(50)} == {"dense"}
    choice = CaptionChoice(("caption.0", "caption.1"), ("dense",), seed=3)
    available = {"caption.0", "caption.1", "dense"}
    assert [choice.pick(available, i) for i in range(200)] == [choice.pick(available, i, epoch=0) for i in range(200)]


def test_image_paths_cannot_leave_their_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    assert resolve_image_path(root, "a/b.jpg", "row 1") == (root / "a/b.jpg").resolve()
    for bad in ("../secret.jpg", "a/../../secret.jpg", "/etc/passwd"):
        with pytest.raises(DataError, match="leaves the image root"):
            resolve_image_path(root, bad, "row 3")
    with pytest.raises(DataError, match="row 4: empty image path"):
        resolve_image_path(root, " ", "row 4")


def test_batch_plan_covers_each_epoch_once_and_slices_by_rank():
    plan = BatchPlan(n=23, global_batch_size=6, seed=0)
    assert plan.steps_per_epoch == 3
    epoch = sum((plan.global_indices(s) for s in range(3)), [])
    assert len(set(epoch)) == 18  # 5 dropped: the last partial batch
    for step in range(5):
        assert sum((plan.local_indices(step, r, 3) for r in range(3)), []) == plan.global_indices(step)
    assert plan.global_indices(3) != plan.global_indices(0) and plan.epoch_of(3) == 1
    with pytest.raises(ValueError, match="cannot fill"):
        BatchPlan(n=3, global_batch_size=6)
