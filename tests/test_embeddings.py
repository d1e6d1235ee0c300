"""The offline caption-embedding store: exact round trip, resume, ranks, refusals, batching.

Truth is always computed independently of the store: `CaptionEncoder.encode` on the raw
captions, an uninterrupted single-process run's bytes, or hand-made lengths.
"""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_under_accelerate, cli_under_torchrun

from llm2clip.data.records import CaptionRecord, read_caption_records
from llm2clip.embeddings import (EmbeddingStore, IncompleteStoreError, StoreMismatchError,
                                 expected_identity_of_folder, padding_fraction, plan_length_batches,
                                 store_identity, write_embedding_store)
from llm2clip.embeddings import writer as writer_mod
from llm2clip.text import CaptionEncoder

WORDS = "a photo of the cat sitting on red sofa next to window two dogs run across green field".split()
SHARD = 4  # 35 captions -> 9 shards, the last one short
N_CAPTIONS, N_SHARDS = 35, 9
BATCH = 3


def make_records(n: int = 12) -> list[CaptionRecord]:
    """Short and long captions under scalar fields and a list-valued field (`caption.i`)."""
    records = []
    for i in range(n):
        words = [WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + (i * 5) % 17)]
        captions = [" ".join(words), f"{WORDS[i % len(WORDS)]} number {i}"]
        sources = ["raw_caption", "shortSV"]
        if i % 2 == 0:
            captions += [" ".join(reversed(words)) + " seen from above", "one more caption"]
            sources += ["caption.0", "caption.1"]
        records.append(CaptionRecord(id=f"img{i:03d}", captions=captions, sources=sources))
    return records[:-1] + [replace(records[-1], captions=records[-1].captions[:1], sources=["raw_caption"])]


def flat(records):
    """(ids, fields, captions) of every caption, in record order."""
    keys = [(r.id, s, c) for r in records for s, c in r.caption_by_source().items()]
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]


def folder_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    return CaptionEncoder.from_pretrained(tiny_llama, precision="fp32")


@pytest.fixture(scope="module")
def records():
    return make_records()


