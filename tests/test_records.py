"""Caption record and text-pair readers: every format, every bad-input case."""
import json

import pytest

from llm2clip.data.errors import DataError
from llm2clip.data.records import MAX_CAPTION_CHARS, read_caption_records
from llm2clip.data.text_pairs import TextPair, read_text_pairs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_dreamlip_jsonl_uses_the_dreamlip_fields_in_order(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"id": "a", "image": "a.jpg", "longSV": "long a", "raw_caption": "raw a", "shortSV": "short a"},
        {"id": "b", "image": "b.jpg", "raw_caption": "raw b", "shortSV": "short b"},
    ])
    records, stats = read_caption_records(path)
    assert [(r.id, r.image, r.captions) for r in records] == [
        ("a", "a.jpg", ["raw a", "short a", "long a"]), ("b", "b.jpg", ["raw b", "short b"])]
    assert stats.kept == stats.rows == 2 and not stats.skipped
    assert records[0].caption_by_source() == {"raw_caption": "raw a", "shortSV": "short a", "longSV": "long a"}


def test_csv_and_tsv_with_configured_fields(tmp_path):
    (tmp_path / "d.csv").write_text('id,path,one,two\n1,x.jpg,"a cat, sitting",a feline\n2,y.jpg,a dog,\n',
                                    encoding="utf-8")
    (tmp_path / "d.tsv").write_text("id\tpath\tone\ttwo\n1\tx.jpg\ta cat, sitting\ta feline\n", encoding="utf-8")
    records, stats = read_caption_records(tmp_path / "d.csv", ["one", "two"], image_field="path", min_captions=2)
    assert [(r.id, r.image, r.captions) for r in records] == [("1", "x.jpg", ["a cat, sitting", "a feline"])]
    assert stats.skipped == {"too_few_captions": 1} and stats.fixed == {"empty_dropped": 1}
    tsv, _ = read_caption_records(tmp_path / "d.tsv", ["one", "two"])
    assert tsv[0].captions == ["a cat, sitting", "a feline"]


def test_karpathy_json_lists_and_dataset_files(tmp_path):
    (tmp_path / "test.json").write_text(json.dumps([
        {"image": "im0.jpg", "caption": ["c0", "c1", "c2", "c3", "c4"]},
        {"image": "im1.jpg", "caption": ["d0", "d1", "d2", "d3", "d4", "d5"]},  # never assume 5
    ]))
    records, _ = read_caption_records(tmp_path / "test.json")
    assert [len(r.captions) for r in records] == [5, 6] and records[1].image == "im1.jpg"
    assert records[0].sources == [f"caption.{i}" for i in range(5)]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": [
        {"filename": "f.jpg", "cocoid": 7, "sentences": [{"raw": "one "}, {"raw": "two"}]}]}))
    records, _ = read_caption_records(tmp_path / "dataset_coco.json")
    assert (records[0].id, records[0].image, records[0].captions) == ("7", "f.jpg", ["one", "two"])


def test_bad_rows_are_skipped_and_counted_by_reason(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"id": "ok", "a": "x", "b": "y"}).encode()
    path.write_bytes(b"\n".join([
        good,
        b"{not json",
        json.dumps({"id": "bytes", "a": "x", "b": "y"}).encode().replace(b'"y"', b'"\xff\xfe"'),
        json.dumps({"id": "empty", "a": "  ", "b": "\t"}).encode(),
        json.dumps({"id": "same", "a": "dup", "b": " dup "}).encode(),
        json.dumps({"id": "long", "a": "z" * (MAX_CAPTION_CHARS + 5), "b": "w"}).encode(),
        b"[1, 2]",
    ]) + b"\n")
    records, stats = read_caption_records(path, ["a", "b"], min_captions=2)
    assert [r.id for r in records] == ["ok", "long"]
    assert [r.sources for r in records] == [["a", "b"], ["a", "b"]]
    assert len(records[1].captions[0]) == MAX_CAPTION_CHARS
    assert stats.skipped == {"bad_json": 1, "not_utf8": 1, "too_few_captions": 2, "not_an_object": 1}
    assert stats.fixed["duplicate_dropped"] == 1 and stats.fixed["empty_dropped"] == 2
    summary = stats.summary()
    assert "2 of 7 rows kept" in summary and "line 2" in summary and "bad_json" in summary


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ('{"id": "a", "cap": "x"}\n', "no row has caption field(s) ['caption_1']"),
    ('{"id": "a", "caption_1": "x"}\n{"id": "a", "caption_1": "y"}\n', "id 'a' already used at line 1"),
    ('{"id": "a", "caption_1": "x"}\n{"caption_1": "y"}\n', "line 2: no 'id'"),
    ("\n\n", "no rows"),
    ("{bad\n", "no usable records"),
])
def test_file_level_faults_are_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as err:
        read_caption_records(path, ["caption_1"])
    assert message in str(err.value) and str(path) in str(err.value)


def test_unknown_suffix_and_missing_generic_fields(tmp_path):
    (tmp_path / "d.parquet").write_text("x")
    with pytest.raises(DataError, match="unknown caption file type"):
        read_caption_records(tmp_path / "d.parquet")
    write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "words": "x"}])
    with pytest.raises(DataError, match=r"fields present: \['id', 'words'\]"):
        read_caption_records(tmp_path / "d.jsonl")


def test_text_pairs(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([json.dumps({"query": "q1", "positive": "p1"}),
                               json.dumps({"query": "q2", "positive": " p2 ", "negative": "n2"}),
                               json.dumps({"query": "q3", "positive": ""}),
                               "oops"]) + "\n")
    pairs, stats = read_text_pairs(path)
    assert pairs == [TextPair("q1", "p1"), TextPair("q2", "p2", "n2")]
    assert stats.skipped == {"missing_query_or_positive": 1, "bad_json": 1}
    with pytest.raises(DataError, match="JSONL"):
        read_text_pairs(tmp_path / "p.csv")


def test_optional_fields_drop_absent_ones_but_need_one(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "raw_caption": "x"}])
    records, _ = read_caption_records(path, ["raw_caption", "longSV"], require_all_fields=False)
    assert records[0].sources == ["raw_caption"]
    with pytest.raises(DataError, match=r"no row has caption field\(s\) \['longSV'\]"):
        read_caption_records(path, ["raw_caption", "longSV"])
    with pytest.raises(DataError, match="no row has caption field"):
        read_caption_records(path, ["shortSV", "longSV"], require_all_fields=False)
