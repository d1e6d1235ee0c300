"""Offline stage 2 never trains an image against another caption's embedding.

Each case runs the CLI as a user would: `llm2clip embed`, then change the data, then
`llm2clip stage2 --set train.mode=offline`. The truth is the data file itself: every
caption that can be drawn must be the text whose embedding the store holds.
"""
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds
from test_stage2 import write_dataset
from test_webdataset import write_shards

from llm2clip.cli import main as cli_main
from llm2clip.data.webdataset_source import iter_shard

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "stage2" / "tiny.yaml"


@pytest.fixture(scope="module")
def stage1_folder(tiny_llama, tmp_path_factory):
    from llm2clip.text import CaptionEncoder

    folder = tmp_path_factory.mktemp("stage1") / "final"
    CaptionEncoder.from_pretrained(tiny_llama, lora={"r": 4, "alpha": 8, "dropout": 0.0}).save_pretrained(folder)
    return str(folder)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def embed(stage1_folder: str, data, store: Path, *fields: str) -> None:
    assert cli_main(["embed", "--model", stage1_folder, "--data", str(data), "--fields", *fields,
                     "--out", str(store), "--dtype", "fp32"]) == 0


def stage2_args(tiny_visions, stage1_folder, store: Path, run: Path, *sets: str) -> list[str]:
    overrides = [f"model.vision={tiny_visions['clip']}", f"model.caption_encoder={stage1_folder}",
                 "train.mode=offline", f"data.embeddings={store}", f"train.output_dir={run}", *sets]
    return ["stage2", "--config", str(TINY)] + [arg for item in overrides for arg in ("--set", item)]


def run_stage2(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(stage2_args(*args))
    return code, capsys.readouterr().err


def test_a_caption_edited_after_embed_is_an_error(tmp_path, tiny_visions, stage1_folder, capsys):
    data, _ = write_dataset(tmp_path / "data")
    embed(stage1_folder, data, tmp_path / "store", "raw_caption", "longSV")
    rows = read_jsonl(data)
    rows[2]["raw_caption"], rows[5]["raw_caption"] = rows[5]["raw_caption"], rows[2]["raw_caption"]
    write_jsonl(data, rows)
    run = tmp_path / "run"
    code, err = run_stage2(capsys, tiny_visions, stage1_folder, tmp_path / "store", run, f"data.train={data}")
    assert code == 2, err
    assert "llm2clip: error:" in err and "2 caption(s)" in err
    for row in (rows[2], rows[5]):
        assert f"sample id {row['id']!r} field 'raw_caption'" in err
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()  # no step was taken
    # what to do: the command in the message re-embeds the data, after which stage 2 trains
    command = shlex.split(err.split("Re-embed the data: ")[1].strip().splitlines()[0])
    assert command[:2] == ["llm2clip", "embed"] and "--fields raw_caption longSV" in " ".join(command)
    assert cli_main(command[1:]) == 0
    code, err = run_stage2(capsys, tiny_visions, stage1_folder, tmp_path / "store", run, f"data.train={data}")
    assert code == 0, err


def test_reordered_rows_of_a_file_without_ids_are_an_error(tmp_path, tiny_visions, stage1_folder, capsys):
    data, _ = write_dataset(tmp_path / "data")
    rows = [{k: v for k, v in row.items() if k != "id"} for row in read_jsonl(data)]  # ids = row numbers
    write_jsonl(data, rows)
    embed(stage1_folder, data, tmp_path / "store", "raw_caption", "longSV")
    moved = rows[1:] + rows[:1]  # the first row moved to the end
    write_jsonl(data, moved)
    code, err = run_stage2(capsys, tiny_visions, stage1_folder, tmp_path / "store", tmp_path / "run",
                           f"data.train={data}")
    assert code == 2, err
    # row number i now names another row's captions: every caption both rows i have differs
    fields = ("raw_caption", "longSV")
    differing = sum(old[f] != new[f] for old, new in zip(rows, moved) for f in fields if f in old and f in new)
    assert differing > len(rows)
    assert f"{differing} caption(s)" in err and "sample id '0' field 'raw_caption'" in err


def test_dense_fields_the_store_lacks_are_named_and_never_skipped(tmp_path, tiny_visions, stage1_folder, capsys,
                                                                  caplog):
    data, _ = write_dataset(tmp_path / "data")
    rows = read_jsonl(data)
    for row in rows:
        row["longIB"] = f"an illustration of: {row['raw_caption']}"
    write_jsonl(data, rows)
    embed(stage1_folder, data, tmp_path / "store", "raw_caption", "longSV")  # longIB is not embedded
    run = tmp_path / "run"
    code, err = run_stage2(capsys, tiny_visions, stage1_folder, tmp_path / "store", run, f"data.train={data}",
                           "data.dense_fields=[longSV, longIB]", "train.max_steps=4")
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "longIB" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / "store") in warnings[0]
    skipped = [json.loads(line) for line in (run / "skipped-rank0.jsonl").read_text().splitlines()]
    reasons = {row["reason"].split(":")[0] for row in skipped}
    assert reasons <= {"ImageError", "DataError"}, reasons  # the broken image and the escaping path only


