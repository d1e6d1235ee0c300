"""The emoji-scene demo data (llm2clip.demo): deterministic scenes, captions, rendering, dataset folders."""
import json
import re

import numpy as np
import pytest

from llm2clip.demo import emoji_pool, rendering, scenes as scene_module


def _font_available() -> bool:
    try:
        rendering.font_path()
        return True
    except FileNotFoundError:
        return False


needs_font = pytest.mark.skipif(
    not _font_available(),
    reason="Noto Color Emoji font missing: install Debian's fonts-noto-color-emoji "
           "(scripts/system-deps.sh) or set LLM2CLIP_EMOJI_FONT")


@pytest.fixture(scope="module")
def scenes():
    return scene_module.make_scenes(200, seed=0)


# ---- pool ---------------------------------------------------------------------------------

def test_pool_is_curated_sorted_and_fully_named():
    pool = emoji_pool.emoji_pool()
    assert 300 <= len(pool) <= 1000
    codepoints = [ord(info.char[0]) for info in pool]
    assert codepoints == sorted(codepoints)
    assert all(len(info.char.replace("\ufe0f", "")) == 1 for info in pool)  # no ZWJ/skin tone/flags
    assert len({info.name for info in pool}) == len(pool)
    for info in pool:
        assert set(info.names) == {"en", *emoji_pool.LANGUAGES}
        assert info.name and ":" not in info.name and "_" not in info.name
    assert {info.category for info in pool} >= {"animal", "food", "vehicle", "sky", "object"}


# ---- scenes -------------------------------------------------------------------------------

def test_make_scenes_is_deterministic(scenes):
    assert scene_module.make_scenes(200, seed=0) == scenes
    assert scene_module.make_scenes(20, seed=0) == scenes[:20]  # a prefix: n does not reshuffle
    other = scene_module.make_scenes(20, seed=1)
    assert [s.emojis for s in other] != [s.emojis for s in scenes[:20]]
    assert [s.captions for s in other] != [s.captions for s in scenes[:20]]


def test_scene_structure(scenes):
    assert [s.id for s in scenes[:3]] == ["scene-00000", "scene-00001", "scene-00002"]
    for s in scenes:
        assert 2 <= len(s.emojis) <= 4 and len(set(s.emojis)) == len(s.emojis)
        assert len(s.names) == len(s.layout) == len(s.sizes) == len(s.emojis)
        assert len(set(s.layout)) == len(s.layout)
        assert all(0 <= r < 3 and 0 <= c < 3 for r, c in s.layout)
        assert s.layout == sorted(s.layout)  # reading order
        assert set(s.sizes) <= {"small", "large"} and s.background in emoji_pool.BACKGROUNDS
    assert len({frozenset(s.emojis) for s in scenes}) == len(scenes)


def test_captions(scenes):
    for s in scenes:
        assert all(isinstance(v, str) and v.strip() for v in s.captions.values())
        assert s.captions["short"] != s.captions["short_alt"]
        for name in s.names:
            for field in ("short", "short_alt", "spatial", "dense"):
                assert name in s.captions[field]
        assert s.background in s.captions["dense"]
    assert len({s.captions["short"] for s in scenes}) == len(scenes)


def test_dense_captions_are_long(scenes):
    # Whitespace words undercount CLIP BPE tokens, so > 77 words is > 77 tokens.
    assert min(len(s.captions["dense"].split()) for s in scenes[:50]) > 77
    templates = {s.captions["dense"].split(".")[0].split(" ")[0] for s in scenes[:50]}
    assert len(templates) > 1  # sentence templates vary across scenes


def test_long_caption_is_the_where_part_of_the_dense_one(scenes):
    for s in scenes[:50]:
        long_sentences = s.captions["long"].split(". ")
        assert all(sentence in s.captions["dense"] for sentence in long_sentences)
        assert all(name in s.captions["long"] for name in s.names)
        assert len(s.captions["long"]) < len(s.captions["dense"])
    # most are still past CLIP's 77 tokens (whitespace words undercount tokens)
    assert sum(len(s.captions["long"].split()) > 60 for s in scenes[:50]) > 40


