"""`llm2clip index` / `search` (issue 18): results equal a brute-force ranking of
encode_image/encode_text, the index round-trips, a crashed build resumes to the same
bytes, an index of another model is refused, bad images are counted skips, shards work."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llm2clip import LLM2CLIP
from llm2clip.cli import main as cli_main
from llm2clip.demo.rendering import render_scene
from llm2clip.demo.scenes import make_scenes
from llm2clip.model import LLM2CLIPConfig
from llm2clip.search import (IncompleteIndexError, Index, IndexKind, IndexMismatchError, build_index,
                             search_showcase)
from llm2clip.search import build as build_mod
from llm2clip.text import CaptionEncoder
from llm2clip.vision.image_loading import load_image

QUERIES = ["a red apple to the left of a small dog, on a blue background, and a very long tail of words " * 3,
           "Eine Katze sitzt unter einem Baum.", "猫和狗"]


def save_tiny_model(folder: Path, tiny_llama: str, vision: str, seed: int) -> str:
    encoder = CaptionEncoder.from_pretrained(tiny_llama, precision="fp32")
    torch.manual_seed(seed)
    LLM2CLIP(LLM2CLIPConfig(vision=vision, text_dim=encoder.dim, embed_dim=16),
             caption_encoder=encoder).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def models(tiny_llama, tiny_visions, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("search-models")
    return {name: save_tiny_model(root / name, tiny_llama, tiny_visions["clip"], seed)
            for name, seed in (("a", 0), ("b", 1))}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """12 rendered emoji scenes in two folders, plus files an index must skip or ignore."""
    root = tmp_path_factory.mktemp("photos")
    for i, scene in enumerate(make_scenes(12, seed=3)):
        folder = root / ("nested" if i % 3 == 0 else "")
        folder.mkdir(exist_ok=True)
        render_scene(scene, size=48).save(folder / f"{scene.id}.png")
    (root / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def good_images(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*.png") if p.name != "truncated.png"), key=lambda p: p.relative_to(root).as_posix())


def brute_force(model_dir: str, images: list[Path], queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """[n_queries, n_images] cosines from encode_text/encode_image, one image at a time."""
    model = LLM2CLIP.from_pretrained(model_dir).eval()
    with torch.no_grad():
        image_emb = torch.cat([model.encode_image([load_image(p)]) for p in images])
        text_emb = model.encode_text(queries)
        query_img = model.encode_image([load_image(images[4])])
    return (text_emb @ image_emb.T).numpy(), (query_img @ image_emb.T).numpy()


def test_search_equals_a_brute_force_ranking(models, photos, tmp_path):
    images = good_images(photos)
    keys = [p.relative_to(photos).as_posix() for p in images]
    text_scores, image_scores = brute_force(models["a"], images, QUERIES)
    for dtype, tolerance in (("fp32", 1e-5), ("fp16", 2e-3)):
        out = build_index(models["a"], photos, tmp_path / dtype, kind=IndexKind(dtype=dtype), batch_size=5, shard_size=4)
        index = Index.open(out)
        assert len(index) == len(images)
        for hits, truth in [*zip(index.search(QUERIES, k=len(images)), text_scores),
                            (index.search_images([images[4]], k=len(images))[0], image_scores[0])]:
            assert [h.rank for h in hits] == list(range(1, len(images) + 1))
            np.testing.assert_allclose([h.score for h in hits], np.sort(truth)[::-1], atol=tolerance)
            expected = np.argsort(-truth, kind="stable")
            gaps = np.diff(np.sort(truth)[::-1])
            for position, hit in enumerate(hits):  # same image at every rank not within fp16 noise of a neighbour
                near_tie = (position > 0 and -gaps[position - 1] < 2 * tolerance) or \
                    (position < len(gaps) and -gaps[position] < 2 * tolerance)
                if not near_tie:
                    assert hit.key == keys[expected[position]], (dtype, position)
        assert index.search_images([images[4]], k=1)[0][0].key == keys[4]  # an image finds itself
        assert index.search(QUERIES[1], k=3)[0] == index.search([QUERIES[1]], k=3)[0]


def test_index_and_search_commands_round_trip_and_count_bad_images(models, photos, tmp_path, capsys):
    out = tmp_path / "idx"
    assert cli_main(["index", "--model", models["a"], "--images", str(photos), "--out", str(out),
                     "--shard-size", "5", "--batch-size", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"index": str(out), "images": 14, "indexed": 12, "skipped": 2, "kind": "flat",
                       "dtype": "fp16", "dim": 16}
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted(s["key"] for s in skipped) == ["empty.jpg", "truncated.png"]
    assert any("empty file" in s["reason"] for s in skipped)
    # a second run finds the finished index and changes nothing
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert cli_main(["index", "--model", models["a"], "--images", str(photos), "--out", str(out),
                     "--shard-size", "5", "--batch-size", "4"]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    capsys.readouterr()
    assert cli_main(["search", str(out), QUERIES[0], QUERIES[2], "--k", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    api = Index.open(out).search([QUERIES[0], QUERIES[2]], k=3)
    assert [[(r["image"], r["score"]) for r in q["results"]] for q in printed] == \
        [[(h.key, round(h.score, 6)) for h in hits] for hits in api]
    assert cli_main(["search", str(out), "--image", str(good_images(photos)[0]), "--k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("query: image: ") and lines[1].split()[0] == "1" and len(lines) == 3


def test_a_crashed_build_resumes_to_the_bytes_of_an_uninterrupted_one(models, photos, tmp_path, monkeypatch):
    whole = build_index(models["a"], photos, tmp_path / "whole", shard_size=3)
    real_write, written = build_mod._write, []

    def crash_after_two(path, *args):
        if len(written) == 2:
            raise KeyboardInterrupt  # the process dies between shards
        real_write(path, *args)
        written.append(path.name)

    monkeypatch.setattr(build_mod, "_write", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_index(models["a"], photos, tmp_path / "resumed", shard_size=3)
    resumed = tmp_path / "resumed"
    (resumed / "shard-00003.safetensors.tmp").write_bytes(b"half a shard")  # what a kill mid-write leaves
    with pytest.raises(IncompleteIndexError, match="unfinished index"):
        Index.open(resumed)
    monkeypatch.setattr(build_mod, "_write", real_write)
    build_index(models["a"], photos, resumed, shard_size=3)
    assert sorted(p.name for p in resumed.iterdir()) == sorted(p.name for p in whole.iterdir())
    for path in whole.iterdir():
        assert (resumed / path.name).read_bytes() == path.read_bytes(), path.name
    assert written == ["shard-00000.safetensors", "shard-00001.safetensors"]


def test_only_the_missing_shards_are_embedded_on_resume(models, photos, tmp_path, monkeypatch):
    out = build_index(models["a"], photos, tmp_path / "idx", shard_size=4)
    (out / "index.json").unlink()
    (out / "shard-00001.safetensors").unlink()
    corrupted = bytearray((out / "shard-00002.safetensors").read_bytes())
    corrupted[-3] ^= 0xFF  # a flipped bit in the vectors: the shard's hash no longer matches
    (out / "shard-00002.safetensors").write_bytes(bytes(corrupted))
    embedded = []
    real_embed = build_mod._embed
    monkeypatch.setattr(build_mod, "_embed", lambda encoder, rows, *rest: embedded.append(rows[0].key) or
                        real_embed(encoder, rows, *rest))
    build_index(models["a"], photos, out, shard_size=4)
    keys = [ref.key for ref in build_mod.list_images(photos)]
    assert embedded == [keys[4], keys[8]]
    assert len(Index.open(out, verify_data=True)) == 12


def test_an_index_of_another_model_is_refused(models, photos, tmp_path, capsys):
    out = build_index(models["a"], photos, tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="heads: index has"):
        Index.open(out, model=models["b"])
    assert cli_main(["search", str(out), "a cat", "--model", models["b"]]) == 2
    assert "built by another model" in capsys.readouterr().err
    assert cli_main(["index", "--model", models["b"], "--images", str(photos), "--out", str(out)]) == 2
    assert "already holds an index built by another model" in capsys.readouterr().err
    # the model folder the index remembers was retrained in place: refused too
    copy = tmp_path / "model-a"
    import shutil

    shutil.copytree(models["a"], copy)
    moved = build_index(copy, photos, tmp_path / "idx-copy")
    assert len(Index.open(moved)) == 12  # a copy is the same model
    model = LLM2CLIP.from_pretrained(copy)
    with torch.no_grad():
        next(model.adaptor.parameters()).add_(0.01)  # "retrained"
    model.save_pretrained(copy)
    with pytest.raises(IndexMismatchError, match="heads"):
        Index.open(moved)
    assert cli_main(["index", "--model", models["b"], "--images", str(photos), "--out", str(out), "--overwrite"]) == 0
    assert len(Index.open(out, model=models["b"])) == 12


def test_webdataset_shards_are_indexed_by_member(models, photos, tmp_path):
    images = good_images(photos)
    shards = []
    for k in range(2):
        path = tmp_path / f"shard-{k:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i, image in enumerate(images[k * 6:(k + 1) * 6]):
                data = image.read_bytes()
                info = tarfile.TarInfo(f"sample{k}{i}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                caption = tarfile.TarInfo(f"sample{k}{i}.txt")
                caption.size = 3
                tar.addfile(caption, io.BytesIO(b"cat"))
        shards.append(path)
    spec = str(tmp_path / "shard-{00000..00001}.tar")
    out = build_index(models["a"], spec, tmp_path / "idx", kind=IndexKind(dtype="fp32"))
    index = Index.open(out)
    assert len(index) == 12
    hit = index.search_images([images[7]], k=1)[0][0]
    assert hit.key == f"{shards[1]}#sample11.png" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(np.asarray(index.load(hit)), np.asarray(load_image(images[7])))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_find_what_exact_search_finds_on_a_small_index(models, photos, tmp_path, kind):
    exact = Index.open(build_index(models["a"], photos, tmp_path / "flat"))
    options = {"nlist": 2, "nprobe": 2} if kind == "ivf" else {}
    approx = Index.open(build_index(models["a"], photos, tmp_path / kind, kind=IndexKind(kind=kind, **options)))
    for a, b in zip(exact.search(QUERIES, k=5), approx.search(QUERIES, k=5)):  # every cell visited: exact
        assert [h.key for h in a] == [h.key for h in b]


def test_flags_of_another_kind_are_refused(models, photos, tmp_path, capsys):
    assert cli_main(["index", "--model", models["a"], "--images", str(photos), "--out", str(tmp_path / "i"),
                     "--nlist", "4"]) == 2
    assert "--nlist is for --kind ivf" in capsys.readouterr().err
    out = build_index(models["a"], photos, tmp_path / "flat")
    assert cli_main(["search", str(out), "cat", "--nprobe", "3"]) == 2
    assert "--nprobe is for an ivf index" in capsys.readouterr().err
    assert cli_main(["search", str(out)]) == 2
    assert "give a text query" in capsys.readouterr().err


def test_showcase_writes_a_gallery_and_a_contact_sheet_per_model(models, photos, tmp_path):
    result = search_showcase({"A": models["a"], "B": models["b"]}, photos, QUERIES[:2], tmp_path / "show", k=3)
    page = Path(result["html"]).read_text()
    assert page.count("<figure") == 2 * 2 * 3 and page.count('class="model"') == 4
    sheet = Image.open(result["png"])
    assert sheet.size[0] > 3 * 128 and sheet.size[1] >= 4 * 128
    for query in QUERIES[:2]:
        for name in ("A", "B"):
            expected = Index.open(tmp_path / "show" / f"index-{name}").search(query, k=3)[0]
            assert result["results"][query][name] == [[h.key, round(h.score, 4)] for h in expected]


def test_an_hf_clip_baseline_folder_indexes_and_searches_like_its_own_encoders(tiny_clip, photos, tmp_path):
    """The original CLIP (its own text tower) on the same images, for comparison."""
    from llm2clip.baseline import HFClipBaseline

    index = Index.open(build_index(tiny_clip, photos, tmp_path / "idx", kind=IndexKind(dtype="fp32")))
    model = HFClipBaseline.from_pretrained(tiny_clip).eval()
    images = good_images(photos)
    with torch.no_grad():
        truth = (model.encode_text(["a cat and a dog"]) @ torch.cat([model.encode_image([load_image(p)])
                                                                      for p in images]).T)[0].numpy()
    hits = index.search("a cat and a dog", k=len(images))[0]
    np.testing.assert_allclose([h.score for h in hits], np.sort(truth)[::-1], atol=1e-5)
    assert hits[0].key == images[int(np.argmax(truth))].relative_to(photos).as_posix()