@pytest.fixture(scope="module")
def reference(encoder, records, tmp_path_factory):
    """An uninterrupted single-process fp16 store: what resume and ranks must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "store"
    write_embedding_store(encoder, records, out, dtype="fp16", shard_size=SHARD, batch_size=BATCH)
    return out


# ------------------------------------------------------------------ round trip
def test_fp32_store_equals_encode(encoder, records, tmp_path):
    ids, fields, captions = flat(records)
    out = write_embedding_store(encoder, records, tmp_path / "s", dtype="fp32", shard_size=1000, batch_size=BATCH)
    store = EmbeddingStore.open(out, expected_identity=store_identity(encoder), records=records)
    got = store.get_many(ids, fields)
    # one shard: the writer batches exactly like encode (sorted by length), so bit-exact ...
    np.testing.assert_array_equal(got, encoder.encode(captions, batch_size=BATCH).numpy())
    # ... and, against one caption at a time (no padding at all), equal to float tolerance
    np.testing.assert_allclose(got, encoder.encode(captions, batch_size=1).numpy(), atol=1e-5, rtol=0)
    assert len(store) == len(captions) == N_CAPTIONS and store.dim == encoder.dim
    assert store.ids == [r.id for r in records]
    assert store.fields == ["raw_caption", "shortSV", "caption.0", "caption.1"]
    np.testing.assert_array_equal(store.get("img004", "caption.1"), got[ids.index("img004") + 3])
    assert store.get("img011").shape == (encoder.dim,)  # a sample with a single field
    with pytest.raises(KeyError, match="img001"):
        store.get("img001", "caption.0")  # odd records have no list-valued field


@pytest.mark.parametrize("dtype, atol", [("fp16", 1e-3), ("bf16", 8e-3), ("int8", None)])
def test_reduced_precision_round_trip(encoder, records, tmp_path, dtype, atol):
    ids, fields, captions = flat(records)
    truth = encoder.encode(captions, batch_size=1).numpy()
    out = write_embedding_store(encoder, records, tmp_path / dtype, dtype=dtype, shard_size=SHARD, batch_size=BATCH)
    got = EmbeddingStore.open(out).get_many(ids, fields)
    assert got.dtype == np.float32
    error = np.abs(got - truth)
    if dtype == "int8":  # half a quantisation step (max|row| / 127) per row, plus float noise
        assert (error <= np.abs(truth).max(axis=1)[:, None] / 127 / 2 + 1e-6).all()
    else:
        assert error.max() <= atol
    assert error.max() > 0  # really stored in reduced precision


def test_storage_sizes_and_plain_safetensors(encoder, records, tmp_path, reference):
    from safetensors import safe_open

    out = write_embedding_store(encoder, records, tmp_path / "fp32", dtype="fp32", shard_size=SHARD, batch_size=BATCH)
    sizes = {}
    for name, folder in (("fp32", out), ("fp16", reference)):
        with safe_open(str(folder / "shard-00000.safetensors"), framework="pt") as handle:
            sizes[name] = handle.get_tensor("embeddings").nbytes
            first = handle.get_tensor("embeddings")[0].float().numpy()
        np.testing.assert_array_equal(first, EmbeddingStore.open(folder).get("img000", "raw_caption"))
    assert sizes["fp16"] * 2 == sizes["fp32"] == SHARD * encoder.dim * 4
    total = {n: sum(p.stat().st_size for p in f.glob("shard-*")) for n, f in (("fp32", out), ("fp16", reference))}
    assert total["fp16"] < 0.85 * total["fp32"]  # hashes and ids are the same in both; D=32 is tiny


# ------------------------------------------------------------------ resume and ranks
def test_resume_after_a_kill_equals_an_uninterrupted_run(encoder, records, tmp_path, reference, monkeypatch):
    real_write = writer_mod.write_shard
    written = []

    def write_then_die(path, tensors, meta):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        real_write(path, tensors, meta)
        written.append(path.name)

    out = tmp_path / "store"
    monkeypatch.setattr(writer_mod, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_embedding_store(encoder, records, out, dtype="fp16", shard_size=SHARD, batch_size=BATCH)
    assert written == ["shard-00000.safetensors", "shard-00001.safetensors"]
    with pytest.raises(IncompleteStoreError, match="shard-00002.*resume"):
        EmbeddingStore.open(out)
    (out / "shard-00002.safetensors.tmp").write_bytes(b"half a shard")  # the write the kill interrupted
    damaged = bytearray((out / "shard-00001.safetensors").read_bytes())
    damaged[-1] ^= 0xFF  # a finished shard whose bytes rotted: its hash no longer matches
    (out / "shard-00001.safetensors").write_bytes(bytes(damaged))

    written.clear()
    monkeypatch.setattr(writer_mod, "write_shard", lambda *a: (real_write(*a), written.append(a[0].name)))
    write_embedding_store(encoder, records, out, dtype="fp16", shard_size=SHARD, batch_size=BATCH)
    assert "shard-00000.safetensors" not in written and "shard-00001.safetensors" in written
    assert len(written) == N_SHARDS - 1  # only shard 0 was kept
    assert folder_bytes(out) == folder_bytes(reference)  # no temp file left, every byte the same
    store = EmbeddingStore.open(out, records=records, verify_data=True)
    assert len(set(store.keys())) == len(store) == N_CAPTIONS

    written.clear()  # a finished store is not touched again
    write_embedding_store(encoder, records, out, dtype="fp16", shard_size=SHARD, batch_size=BATCH)
    assert written == []


def test_two_ranks_equal_one_process(encoder, records, tmp_path, reference):
    out = tmp_path / "store"
    write_embedding_store(encoder, records, out, dtype="fp16", shard_size=SHARD, batch_size=BATCH,
                          rank=0, world_size=2)
    assert sorted(p.name for p in out.glob("shard-*")) == [f"shard-{k:05d}.safetensors" for k in (0, 2, 4, 6, 8)]
    with pytest.raises(IncompleteStoreError, match="4 of 9 shard"):
        EmbeddingStore.open(out)  # no manifest until every rank has finished
    write_embedding_store(encoder, records, out, dtype="fp16", shard_size=SHARD, batch_size=BATCH,
                          rank=1, world_size=2)
    assert folder_bytes(out) == folder_bytes(reference)


@pytest.mark.distributed
@pytest.mark.parametrize("launch", [cli_under_torchrun, cli_under_accelerate], ids=["torchrun", "accelerate"])
def test_two_launched_processes_equal_one_process(tiny_llama, records, tmp_path, launch):
    data = tmp_path / "captions.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for r in records:  # the scalar fields only: a list field round-trips as caption.i anyway
            scalar = {s: c for s, c in zip(r.sources, r.captions) if "." not in s}
            handle.write(json.dumps({"id": r.id, **scalar}) + "\n")
    args = ["embed", "--model", tiny_llama, "--data", str(data), "--out", str(tmp_path / "two"),
            "--fields", "raw_caption", "shortSV", "--shard-size", str(SHARD), "--batch-size", str(BATCH),
            "--precision", "fp32", "--device", "cpu"]
    launch(2, *args)
    file_records, _ = read_caption_records(data, caption_fields=["raw_caption", "shortSV"])
    store = EmbeddingStore.open(tmp_path / "two", expected_identity=expected_identity_of_folder(tiny_llama),
                                records=file_records)
    one = write_embedding_store(CaptionEncoder.from_pretrained(tiny_llama, precision="fp32"), file_records,
                                tmp_path / "one", dtype="fp16", shard_size=SHARD, batch_size=BATCH)
    assert (one / "plan.json").read_bytes() == (tmp_path / "two" / "plan.json").read_bytes()
    ids, fields, _ = flat(file_records)
    # other processes may use other CPU kernels (thread counts): equal to fp16 rounding
    np.testing.assert_allclose(store.get_many(ids, fields), EmbeddingStore.open(one).get_many(ids, fields),
                               atol=1e-3, rtol=0)


# ------------------------------------------------------------------ refusals
def test_another_encoder_is_refused(tiny_llama, encoder, reference, records, tmp_path):
    assert expected_identity_of_folder(tiny_llama) == EmbeddingStore.open(reference).identity
    other = CaptionEncoder.from_pretrained(tiny_llama, pooling="last")
    with pytest.raises(StoreMismatchError, match="pooling: store has 'mean', expected 'last'"):
        EmbeddingStore.open(reference, expected_identity=store_identity(other))
    # the writer will not mix two encoders' embeddings in one folder either
    out = tmp_path / "store"
    shutil.copytree(reference, out)
    with pytest.raises(StoreMismatchError, match="pooling"):
        write_embedding_store(other, records, out, dtype="fp16", shard_size=SHARD)


def test_weights_fingerprint_tells_stage1_runs_apart_and_matches_saved_folders(tiny_llama, tmp_path):
    import torch

    runs = []
    for seed in (0, 1):  # two "stage-1 runs" from the same base: different LoRA weights
        torch.manual_seed(seed)
        runs.append(CaptionEncoder.from_pretrained(tiny_llama, lora=dict(r=2, alpha=4, dropout=0.0)))
    assert runs[0].identity() == runs[1].identity()
    assert runs[0].weights_fingerprint() != runs[1].weights_fingerprint()
    runs[0].save_pretrained(tmp_path / "adapter")
    runs[0].save_pretrained(tmp_path / "full", merge=True)
    for name in ("adapter", "full"):  # read from the files == computed on the loaded model
        loaded = CaptionEncoder.from_pretrained(tmp_path / name)
        assert expected_identity_of_folder(str(tmp_path / name)) == store_identity(loaded)
    assert store_identity(CaptionEncoder.from_pretrained(tmp_path / "adapter")) == store_identity(runs[0])


def test_changed_caption_and_missing_id_are_refused(reference, records):
    changed = list(records)
    changed[3] = replace(records[3], captions=[records[3].captions[0] + " (edited)", records[3].captions[1]])
    with pytest.raises(StoreMismatchError, match="'img003' field 'raw_caption': the caption text differs"):
        EmbeddingStore.open(reference, records=changed)
    extra = records + [CaptionRecord(id="img999", captions=["a new image"], sources=["raw_caption"])]
    with pytest.raises(StoreMismatchError, match="'img999' is not in the store"):
        EmbeddingStore.open(reference, records=extra)
    # restricted to fields the store has, the unchanged records pass
    EmbeddingStore.open(reference, records=records, field_names=["raw_caption", "caption"])


def test_missing_shard_is_refused(reference, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(reference, out)
    (out / "shard-00005.safetensors").unlink()
    with pytest.raises(IncompleteStoreError, match="shard-00005.safetensors.*missing.*resume"):
        EmbeddingStore.open(out)


# ------------------------------------------------------------------ batching
def test_length_grouped_batches_pad_far_less_than_input_order():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in np.where(rng.random(200) < 0.5, rng.integers(4, 12, 200), rng.integers(80, 120, 200))]
    grouped = plan_length_batches(lengths, 16)
    assert sorted(i for batch in grouped for i in batch) == list(range(200))  # each caption exactly once
    assert all(len(batch) <= 16 for batch in grouped)
    in_order = [list(range(s, min(s + 16, 200))) for s in range(0, 200, 16)]
    assert padding_fraction(lengths, in_order) > 0.4
    assert padding_fraction(lengths, grouped) < 0.1
    assert padding_fraction(lengths, grouped) < padding_fraction(lengths, in_order) / 5


# ------------------------------------------------------------------ the reader's messages and protocol
def message_of(error_type, call):
    with pytest.raises(error_type) as err:
        call()
    return str(err.value)


def test_each_unopenable_folder_is_named_with_why(reference, tmp_path):
    from llm2clip.embeddings import StoreError

    assert message_of(StoreError, lambda: EmbeddingStore.open(tmp_path / "nowhere")) == (
        f"{tmp_path / 'nowhere'}: no such embedding store folder")
    (tmp_path / "empty").mkdir()
    assert message_of(StoreError, lambda: EmbeddingStore.open(tmp_path / "empty")) == (
        f"{tmp_path / 'empty'}: not an embedding store (no store.json); write one with `llm2clip embed`")
    hint = "rerun `llm2clip embed` with the same arguments to resume"
    for missing, listed in [(range(6), "shard-00000.safetensors, shard-00001.safetensors, shard-00002.safetensors, "
                                        "shard-00003.safetensors, shard-00004.safetensors, ... (1 more)"),
                            (range(4, 9), "shard-00004.safetensors, shard-00005.safetensors, shard-00006.safetensors, "
                                          "shard-00007.safetensors, shard-00008.safetensors")]:
        out = tmp_path / f"store-{len(missing)}"
        shutil.copytree(reference, out)
        (out / "store.json").unlink()
        for k in missing:
            (out / f"shard-{k:05d}.safetensors").unlink()
        assert message_of(IncompleteStoreError, lambda: EmbeddingStore.open(out)) == (
            f"{out}: incomplete embedding store: {len(missing)} of {N_SHARDS} shard(s) missing ({listed}); {hint}")
    out = tmp_path / "no-manifest"
    shutil.copytree(reference, out)
    (out / "store.json").unlink()
    assert message_of(IncompleteStoreError, lambda: EmbeddingStore.open(out)) == (
        f"{out}: incomplete embedding store: all shards exist but the manifest store.json was not written "
        f"(other ranks may still be running); {hint}")


def test_membership_repr_lookups_and_a_pickled_reader(reference, records):
    import pickle  # what a DataLoader worker started by spawn receives; only our own object, never loaded from disk

    store = EmbeddingStore.open(reference)
    ids, fields, _ = flat(records)
    assert ("img000", "raw_caption") in store and ("img011", "caption.0") not in store
    assert ["img000", "raw_caption"] in store  # any pair, as a tuple
    assert repr(store) == (f"EmbeddingStore({str(reference)!r}, {N_CAPTIONS} embeddings of dim {store.dim}, "
                           f"dtype=fp16, fields={store.fields})")
    assert message_of(ValueError, lambda: store.get_many(["img000", "img001"], ["raw_caption"])) == (
        "got 2 ids but 1 fields")
    expected = store.get_many(ids, fields)
    store.get_many(ids[:3], fields[:3])  # maps a few shards, which must not travel with the pickle
    copy = pickle.loads(pickle.dumps(store))
    assert all(shard._arrays == {} for shard in copy._shards)
    np.testing.assert_array_equal(copy.get_many(ids, fields), expected)


def test_verify_records_checks_only_the_fields_asked_for_and_says_how_to_redo(reference, records):
    store = EmbeddingStore.open(reference)
    changed = list(records)
    changed[2] = replace(records[2], captions=[records[2].captions[0], records[2].captions[1] + " (edited)"]
                         + records[2].captions[2:])  # its shortSV caption
    store.verify_records(changed, ["raw_caption", "caption"])  # shortSV is not asked for
    message = message_of(StoreMismatchError, lambda: store.verify_records(changed))
    assert message.startswith(f"{reference}: 1 caption(s) of the records do not match the embedding store (")
    assert "'img002' field 'shortSV': the caption text differs" in message
    assert message.endswith("Re-embed this caption file with `llm2clip embed`.")


def test_a_non_finite_stored_row_is_refused_naming_its_sample_and_field(encoder, records, tmp_path):
    from llm2clip.embeddings import StoreError
    from llm2clip.embeddings.store import ShardFile

    out = write_embedding_store(encoder, records, tmp_path / "store", dtype="fp32", shard_size=SHARD, batch_size=BATCH)
    ids, fields, _ = flat(records)
    clean = EmbeddingStore.open(out).get_many(ids, fields)
    np.testing.assert_allclose(clean, encoder.encode(flat(records)[2]).numpy(), atol=1e-6)  # every row where it is
    shard = ShardFile(out / "shard-00002.safetensors")  # rows 8-11
    begin = shard.data_start + shard.tensors["embeddings"]["data_offsets"][0]
    with open(shard.path, "r+b") as handle:  # row 9's first value becomes NaN
        handle.seek(begin + 1 * clean.shape[1] * 4)
        handle.write(np.float32("nan").tobytes())
    store = EmbeddingStore.open(out)
    np.testing.assert_array_equal(store.get_many(ids[:8], fields[:8]), clean[:8])  # other rows still read
    with pytest.raises(StoreError) as err:
        store.get_many(ids[7:12], fields[7:12])
    assert str(err.value) == (f"{out}: the stored embedding of sample id {ids[9]!r}, field {fields[9]!r} holds "
                              "non-finite values (NaN/inf); re-embed it (`llm2clip embed --overwrite`)")
    last_id = records[-1].id  # a single-caption sample: its field is found when not named
    assert store.get(last_id).shape == (clean.shape[1],)