def test_a_caption_edited_in_a_webdataset_shard_is_an_error(tmp_path, tiny_visions, stage1_folder, capsys):
    shards, _ = write_shards(tmp_path)
    embed(stage1_folder, shards, tmp_path / "store", "caption", "longSV")
    swap_shard_captions(Path(shards.split("{")[0]) / "00001.tar", 0, 2)
    code, err = run_stage2(capsys, tiny_visions, stage1_folder, tmp_path / "store", tmp_path / "run",
                           "data.train=", f"data.train_shards={shards}", "data.real_fields=[caption]")
    assert code == 2, err
    assert "2 caption(s)" in err and "field 'caption'" in err and "llm2clip embed" in err


def swap_shard_captions(shard: Path, first: int, second: int) -> None:
    """Rewrite a shard with the `txt` of two of its samples exchanged."""
    samples = [{k: v for k, v in s.items() if k != "__url__"} for s in iter_shard(str(shard))]
    samples[first]["txt"], samples[second]["txt"] = samples[second]["txt"], samples[first]["txt"]
    buffer = io.BytesIO()
    with wds.TarWriter(buffer) as sink:
        for sample in samples:
            sink.write(sample)
    shard.write_bytes(buffer.getvalue())


def test_the_dense_share_holds_over_an_epoch_when_the_store_lacks_a_dense_field(tmp_path, tiny_llama):
    """Two dense fields configured, one stored: over an epoch every sample trains, and the
    share of dense captions is dense_ratio (±2 points; the binomial s.d. here is 0.65)."""
    import torch

    from llm2clip.data.batch_plan import BatchPlan
    from llm2clip.data.caption_choice import CaptionChoice
    from llm2clip.data.image_text import ImageTextDataset, StepBatchSampler, collate_samples
    from llm2clip.data.records import CaptionRecord
    from llm2clip.embeddings import EmbeddingStore, write_embedding_store
    from llm2clip.text import CaptionEncoder

    n, ratio = 5000, 0.3
    records = [CaptionRecord(id=f"s{i}", captions=[f"thing {i}", f"a long view of thing {i}", f"thing {i} drawn"],
                             sources=["raw_caption", "longSV", "longIB"]) for i in range(n)]
    encoder = CaptionEncoder.from_pretrained(tiny_llama, precision="fp32")
    write_embedding_store(encoder, records, tmp_path / "store", fields=["raw_caption", "longSV"], batch_size=256)
    choice = CaptionChoice(("raw_caption",), ("longSV", "longIB"), dense_ratio=ratio, seed=3)
    dataset = ImageTextDataset(records, tmp_path, None, choice, store=EmbeddingStore.open(tmp_path / "store"))
    dataset.image_features = {i: torch.zeros(2) for i in range(n)}  # the images are not the point here
    plan = BatchPlan(n, 100, seed=0)
    batches = [collate_samples([dataset[key] for key in keys])
               for keys in StepBatchSampler(plan, 0, plan.steps_per_epoch)]
    assert [s for b in batches for s in b["skipped"]] == []
    sources = [s for b in batches for s in b["sources"]]
    assert len(sources) == n and set(sources) == {"raw_caption", "longSV"}
    assert abs(sources.count("longSV") / n - ratio) <= 0.02


@pytest.mark.distributed
def test_every_rank_stops_when_another_ranks_shards_do_not_match(tmp_path, tiny_visions, stage1_folder):
    """Rank r checks shards r, r+2, ...: the edited shard 00001 is rank 1's, yet rank 0
    must not train either; both report the mismatch found by rank 1."""
    shards, _ = write_shards(tmp_path)
    embed(stage1_folder, shards, tmp_path / "store", "caption", "longSV")
    swap_shard_captions(Path(shards.split("{")[0]) / "00001.tar", 0, 2)
    run = tmp_path / "run"
    args = stage2_args(tiny_visions, stage1_folder, tmp_path / "store", run, "data.train=",
                       f"data.train_shards={shards}", "data.real_fields=[caption]")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "llm2clip.cli", *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "llm2clip: error:" in line]
    # Every rank raises; torchrun's agent may stop the second before its line reaches stderr,
    # so at least one line, and never a hang (the timeout) or a rank that trained on.
    assert 1 <= len(errors) <= 2, done.stderr[-3000:]
    assert all("2 caption(s)" in e and "field 'caption'" in e for e in errors)
    assert not (run / "metrics.jsonl").exists()


def test_a_shard_changed_after_the_check_is_skipped_sample_by_sample(tmp_path, stage1_folder):
    """Defence in depth: the stream checks each drawn caption again when it uses it."""
    import torch

    from llm2clip.data.caption_choice import CaptionChoice
    from llm2clip.data.webdataset_source import WebDatasetStream
    from llm2clip.embeddings import EmbeddingStore

    shards, rows = write_shards(tmp_path, unsafe=False)
    embed(stage1_folder, shards, tmp_path / "store", "caption", "longSV")
    shard = Path(shards.split("{")[0]) / "00001.tar"
    swapped = [s["__key__"] for s in iter_shard(str(shard))][0:3:2]
    swap_shard_captions(shard, 0, 2)
    stream = WebDatasetStream(shards, lambda images: torch.zeros(len(images), 3, 4, 4),
                              CaptionChoice(("caption",), dense_ratio=0.0), batch_size=len(rows) + 1,
                              store=EmbeddingStore.open(tmp_path / "store"))
    batch = next(iter(stream))  # one epoch: the 16 rows and the corrupt image
    assert sorted(i for i, reason in batch["skipped"] if reason == "caption_differs_from_the_store") == sorted(swapped)
    assert len(batch["ids"]) == len(rows) - 2  # every other sample trains on its own caption
