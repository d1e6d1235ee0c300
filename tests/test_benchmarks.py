"""Benchmark readers: each fixture is written in the benchmark's real file layout."""
import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from llm2clip.data.errors import DataError
from llm2clip.eval import datasets
from llm2clip.eval.datasets import (imagenet_wnid_class_names, load_clip_templates, load_imagenet_class_names,
                                      load_retrieval_benchmark, read_class_folder, read_csv, read_docci,
                                      read_jsonl, read_karpathy, read_sharegpt4v, read_urban1k, read_xm3600,
                                      xm3600_languages)
from llm2clip.eval.datasets.json_files import first_json_list_items


def _png_bytes(color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png_bytes()


def image(path: Path, fmt: str = "PNG") -> Path:
    """A tiny real image file (PNG bytes, or JPEG when fmt="JPEG")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "PNG":
        path.write_bytes(PNG)
    else:
        Image.new("RGB", (4, 4), (10, 120, 200)).save(path, format=fmt)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- karpathy
KARPATHY_ROWS = [
    {"image": "val2014/COCO_val2014_000000000001.jpg", "caption": ["a cat on a mat.", "a sleeping cat."]},
    {"image": "val2014/COCO_val2014_000000000002.jpg",
     "caption": ["a dog.", "a brown dog.", "a dog in a park.", "a dog running.", "a happy dog.", "six."]},
    {"image": "val2014/COCO_val2014_000000000003.jpg", "caption": "one caption as a string"},
]


@pytest.fixture
def coco_test(tmp_path):
    for row in KARPATHY_ROWS:
        image(tmp_path / "coco" / row["image"], "JPEG")
    return write_json(tmp_path / "coco_karpathy_test.json", KARPATHY_ROWS)


def test_karpathy_test_json_uneven_captions(coco_test, tmp_path):
    bench = read_karpathy(coco_test, image_root=tmp_path / "coco")
    assert bench.name == "coco_karpathy_test" and bench.language == "en"
    assert [p.name for p in bench.image_paths] == [Path(r["image"]).name for r in KARPATHY_ROWS]
    assert all(p.is_absolute() and p.is_file() for p in bench.image_paths)
    assert bench.texts == KARPATHY_ROWS[0]["caption"] + KARPATHY_ROWS[1]["caption"] + ["one caption as a string"]
    assert bench.text_to_image == [0, 0, 1, 1, 1, 1, 1, 1, 2]
    assert bench.skipped == {}
    assert "3 images, 9 texts" in bench.describe()


def test_karpathy_limit_and_dispatcher(coco_test, tmp_path):
    bench = load_retrieval_benchmark("karpathy", coco_test, image_root=tmp_path / "coco", limit=2)
    assert len(bench.image_paths) == 2 and bench.text_to_image == [0, 0, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown retrieval benchmark kind"):
        load_retrieval_benchmark("flickr", coco_test)


def test_karpathy_original_dataset_json_takes_test_split(tmp_path):
    def img(filename, split, sentences, filepath="val2014"):
        return {"filepath": filepath, "filename": filename, "split": split, "imgid": 0,
                "sentences": [{"raw": s, "tokens": s.split()} for s in sentences]}
    data = {"dataset": "coco", "images": [
        img("a.jpg", "train", ["train caption"]),
        img("b.jpg", "test", ["b one", "b two", "b three"]),
        img("c.jpg", "restval", ["restval caption"]),
        img("d.jpg", "test", ["d one", "   "]),
        img("e.jpg", "val", ["val caption"]),
    ]}
    for name in "abcde":
        image(tmp_path / "val2014" / f"{name}.jpg")
    bench = read_karpathy(write_json(tmp_path / "dataset_coco.json", data))
    assert [p.name for p in bench.image_paths] == ["b.jpg", "d.jpg"]
    assert bench.texts == ["b one", "b two", "b three", "d one"]
    assert bench.text_to_image == [0, 0, 0, 1]
    assert bench.skipped == {"empty_caption": 1}


def test_karpathy_flickr_dataset_json_has_no_filepath(tmp_path):
    data = {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "split": "test", "sentences": [{"raw": "Two young guys."}]}]}
    image(tmp_path / "flickr30k-images" / "1000092795.jpg")
    bench = read_karpathy(write_json(tmp_path / "dataset_flickr30k.json", data),
                          image_root=tmp_path / "flickr30k-images")
    assert bench.texts == ["Two young guys."] and bench.image_paths[0].name == "1000092795.jpg"


def test_karpathy_repeated_image_is_one_image(tmp_path):
    image(tmp_path / "x.png")
    rows = [{"image": "x.png", "caption": "first"}, {"image": "./x.png", "caption": ["second"]}]
    bench = read_karpathy(write_json(tmp_path / "test.json", rows))
    assert len(bench.image_paths) == 1 and bench.text_to_image == [0, 0]


def test_missing_images_error_names_file_and_paths(coco_test, tmp_path):
    (tmp_path / "coco" / KARPATHY_ROWS[1]["image"]).unlink()
    with pytest.raises(DataError) as err:
        read_karpathy(coco_test, image_root=tmp_path / "coco")
    message = str(err.value)
    assert str(coco_test) in message and "1 of 3 images missing" in message
    assert "COCO_val2014_000000000002.jpg" in message


def test_skip_missing_drops_images_and_their_texts(coco_test, tmp_path):
    (tmp_path / "coco" / KARPATHY_ROWS[1]["image"]).unlink()
    bench = read_karpathy(coco_test, image_root=tmp_path / "coco", skip_missing=True)
    assert [p.name for p in bench.image_paths] == ["COCO_val2014_000000000001.jpg", "COCO_val2014_000000000003.jpg"]
    assert bench.texts == ["a cat on a mat.", "a sleeping cat.", "one caption as a string"]
    assert bench.text_to_image == [0, 0, 1]  # renumbered after the drop
    assert bench.skipped == {"missing_image": 1, "text_of_missing_image": 6}
    assert "1 missing_image" in bench.describe()


def test_missing_error_lists_first_few_and_count(tmp_path):
    rows = [{"image": f"img{i}.jpg", "caption": f"caption {i}"} for i in range(12)]
    with pytest.raises(DataError, match="12 of 12 images missing") as err:
        read_karpathy(write_json(tmp_path / "t.json", rows))
    assert "img4.jpg" in str(err.value) and "img5.jpg" not in str(err.value)


def test_empty_benchmark_is_an_error(tmp_path):
    with pytest.raises(DataError, match="empty benchmark") as err:
        read_karpathy(write_json(tmp_path / "empty.json", []))
    assert str(tmp_path / "empty.json") in str(err.value)
    image(tmp_path / "a.png")
    blank = write_json(tmp_path / "blank.json", [{"image": "a.png", "caption": ["", "  "]}])
    with pytest.raises(DataError, match="empty benchmark"):
        read_karpathy(blank)
    with pytest.raises(DataError, match="empty benchmark"):  # every image missing, skipped
        read_karpathy(write_json(tmp_path / "gone.json", [{"image": "gone.png", "caption": "x"}]), skip_missing=True)


def test_empty_captions_are_counted(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    rows = [{"image": "a.png", "caption": ["ok", "", " \n"]}, {"image": "b.png", "caption": [""]}]
    bench = read_karpathy(write_json(tmp_path / "t.json", rows))
    assert bench.texts == ["ok"] and [p.name for p in bench.image_paths] == ["a.png"]
    assert bench.skipped == {"empty_caption": 3, "image_without_caption": 1}


def test_karpathy_reader_refuses_other_formats(tmp_path):
    docci = write_jsonl(tmp_path / "docci_descriptions.jsonlines",
                        [{"example_id": "test_00000", "split": "test", "image_file": "t.jpg", "description": "d"},
                         {"example_id": "test_00001", "split": "test", "image_file": "u.jpg", "description": "e"}])
    with pytest.raises(DataError, match="JSON Lines") as err:
        read_karpathy(docci)
    assert str(docci) in str(err.value)
    with pytest.raises(DataError, match="not a Karpathy test file") as err:
        read_karpathy(write_json(tmp_path / "dict.json", {"annotations": []}))
    assert "dict.json" in str(err.value)
    no_caption = write_json(tmp_path / "nocap.json", [{"image": "a.jpg", "caption": "x"}, {"image": "b.jpg"}])
    with pytest.raises(DataError, match=r"nocap\.json: row 1: no 'caption' key"):
        read_karpathy(no_caption)
    sharegpt = write_json(tmp_path / "sg.json", [{"id": "1", "image": "a.jpg", "conversations": []}])
    with pytest.raises(DataError, match=r"sg\.json: row 0: no 'caption' key"):
        read_karpathy(sharegpt)
    with pytest.raises(DataError, match="no such file"):
        read_karpathy(tmp_path / "absent.json")


@pytest.mark.parametrize("reference", ["../outside.jpg", "val2014/../../outside.jpg", "/etc/passwd"])
def test_paths_must_stay_inside_the_image_root(tmp_path, reference):
    image(tmp_path / "outside.jpg")
    (tmp_path / "root").mkdir()
    path = write_json(tmp_path / "root" / "t.json", [{"image": reference, "caption": "x"}])
    with pytest.raises(DataError, match="leaves the image root") as err:
        read_karpathy(path)
    assert "t.json: row 0" in str(err.value)


# ---------------------------------------------------------------- sharegpt4v
def sharegpt_item(i: int, caption: str | None = None) -> dict:
    return {"id": f"{i:012d}", "image": f"coco/train2017/{i:012d}.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nAnalyze the image in a comprehensive and detailed manner."},
                {"from": "gpt", "value": caption if caption is not None else f"A long caption of image {i}."}]}


def test_sharegpt4v_takes_the_first_1000(tmp_path):
    assert datasets.SHAREGPT4V_FIRST == 1000
    items = [sharegpt_item(i) for i in range(1003)]
    for item in items[:1000]:  # the last 3 have no image: reading them would fail
        (tmp_path / item["image"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item["image"]).write_bytes(PNG)
    path = write_json(tmp_path / "share-captioner_coco_lcs_sam_1246k_1107.json", items)
    bench = read_sharegpt4v(path)
    assert bench.name == "sharegpt4v-1k"
    assert len(bench.image_paths) == len(bench.texts) == 1000
    assert bench.text_to_image == list(range(1000))
    assert bench.texts[0] == "A long caption of image 0." and bench.texts[-1] == "A long caption of image 999."
    assert bench.image_paths[999].name == f"{999:012d}.jpg"
    assert len(read_sharegpt4v(path, limit=5).texts) == 5


def test_sharegpt4v_missing_and_bad_items(tmp_path, monkeypatch):
    monkeypatch.setattr("llm2clip.eval.datasets.sharegpt4v.SHAREGPT4V_FIRST", 3)
    items = [sharegpt_item(0), sharegpt_item(1, caption=""), sharegpt_item(2), sharegpt_item(3)]
    image(tmp_path / items[0]["image"])
    image(tmp_path / items[1]["image"])
    path = write_json(tmp_path / "sg.json", items)
    with pytest.raises(DataError, match="1 of 2 images missing"):
        read_sharegpt4v(path)
    bench = read_sharegpt4v(path, skip_missing=True)
    assert bench.texts == ["A long caption of image 0."]
    assert bench.skipped == {"empty_caption": 1, "image_without_caption": 1, "missing_image": 1,
                             "text_of_missing_image": 1}
    broken = write_json(tmp_path / "broken.json", [sharegpt_item(0), {"id": "x", "image": "a.jpg",
                                                                       "conversations": [{"from": "human"}]}])
    with pytest.raises(DataError, match=r"broken\.json: item 1: .*conversations"):
        read_sharegpt4v(broken)
    with pytest.raises(DataError, match=r"karp\.json: item 0: no 'conversations' key"):
        read_sharegpt4v(write_json(tmp_path / "karp.json", KARPATHY_ROWS))
    with pytest.raises(DataError, match=r"obj\.json: not a JSON list"):
        read_sharegpt4v(write_json(tmp_path / "obj.json", {"images": []}))


def test_first_json_list_items_reads_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("llm2clip.eval.datasets.json_files.CHUNK_CHARS", 7)
    items = [{"k": i, "text": "x" * (i * 5), "nested": [1, {"a": "]"}]} for i in range(20)]
    path = tmp_path / "list.json"
    path.write_text("\ufeff  [\n" + ",\n  ".join(json.dumps(i) for i in items) + "\n]\n", encoding="utf-8")
    assert first_json_list_items(path, 5) == items[:5]
    assert first_json_list_items(path, 100) == items
    path.write_text("[]", encoding="utf-8")
    assert first_json_list_items(path, 3) == []
    path.write_text('[{"a": 1}, {"a": 2', encoding="utf-8")
    with pytest.raises(DataError, match="item 1"):
        first_json_list_items(path, 3)
    path.write_text('[{"a": 1} {"a": 2}]', encoding="utf-8")
    with pytest.raises(DataError, match="expected ','"):
        first_json_list_items(path, 3)


# ---------------------------------------------------------------- urban1k
def test_urban1k_matches_by_stem_in_numeric_order(tmp_path):
    folder = tmp_path / "Urban1k"
    for i in (1, 2, 10, 3):
        image(folder / "image" / f"{i}.jpg", "JPEG")
        (folder / "caption").mkdir(parents=True, exist_ok=True)
        (folder / "caption" / f"{i}.txt").write_text(f"Caption number {i}, long.\n", encoding="utf-8")
    image(folder / "image" / "99.jpg")  # an image without a caption file
    bench = read_urban1k(folder)
    assert [p.name for p in bench.image_paths] == ["1.jpg", "2.jpg", "3.jpg", "10.jpg"]
    assert bench.texts == [f"Caption number {i}, long." for i in (1, 2, 3, 10)]
    assert bench.text_to_image == [0, 1, 2, 3]
    assert bench.skipped == {"image_without_caption": 1}
    (folder / "image" / "3.jpg").unlink()
    with pytest.raises(DataError, match="1 of 4 images missing") as err:
        read_urban1k(folder)
    assert "3.jpg" in str(err.value)
    assert len(load_retrieval_benchmark("urban1k", folder, skip_missing=True).texts) == 3
    with pytest.raises(DataError, match="not an Urban1k folder"):
        read_urban1k(tmp_path)


# ---------------------------------------------------------------- docci
def test_docci_keeps_the_test_split(tmp_path):
    rows = [
        {"example_id": "train_00000", "split": "train", "image_file": "train_00000.jpg", "description": "train d"},
        {"example_id": "test_00000", "split": "test", "image_file": "test_00000.jpg", "description": "A long test 0."},
        {"example_id": "qual_dev_00000", "split": "qual_dev", "image_file": "qual_dev_00000.jpg",
         "description": "qual"},
        {"example_id": "test_00001", "split": "test", "image_file": "test_00001.jpg", "description": "A long test 1."},
    ]
    path = write_jsonl(tmp_path / "docci" / "docci_descriptions.jsonlines", rows)
    for row in rows[1::2]:
        image(tmp_path / "docci" / "images" / row["image_file"], "JPEG")
    for given in (path, path.parent):  # the file or its folder
        bench = read_docci(given)
        assert bench.texts == ["A long test 0.", "A long test 1."] and bench.text_to_image == [0, 1]
        assert [p.name for p in bench.image_paths] == ["test_00000.jpg", "test_00001.jpg"]
    bad = write_jsonl(tmp_path / "bad.jsonlines", [{"split": "test", "image_file": "a.jpg"}])
    with pytest.raises(DataError, match=r"bad\.jsonlines: line 1: no 'description' key"):
        read_docci(bad)
    with pytest.raises(DataError, match=r"coco\.json: line 1: a JSON list"):
        read_docci(write_json(tmp_path / "coco.json", KARPATHY_ROWS))
    only_train = write_jsonl(tmp_path / "train.jsonlines", rows[:1])
    with pytest.raises(DataError, match=r"train\.jsonlines: empty benchmark"):
        read_docci(only_train)


# ---------------------------------------------------------------- xm3600
def xm3600_row(key: str, languages: dict[str, list[str]]) -> dict:
    row = {"image/key": key}
    for lang, captions in languages.items():
        row[lang] = {"caption": captions, "caption/tokenized": [c.lower() for c in captions],
                     "caption/tokenized/lowercase": [c.lower() for c in captions]}
    return row


@pytest.fixture
def xm3600(tmp_path):
    rows = [xm3600_row("000411001ff7dd4f", {"en": ["A dog.", "A brown dog."], "de": ["Ein Hund."],
                                             "zh": ["一只狗。"]}),
            xm3600_row("00229ff2ae0e8b29", {"en": ["A red house."], "de": ["Ein rotes Haus.", "Ein Haus."]}),
            xm3600_row("0033ebed6a8bb9c1", {"en": ["A beach at sunset."], "de": ["Ein Strand."],
                                             "zh": ["日落时的海滩。"]})]
    for row in rows:
        image(tmp_path / "xm3600" / "images" / f"{row['image/key']}.jpg", "JPEG")
    return write_jsonl(tmp_path / "xm3600" / "captions.jsonl", rows)


def test_xm3600_languages_and_selection(xm3600):
    assert xm3600_languages(xm3600) == ["de", "en", "zh"]
    en = read_xm3600(xm3600)
    assert en.language == "en" and en.name == "xm3600-en"
    assert en.texts == ["A dog.", "A brown dog.", "A red house.", "A beach at sunset."]
    assert en.text_to_image == [0, 0, 1, 2]
    de = read_xm3600(xm3600.parent, language="de")
    assert de.texts == ["Ein Hund.", "Ein rotes Haus.", "Ein Haus.", "Ein Strand."]
    assert de.text_to_image == [0, 1, 1, 2]
    zh = load_retrieval_benchmark("xm3600", xm3600, language="zh")
    assert zh.texts == ["一只狗。", "日落时的海滩。"] and zh.text_to_image == [0, 1]
    assert [p.stem for p in zh.image_paths] == ["000411001ff7dd4f", "0033ebed6a8bb9c1"]
    assert zh.skipped == {"image_without_language": 1}
    with pytest.raises(DataError, match=r"no captions in language 'fr'.*\['de', 'en', 'zh'\]"):
        read_xm3600(xm3600, language="fr")


def test_xm3600_missing_key_and_images(xm3600, tmp_path):
    (xm3600.parent / "images" / "00229ff2ae0e8b29.jpg").unlink()
    with pytest.raises(DataError, match="00229ff2ae0e8b29.jpg"):
        read_xm3600(xm3600)
    assert read_xm3600(xm3600, skip_missing=True).skipped == {"missing_image": 1, "text_of_missing_image": 1}
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"en": {"caption": ["x"]}}])
    with pytest.raises(DataError, match=r"bad\.jsonl: line 1: no 'image/key' key"):
        read_xm3600(bad)


# ---------------------------------------------------------------- generic jsonl / csv
def test_jsonl_generic_fields_lists_and_repeated_images(tmp_path):
    rows = [{"image": "imgs/a.png", "caption": "a short one", "long": ["a long one", "another long one"]},
            {"image": "imgs/b.png", "caption": "b short", "long": "b long"},
            {"image": "imgs/a.png", "caption": "a again", "long": []}]
    for name in ("a", "b"):
        image(tmp_path / "imgs" / f"{name}.png")
    path = write_jsonl(tmp_path / "bench.jsonl", rows)
    bench = read_jsonl(path)
    assert bench.texts == ["a short one", "b short", "a again"] and bench.text_to_image == [0, 1, 0]
    both = load_retrieval_benchmark("jsonl", path, fields=["caption", "long"], image_field="image", name="mine")
    assert both.name == "mine"
    assert both.texts == ["a short one", "a long one", "another long one", "b short", "b long", "a again"]
    assert both.text_to_image == [0, 0, 0, 1, 1, 0]
    assert read_jsonl(path, fields="long").texts == ["a long one", "another long one", "b long"]
    with pytest.raises(DataError, match=r"bench\.jsonl: line 1: no 'text' key"):
        read_jsonl(path, fields=["text"])
    with pytest.raises(DataError, match=r"bench\.jsonl: line 1: no 'file' key"):
        read_jsonl(path, image_field="file")


def test_csv_generic(tmp_path):
    image(tmp_path / "images" / "x.png")
    image(tmp_path / "images" / "y.png")
    with open(tmp_path / "bench.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "title", "alt"])
        writer.writerow(["x.png", "x title, with a comma", "x alt"])
        writer.writerow(["y.png", "y title", ""])
    bench = read_csv(tmp_path / "bench.csv", image_root=tmp_path / "images", fields="title,alt", image_field="filepath")
    assert bench.texts == ["x title, with a comma", "x alt", "y title"]
    assert bench.text_to_image == [0, 0, 1] and bench.skipped == {"empty_caption": 1}
    (tmp_path / "b.tsv").write_text("image\tcaption\nimages/x.png\tfrom a tsv\n", encoding="utf-8")
    assert read_csv(tmp_path / "b.tsv").texts == ["from a tsv"]
    (tmp_path / "short.csv").write_text("image,caption\nimages/x.png\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"short\.csv: line 2: no 'caption' key"):
        read_csv(tmp_path / "short.csv")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.csv: empty file"):
        read_csv(tmp_path / "empty.csv")


# ---------------------------------------------------------------- classification
def test_shipped_class_names_and_templates():
    names, templates = load_imagenet_class_names(), load_clip_templates()
    assert len(names) == 1000 and len(templates) == 80
    assert names[0] == "tench" and names[1] == "goldfish" and names[-1] == "toilet paper"
    assert names[207] == "Golden Retriever" and names[281] == "tabby cat" and names[409] == "analog clock"
    assert all(name.strip() == name and name for name in names)
    assert all("{}" in t for t in templates) and len(set(templates)) == 80
    assert templates[0] == "a bad photo of a {}." and templates[-1] == "a tattoo of the {}."


def test_wnid_mapping():
    wnids = [f"n{i:08d}" for i in range(1440764, 1440764 + 1000)]
    assert imagenet_wnid_class_names(wnids) == load_imagenet_class_names()
    assert imagenet_wnid_class_names(wnids[:999]) is None  # not the full 1000: names can't be placed
    assert imagenet_wnid_class_names(wnids[:999] + ["golden_retriever"]) is None
    assert imagenet_wnid_class_names(list(reversed(wnids))) is None


@pytest.fixture
def class_root(tmp_path):
    root = tmp_path / "val"
    image(root / "golden_retriever" / "b.JPEG", "JPEG")
    image(root / "golden_retriever" / "a.jpg", "JPEG")
    image(root / "golden_retriever" / "c.png")
    (root / "golden_retriever" / "notes.txt").write_text("not an image")
    image(root / "tabby_cat" / "x.webp", "WEBP")
    image(root / "tabby_cat" / "y.jpeg", "JPEG")
    return root


def test_class_folder_names_from_folders(class_root):
    bench = read_class_folder(class_root)
    assert bench.class_names == ["golden retriever", "tabby cat"]
    assert [p.name for p in bench.image_paths] == ["a.jpg", "b.JPEG", "c.png", "x.webp", "y.jpeg"]
    assert bench.labels == [0, 0, 0, 1, 1]
    assert all(p.is_absolute() for p in bench.image_paths)
    assert bench.templates == load_clip_templates()
    assert bench.prompts(1)[0] == "a bad photo of a tabby cat."
    assert "5 images, 2 classes, 80 templates" in bench.describe()
    limited = read_class_folder(class_root, limit_per_class=1)
    assert [p.name for p in limited.image_paths] == ["a.jpg", "x.webp"] and limited.labels == [0, 1]


def test_class_folder_names_and_templates_given(class_root, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("dog\ncat\n\n", encoding="utf-8")
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\nitap of a {}.\n", encoding="utf-8")
    bench = read_class_folder(class_root, class_names=names, templates=templates)
    assert bench.class_names == ["dog", "cat"]
    assert bench.templates == ["a photo of a {}.", "itap of a {}."]
    assert read_class_folder(class_root, class_names=["Dog", "Cat"]).class_names == ["Dog", "Cat"]
    with pytest.raises(DataError, match="2 class folders but 3 class names"):
        read_class_folder(class_root, class_names=["a", "b", "c"])
    with pytest.raises(DataError, match="has no {} for the class name"):
        read_class_folder(class_root, templates=["a photo."])


def test_class_folder_empty_class_and_errors(class_root, tmp_path):
    (class_root / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra: class folder without images"):
        read_class_folder(class_root)
    bench = read_class_folder(class_root, skip_missing=True)
    assert bench.class_names == ["golden retriever", "tabby cat", "zebra"]  # still a candidate class
    assert bench.skipped == {"empty_class": 1}
    (class_root / "zebra" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(DataError, match="not readable files"):
        read_class_folder(class_root)
    assert read_class_folder(class_root, skip_missing=True).skipped == {"empty_class": 1, "missing_image": 1}
    with pytest.raises(DataError, match="not a folder"):
        read_class_folder(tmp_path / "absent")
    (tmp_path / "flat").mkdir()
    image(tmp_path / "flat" / "a.jpg")
    with pytest.raises(DataError, match="no class folders"):
        read_class_folder(tmp_path / "flat")