def test_spatial_caption_names_positions():
    scene = scene_module.compose_scene("x", ["🐱", "🍕"], [(2, 2), (0, 0)], ["small", "large"], "white")
    assert scene.emojis == ["🍕", "🐱"]  # sorted into reading order with their cells and sizes
    assert scene.sizes == ["large", "small"]
    assert scene.captions["short"] == "a pizza and a cat face"
    assert scene.captions["spatial"] == (
        "a pizza in the top left corner and a cat face in the bottom right corner")
    assert "above and to the left of" in scene.captions["dense"]


def test_multilingual_captions_contain_localized_names(scenes):
    for s in scenes[:30]:
        for lang in emoji_pool.LANGUAGES:
            caption = s.captions[f"short_{lang}"]
            for char in s.emojis:
                assert emoji_pool.emoji_info(char).names[lang] in caption
    scene = scene_module.compose_scene("x", ["🐱", "🍕"], [(0, 0), (0, 1)], ["small", "small"], "white")
    assert scene.captions["short_de"] == "katzengesicht und pizza"
    assert scene.captions["short_ja"] == "ネコの顔とピザ"


def test_split_scenes_is_fixed_and_disjoint(scenes):
    train, test = scene_module.split_scenes(scenes, test_fraction=0.25, seed=3)
    assert len(test) == 50 and len(train) == 150
    assert {s.id for s in train}.isdisjoint({s.id for s in test})
    assert {s.id for s in train} | {s.id for s in test} == {s.id for s in scenes}
    assert scene_module.split_scenes(scenes, 0.25, seed=3) == (train, test)
    assert scene_module.split_scenes(scenes, 0.25, seed=4)[1] != test

    train, test = scene_module.make_split(40, 10, seed=0)
    assert len(train) == 40 and len(test) == 10
    assert {s.id for s in train}.isdisjoint({s.id for s in test})
    assert {frozenset(s.emojis) for s in train}.isdisjoint({frozenset(s.emojis) for s in test})


def test_caption_records(scenes, tmp_path):
    assert scene_module.DEFAULT_RECORD_FIELDS == ("short", "short_alt", "spatial", "dense")
    records = scene_module.caption_records(scenes[:10])
    assert [r.id for r in records] == [s.id for s in scenes[:10]]
    for record, scene in zip(records, scenes):
        assert record.captions == [scene.captions[f] for f in scene_module.DEFAULT_RECORD_FIELDS]
        assert record.captions[0] != record.captions[1]
        assert record.image is None
    records = scene_module.caption_records(scenes[:2], fields=("short", "short_fr"), image_root=tmp_path)
    assert records[0].captions == [scenes[0].captions["short"], scenes[0].captions["short_fr"]]
    assert records[0].image == str(tmp_path / "images" / "scene-00000.png")
    with pytest.raises(KeyError, match="short_xx"):
        scene_module.caption_records(scenes[:1], fields=("short", "short_xx"))


# ---- rendering ----------------------------------------------------------------------------

def test_missing_font_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv(rendering.FONT_ENV, str(tmp_path / "missing.ttf"))
    with pytest.raises(FileNotFoundError, match="fonts-noto-color-emoji"):
        rendering.font_path()


@needs_font
def test_render_scene_draws_colorful_emoji_in_their_cells():
    scene = scene_module.compose_scene("x", ["🍕", "🐱"], [(0, 0), (2, 2)], ["large", "small"],
                             "light blue")
    image = rendering.render_scene(scene, size=224)
    assert image.mode == "RGB" and image.size == (224, 224)
    pixels = np.asarray(image).astype(int)
    background = np.array(emoji_pool.BACKGROUNDS["light blue"])
    cell = 224 // 3

    def region(row, col):
        return pixels[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell]

    for row, col in scene.layout:
        patch = region(row, col)
        changed = np.abs(patch - background).sum(-1) > 30
        assert changed.mean() > 0.1  # the emoji covers a good part of its cell
        spread = patch.max(-1) - patch.min(-1)  # channel spread: 0 for grays
        assert (spread[changed] > 80).mean() > 0.2  # ... in colour
    large, small = (np.abs(region(*c) - background).sum(-1) > 30 for c in scene.layout)
    assert large.mean() > small.mean()
    assert (region(1, 1) == background).all()  # empty cells stay plain background


