"""Stage-2 data from webdataset shards (img2dataset layout): records for `embed`, the
split across ranks and workers, counted skips, and resume = no resume."""
import io
import itertools
import json
from pathlib import Path

import pytest
import torch
import webdataset as wds
from helpers import last_checkpoint_weights, logged_losses
from PIL import Image
from test_stage2 import Killed, config, write_dataset
from torch.utils.data import DataLoader

from llm2clip.cli import main as cli_main
from llm2clip.data.caption_choice import CaptionChoice
from llm2clip.data.webdataset_source import (WebDatasetStream, as_is, expand_shards, iter_shard, read_webdataset_records,
                                             sample_captions, shard_captions)
from llm2clip.train.stage2 import train_stage2


def write_shards(tmp_path: Path, per_shard: int = 4, unsafe: bool = True) -> tuple[str, list[dict]]:
    """The stage-2 test rows as shards: png + txt (real caption) + json (longSV), plus a
    sample with a corrupt image and one whose key climbs out of its folder."""
    _, rows = write_dataset(tmp_path / "src")
    samples = []
    for row in rows:
        buffer = io.BytesIO()
        Image.open(tmp_path / "src" / row["image"]).save(buffer, format="PNG")
        samples.append({"__key__": row["id"], "png": buffer.getvalue(), "txt": row["raw_caption"],
                        "json": json.dumps({"key": row["id"], "longSV": row["longSV"]})})
    samples.insert(5, {"__key__": "corrupt", "png": b"not a png", "txt": "corrupt"})
    if unsafe:
        samples.insert(9, {"__key__": "../escape", "png": samples[0]["png"], "txt": "escape"})
    (tmp_path / "shards").mkdir()
    n_shards = -(-len(samples) // per_shard)
    for s in range(n_shards):
        with wds.TarWriter(str(tmp_path / "shards" / f"{s:05d}.tar")) as sink:
            for sample in samples[s * per_shard:(s + 1) * per_shard]:
                sink.write(sample)
    return str(tmp_path / "shards" / f"{{00000..{n_shards - 1:05d}}}.tar"), rows


def stream_config(tmp_path, tiny_visions, stage1_folder, shards, **train):
    cfg = config(tmp_path, tiny_visions, stage1_folder, **train)
    cfg.data.train, cfg.data.train_shards = "", shards
    cfg.data.real_fields = ["caption"]
    return cfg


@pytest.fixture(scope="module")
def stage1_folder(trained_stage1_folder):
    """A LoRA with non-zero B and dropout 0.1: a stage-2 path that dropped the adapter or
    left the frozen encoder in train mode gives other numbers (conftest.py)."""
    return trained_stage1_folder


def test_records_from_shards_match_the_jsonl_rows(tmp_path, caplog):
    shards, rows = write_shards(tmp_path)
    records = {r.id: r.caption_by_source() for r in read_webdataset_records(shards, caption_fields=["caption", "longSV"])}
    assert "left out 1 samples whose key leaves the shard's folder" in caplog.text and "../escape" not in records
    assert records.pop("corrupt") == {"caption": "corrupt"}  # images are not decoded for embedding
    assert records == {r["id"]: {"caption": r["raw_caption"], "longSV": r["longSV"]} for r in rows}


def test_the_caption_pre_pass_reads_what_training_reads_from_files_and_pipes(tmp_path):
    shards, _ = write_shards(tmp_path)
    urls = expand_shards(shards)
    full = [(s["__key__"], sample_captions(s)) for url in urls for s in iter_shard(url) if s["__key__"] != "../escape"]
    assert list(shard_captions(urls)) == full  # local files: the image members are seeked over
    assert list(shard_captions([f"pipe:cat {url}" for url in urls])) == full  # streams: read past
    in_parallel = list(shard_captions(urls, workers=2))  # shards interleaved across worker processes
    assert sorted(in_parallel, key=lambda pair: pair[0]) == sorted(full, key=lambda pair: pair[0])


def test_every_shard_is_read_once_per_epoch_across_ranks_and_workers(tmp_path):
    shards, _ = write_shards(tmp_path, per_shard=1)
    choice = CaptionChoice(("caption",), ("longSV",))
    streams = [WebDatasetStream(shards, None, choice, batch_size=1, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        taken = [url for s in streams for w in range(3) for url in s._epoch_shards(epoch, w, 3)]
        assert sorted(taken) == sorted(streams[0].shards)  # each shard exactly once
    assert streams[0]._epoch_shards(0, 0, 1) != streams[0]._epoch_shards(1, 0, 1)  # reshuffled per epoch


@pytest.mark.parametrize("shuffle_buffer", [0, 8])
@pytest.mark.parametrize("workers", [0, 2])
def test_skipping_batches_resumes_the_exact_stream(tmp_path, workers, shuffle_buffer):
    shards, _ = write_shards(tmp_path, per_shard=3)
    choice = CaptionChoice(("caption",), ("longSV",))

    def batches(skip, n):
        stream = WebDatasetStream(shards, lambda images: torch.zeros(len(images), 3, 4, 4), choice, batch_size=4,
                                  skip_batches=skip, shuffle_buffer=shuffle_buffer)
        loader = iter(DataLoader(stream, batch_size=None, collate_fn=as_is, num_workers=workers))
        return [(b["ids"], b["sources"], b["skipped"]) for b in (next(loader) for _ in range(n))]

    full = batches(0, 8)
    assert batches(3, 5) == full[3:]
    skipped = {reason.split(":")[0] for b in full for _, reason in b[2]}
    assert {"ImageError", "DataError"} <= skipped  # the corrupt image and the escaping key


def test_the_shuffle_buffer_changes_the_batches_every_epoch_and_follows_the_seed(tmp_path):
    shards, _ = write_shards(tmp_path, per_shard=6)  # 18 samples: 3 shards of 6, batches of 6
    choice = CaptionChoice(("caption",), ("longSV",))

    def batches(seed, shuffle_buffer, epochs=2):
        stream = WebDatasetStream(shards, lambda images: torch.zeros(len(images), 3, 4, 4), choice, batch_size=6,
                                  seed=seed, shuffle_buffer=shuffle_buffer)
        return [frozenset(b["ids"] + [i for i, _ in b["skipped"]]) for b in itertools.islice(stream, 3 * epochs)]

    # without the buffer each batch is one shard, so every epoch has the same in-batch negatives
    plain = batches(0, 0)
    assert set(plain[:3]) == set(plain[3:])
    shuffled = batches(0, 12)
    assert not set(shuffled[:3]) & set(shuffled[3:])  # epoch 1 repeats none of epoch 0's batches
    assert set().union(*shuffled[:3]) == set().union(*shuffled[3:]) == set().union(*plain)  # each sample once
    assert batches(0, 12) == shuffled and batches(1, 12) != shuffled  # a function of the seed


@pytest.mark.slow
def test_stage2_streams_shards_and_resume_equals_no_resume(tmp_path, tiny_visions, stage1_folder, monkeypatch):
    from llm2clip.train import loop as loop_mod

    shards, _ = write_shards(tmp_path)
    store = tmp_path / "store"
    assert cli_main(["embed", "--model", stage1_folder, "--data", shards, "--fields", "caption", "longSV",
                     "--out", str(store), "--dtype", "fp32"]) == 0
    straight = stream_config(tmp_path / "a", tiny_visions, stage1_folder, shards, max_steps=6, save_every=2)
    crashed = stream_config(tmp_path / "b", tiny_visions, stage1_folder, shards, max_steps=6, save_every=2)
    for cfg in (straight, crashed):
        cfg.data.embeddings, cfg.data.num_workers = str(store), 2
    summary = train_stage2(straight)
    assert summary["skipped"]["ImageError"] >= 1 and summary["skipped"]["DataError"] >= 1
    real_check = loop_mod.check_finite

    def crash_at_step_5(value, step, out):
        if step == 4:
            raise Killed()
        real_check(value, step, out)

    monkeypatch.setattr(loop_mod, "check_finite", crash_at_step_5)
    with pytest.raises(Killed):
        train_stage2(crashed)
    monkeypatch.setattr(loop_mod, "check_finite", real_check)
    train_stage2(crashed, resume=True)
    a, b = Path(straight.train.output_dir), Path(crashed.train.output_dir)
    assert logged_losses(b) == pytest.approx(logged_losses(a), abs=1e-6) and len(logged_losses(b)) == 6
    wa, wb = last_checkpoint_weights(a), last_checkpoint_weights(b)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-6, rtol=0)


def test_streamed_shards_need_a_length_or_max_steps(tmp_path, tiny_visions, stage1_folder):
    shards, _ = write_shards(tmp_path)
    cfg = stream_config(tmp_path, tiny_visions, stage1_folder, shards)
    cfg.train.max_steps = None
    with pytest.raises(ValueError, match="samples_per_epoch"):
        train_stage2(cfg)