@needs_font
def test_every_pool_emoji_renders():
    # Guards against a font version that lacks some of the curated emoji.
    for info in emoji_pool.emoji_pool():
        glyph = rendering.emoji_glyph(info.char)
        assert glyph.mode == "RGBA" and min(glyph.size) > 40, info


@needs_font
def test_write_image_dataset_is_readable_and_resumable(scenes, tmp_path):
    from PIL import Image

    index = rendering.write_image_dataset(scenes[:4], tmp_path, size=64)
    assert index == tmp_path / "captions.jsonl"
    rows = [json.loads(line) for line in index.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [s.id for s in scenes[:4]]
    for row, scene in zip(rows, scenes):
        assert {k: row[k] for k in scene.captions} == scene.captions
        assert row["meta"]["emojis"] == scene.emojis
        with Image.open(tmp_path / row["image"]) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
    assert not list(tmp_path.rglob("*.tmp"))

    first = tmp_path / rows[0]["image"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "images").iterdir()}
    second = tmp_path / rows[1]["image"]
    second.unlink()
    rendering.write_image_dataset(scenes[:5], tmp_path, size=64)
    assert first.stat().st_mtime_ns == stamps[first]  # existing images are not rewritten
    assert second.exists() and len(list((tmp_path / "images").iterdir())) == 5
    assert len(index.read_text(encoding="utf-8").splitlines()) == 5
    assert all(re.fullmatch(r"scene-\d{5}\.png", p.name) for p in (tmp_path / "images").iterdir())


# ---- near-duplicate families -------------------------------------------------------------

def test_near_duplicate_families_differ_only_past_77_tokens():
    """Urban-1k's property: a family's walk captions are the same in MiniLM's first 77
    tokens (what the baseline reads) and all differ in full; the scenes differ in exactly
    one emoji, at the same position, from the fourth object on."""
    from transformers import AutoTokenizer

    from llm2clip.baseline.text_tower import embedded_minilm_path
    from llm2clip.demo import near_duplicates as nd

    scenes = nd.make_families(40, seed=5, prefix="fam")
    assert nd.make_families(40, seed=5, prefix="fam") == scenes  # a pure function
    assert [s.id for s in scenes[:5]] == ["fam-0000-0", "fam-0000-1", "fam-0000-2", "fam-0000-3", "fam-0001-0"]
    assert len({frozenset(s.emojis) for s in scenes}) == len(scenes)
    tokenizer = AutoTokenizer.from_pretrained(embedded_minilm_path())
    for family in nd.families_of(scenes):
        assert len(family) == nd.FAMILY_SIZE
        base = family[0]
        assert nd.OBJECTS[0] <= len(base.emojis) <= nd.OBJECTS[1]
        changed = {i for s in family[1:] for i, (a, b) in enumerate(zip(base.emojis, s.emojis)) if a != b}
        assert len(changed) == 1 and min(changed) >= nd.FIRST_CHANGED
        assert all((s.layout, s.sizes, s.background) == (base.layout, base.sizes, base.background) for s in family)
        walks = [s.captions[nd.NEAR_DUPLICATE_FIELD] for s in family]
        assert nd.window_identical(tokenizer, walks, 77) == (True, True), walks
        for s, walk in zip(family, walks):  # the walk names every object
            assert all(name in walk for name in s.names)
    other = nd.make_families(5, seed=6, prefix="x", exclude=frozenset(frozenset(s.emojis) for s in scenes))
    assert not {frozenset(s.emojis) for s in other} & {frozenset(s.emojis) for s in scenes}
