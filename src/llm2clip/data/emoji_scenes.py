"""Emoji scenes: the demo's image-caption data, built only from data that ships in packages.

A scene is 2-4 distinct emoji on a 3x3 grid over a plain background colour. Images are
rendered from Debian's Noto Color Emoji font; captions come from the emoji's CLDR names
in the `emoji` package (14 languages). Each scene gets several captions of one image:
two short ones worded differently (the stage-1 positive pair), a spatial one, a dense
one well over CLIP's 77 tokens (long-caption retrieval) and a short one per language
(multilingual retrieval). Everything is a pure function of (n, seed): no randomness per
run, no downloads.
"""
from __future__ import annotations

import functools
import io
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import emoji
from PIL import Image, ImageDraw, ImageFont

from ..atomic_file import atomic_write_bytes, atomic_write_text

LANGUAGES = ("es", "de", "fr", "it", "pt", "ru", "tr", "ar", "fa", "id", "ja", "ko", "zh")
DEFAULT_RECORD_FIELDS = ("short", "short_alt", "spatial", "dense")
GRID = 3

# ----------------------------------------------------------------------------------------
# The emoji pool: curated codepoint ranges per category, filtered by the emoji package.
# ----------------------------------------------------------------------------------------

# (category, counted noun singular, plural, group label, hex codepoints "LO-HI" or "CP").
# Ranges are hand-picked to hold concrete, drawable things (no faces, people, hands,
# signs or buttons); codepoints that are not single fully-qualified emoji are skipped.
_CATEGORIES = (
    ("animal", "animal", "animals", "animals",
     "1F400-1F43C 1F43F 1F54A 1F577 1F980-1F9AD 1FAB0-1FAB3"),
    ("plant", "plant", "plants", "plants",
     "2618 1F331-1F344 1F490 1F4AE 1F940 1FAB4 1FAB7"),
    ("food", "food or drink item", "food or drink items", "food and drink",
     "2615 1F32D-1F330 1F345-1F37F 1F942-1F944 1F950-1F96F 1F9C0-1F9CB 1FAD0-1FAD9"),
    ("sky", "sky or weather symbol", "sky or weather symbols", "sky and weather",
     "2600-2604 2614 26A1 26C4-26C8 2744 2B50 1F300 1F308 1F30A 1F311-1F320 1F324-1F32A "
     "1F4A7 1F525 1FA90"),
    ("vehicle", "vehicle", "vehicles", "vehicles",
     "2708 26F4-26F5 1F3CD-1F3CE 1F680-1F6A2 1F6A4 1F6B2 1F6E5 1F6E9 1F6EB-1F6EC 1F6F0 "
     "1F6F3-1F6FC"),
    ("place", "building or place", "buildings or places", "buildings and places",
     "26EA 26F0-26F2 26FA 1F3A0-1F3A2 1F3AA 1F3D4-1F3E6 1F3E8-1F3ED 1F3EF-1F3F0 "
     "1F54C-1F54D 1F5FB-1F5FD 1F6D5-1F6D6"),
    ("sport", "sports or game item", "sports or game items", "sports and games",
     "26BD-26BE 26F3 26F8 1F3A3 1F3AF-1F3B3 1F3BE-1F3C0 1F3C5-1F3C6 1F3C8-1F3C9 1F3CF-1F3D3 "
     "1F3F8-1F3F9 1F93F 1F945-1F94F 1FA80-1FA83"),
    ("music", "musical item", "musical items", "music",
     "1F3A4 1F3A7 1F3B5-1F3BC 1F4EF 1F514 1F941 1FA95 1FA97-1FA98"),
    ("clothing", "piece of clothing or accessory", "pieces of clothing or accessories",
     "clothing and accessories",
     "26D1 1F393 1F3A9 1F451-1F462 1F484 1F48D-1F48E 1F576 1F97B-1F97F 1F9E2-1F9E6 "
     "1FA70-1FA74"),
    ("festive", "festive item", "festive items", "celebrations",
     "1F380-1F384 1F386-1F38B 1F38D-1F391 1F3EE 1F9E7-1F9E8 1FA85-1FA86"),
    ("object", "everyday object", "everyday objects", "everyday objects",
     "231A-231B 23F0 23F3 2602 260E 2693 2696-2697 2699 2702 2709 270F 2712 1F302 "
     "1F3A5 1F3A8 1F3AB-1F3AC 1F3AE 1F3F7 1F3FA 1F488-1F48A 1F48C 1F4A1 1F4A3 1F4B0 "
     "1F4B3-1F4B5 1F4BA-1F4C0 1F4C5 1F4CB-1F4D0 1F4D6 1F4DA 1F4DC 1F4DE-1F4E0 1F4E6 "
     "1F4EE 1F4F0-1F4F1 1F4F7 1F4F9-1F4FB 1F50B-1F50C 1F511 1F526-1F52E 1F56F-1F570 "
     "1F579 1F58A-1F58D 1F5A5 1F5A8 1F5BC 1F5D1 1F5DD 1F5E1 1F5FA 1F6AA 1F6BD 1F6C1 "
     "1F6CB 1F6CD-1F6CF 1F6D2 1F6E0-1F6E2 1F9EA-1F9FD 1FA91-1FAA8"),
)

# Newer emoji may be missing from older system fonts; Debian 12's font covers Emoji 15.
_MAX_EMOJI_VERSION = 14.0


@dataclass(frozen=True)
class EmojiInfo:
    char: str  # the emoji as it appears in text (with U+FE0F where it is fully qualified)
    name: str  # English CLDR name, e.g. "cat face"
    category: str
    names: dict = field(hash=False, compare=False)  # language -> CLDR name, includes "en"


def _codepoints(spec: str) -> Iterable[int]:
    for part in spec.split():
        lo, _, hi = part.partition("-")
        yield from range(int(lo, 16), int(hi or lo, 16) + 1)


def _clean_name(raw: str) -> str:
    """':cat_face:' -> 'cat face'; also turns the CLDR curly apostrophe into a plain one."""
    return raw.strip(":").replace("_", " ").replace("\u2019", "'").strip()


@functools.lru_cache(maxsize=1)
def emoji_pool() -> tuple[EmojiInfo, ...]:
    """The curated emoji, sorted by codepoint; every entry has a name in all LANGUAGES."""
    emoji.config.load_language(list(LANGUAGES))  # the package loads only English by default
    by_codepoint = {k.replace("\ufe0f", ""): (k, v) for k, v in emoji.EMOJI_DATA.items()
                    if v["status"] == emoji.STATUS["fully_qualified"]}
    pool, seen = {}, set()
    for category, _, _, _, spec in _CATEGORIES:
        for cp in _codepoints(spec):
            entry = by_codepoint.get(chr(cp))
            if entry is None or cp in pool or entry[1]["E"] > _MAX_EMOJI_VERSION:
                continue
            char, data = entry
            names = {lang: _clean_name(data[lang]) for lang in ("en",) + LANGUAGES if lang in data}
            if len(names) <= len(LANGUAGES) or names["en"] in seen:
                continue  # a language is missing, or the English name would be ambiguous
            seen.add(names["en"])
            pool[cp] = EmojiInfo(char, names["en"], category, names)
    return tuple(pool[cp] for cp in sorted(pool))


@functools.lru_cache(maxsize=1)
def _pool_by_char() -> dict[str, EmojiInfo]:
    return {info.char: info for info in emoji_pool()}


def emoji_info(char: str) -> EmojiInfo:
    return _pool_by_char()[char]


def _category_words(category: str) -> tuple[str, str, str]:
    """(counted singular, counted plural, group label), e.g. ('animal', 'animals', 'animals')."""
    for name, *words, _ in _CATEGORIES:
        if name == category:
            return tuple(words)
    raise KeyError(category)


# ----------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------

# Named colours with fixed RGB values, far enough apart to be told apart in a caption.
BACKGROUNDS = {
    "white": (255, 255, 255), "black": (0, 0, 0), "light gray": (205, 205, 205),
    "dark gray": (80, 80, 80), "beige": (240, 228, 200), "pale yellow": (255, 246, 170),
    "light blue": (170, 210, 240), "navy blue": (25, 35, 95), "light green": (175, 225, 170),
    "pink": (250, 190, 205), "lavender": (215, 200, 245),
}
SIZES = ("small", "large")
# Fraction of a grid cell that the emoji's longer side fills.
_SIZE_FRACTION = {"small": 0.55, "large": 0.92}


@dataclass
class EmojiScene:
    id: str
    emojis: list[str]  # characters, in reading order of their cells
    names: list[str]  # English names, same order
    layout: list[tuple[int, int]]  # (row, col) on the 3x3 grid, row 0 = top
    sizes: list[str]  # "small" | "large"
    background: str  # a key of BACKGROUNDS
    captions: dict[str, str]


def compose_scene(scene_id: str, emojis: Sequence[str], layout: Sequence[tuple[int, int]],
                  sizes: Sequence[str], background: str, style: int = 0) -> EmojiScene:
    """A scene of pool emoji with its captions; objects are put in reading order of their
    cells, and `style` picks the sentence templates deterministically."""
    if not (len(emojis) == len(layout) == len(sizes)) or len(set(layout)) != len(layout):
        raise ValueError("need one distinct cell and one size per emoji")
    objects = sorted(zip(layout, emojis, sizes))  # reading order: top row first, left first
    layout = [tuple(cell) for cell, _, _ in objects]
    emojis = [e for _, e, _ in objects]
    sizes = [s for _, _, s in objects]
    scene = EmojiScene(scene_id, emojis, [emoji_info(e).name for e in emojis], layout,
                       sizes, background, captions={})
    scene.captions = scene_captions(scene, random.Random(style))
    return scene


def make_scenes(n: int, seed: int = 0) -> list[EmojiScene]:
    """`n` scenes with ids scene-00000..., a pure function of (n, seed).

    Scenes are drawn one after another from one generator, so make_scenes(10) is a prefix
    of make_scenes(100). No two scenes share the same set of emoji, so no caption of one
    scene can also be right for another (retrieval stays well-posed).
    """
    rng, pool = random.Random(seed), emoji_pool()
    scenes, used = [], set()
    while len(scenes) < n:
        infos = rng.sample(pool, rng.randint(2, 4))
        cells = [divmod(c, GRID) for c in rng.sample(range(GRID * GRID), len(infos))]
        sizes = [rng.choice(SIZES) for _ in infos]
        background, style = rng.choice(sorted(BACKGROUNDS)), rng.getrandbits(32)
        key = frozenset(i.char for i in infos)
        if key in used:
            continue
        used.add(key)
        scenes.append(compose_scene(f"scene-{len(scenes):05d}", [i.char for i in infos],
                                    cells, sizes, background, style))
    return scenes


def split_scenes(scenes: Sequence[EmojiScene], test_fraction: float = 0.2,
                 seed: int = 0) -> tuple[list[EmojiScene], list[EmojiScene]]:
    """A fixed (train, test) split; each part keeps the input order."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    order = list(range(len(scenes)))
    random.Random(seed).shuffle(order)
    test_ids = set(order[:round(test_fraction * len(scenes))])
    train = [s for i, s in enumerate(scenes) if i not in test_ids]
    return train, [s for i, s in enumerate(scenes) if i in test_ids]


def make_split(n_train: int, n_test: int,
               seed: int = 0) -> tuple[list[EmojiScene], list[EmojiScene]]:
    """Train and test scenes with distinct ids and distinct emoji combinations."""
    scenes = make_scenes(n_train + n_test, seed)
    return scenes[:n_train], scenes[n_train:]


# ----------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "center", "right")
# Names that end in "s" but name one thing.
_SINGULAR_S = {"bus", "cactus", "octopus", "hibiscus", "rhinoceros", "hippopotamus",
               "compass", "abacus", "lotus", "circus tent", "trolleybus", "oncoming bus",
               "minibus", "umbrella with rain drops", "tennis"}


def _is_plural(name: str) -> bool:
    return name.endswith("s") and not name.endswith(("ss", "us")) and name not in _SINGULAR_S


def _with_article(name: str) -> str:
    if _is_plural(name):
        return f"some {name}"
    vowel = name[0].lower() in "aeiou" and not name.lower().startswith(("uni", "use", "eu", "one"))
    return f"{'an' if vowel else 'a'} {name}"


def _join(items: Sequence[str], conjunction: str = "and", comma: str = ", ") -> str:
    """'a, b and c' (no serial comma)."""
    if len(items) <= 2:
        return f" {conjunction} ".join(items)
    return f"{comma.join(items[:-1])} {conjunction} {items[-1]}"


def _position(cell: tuple[int, int]) -> str:
    """(0, 0) -> 'in the top left corner', (0, 1) -> 'at the top', (1, 1) -> 'in the center'."""
    row, col = cell
    if (row, col) == (1, 1):
        return "in the center"
    if row == 1:
        return f"on the {_COLS[col]} side"
    if col == 1:
        return f"at the {_ROWS[row]}"
    return f"in the {_ROWS[row]} {_COLS[col]} corner"


def _relation(a: tuple[int, int], b: tuple[int, int]) -> str:
    """Where cell a lies relative to cell b, e.g. 'above and to the left of'."""
    vertical = "above" if a[0] < b[0] else "below" if a[0] > b[0] else ""
    horizontal = "to the left of" if a[1] < b[1] else "to the right of" if a[1] > b[1] else ""
    if vertical and horizontal:
        return f"{vertical} and {horizontal}"
    return horizontal or f"directly {vertical}"


def scene_captions(scene: EmojiScene, rng: random.Random) -> dict[str, str]:
    """All caption fields of a scene: short, short_alt, spatial, dense, long, short_<lang>."""
    placed = [f"{_with_article(n)} {_position(c)}" for n, c in zip(scene.names, scene.layout)]
    captions = {
        "short": _join([_with_article(n) for n in scene.names]),
        "short_alt": _short_alt(scene, rng),
        "spatial": _join(placed),
    }
    sentences = _dense_sentences(scene, rng)
    described = [s for pair in zip(sentences["objects"], sentences["kinds"]) for s in pair]
    captions["dense"] = " ".join(sentences["intro"] + described + sentences["relations"] + sentences["summary"])
    # The long caption keeps the sentences that describe what is where (about 110 tokens,
    # still past CLIP's 77) and drops the kinds, counts and closing: the demo's
    # long-caption field, a third the cost of `dense` for the CPU-bound LLM.
    captions["long"] = " ".join(sentences["intro"] + sentences["objects"] + sentences["relations"])
    for lang in LANGUAGES:
        names = [emoji_info(e).names[lang] for e in scene.emojis]
        captions[f"short_{lang}"] = _localized_short(names, lang)
    return captions


_SHORT_ALT = (
    "{rev} next to each other",
    "{rev} on a {bg} background",
    "a picture of {rev}",
    "{count} emoji: {rev}",
    "{rev}, drawn on {bg}",
)


def _short_alt(scene: EmojiScene, rng: random.Random) -> str:
    """Other words, other order, no articles: a different caption of the same image."""
    template = rng.choice(_SHORT_ALT)
    return template.format(rev=_join(scene.names[::-1]), bg=scene.background,
                           count=_NUMBERS[len(scene.names)])


_INTRO = (
    "This image shows {count} emoji arranged on a three by three grid over a plain {bg} "
    "background.",
    "The picture is a flat {bg} square with {count} emoji placed in the cells of an invisible "
    "three by three grid.",
    "On a solid {bg} background, {count} colorful emoji are laid out on a grid of three rows "
    "and three columns.",
)
_OBJECT = (
    "{Ord}, {a_name} {appears} {pos}, {size}.",
    "The {ord} emoji is {a_name}, placed {pos} and {size}.",
    "{Pos}, you can see {a_name}, {size}.",
)
_SIZE_PHRASE = {
    "small": ("drawn small, filling only about half of its cell",
              "drawn at a small size with plenty of {bg} space around it"),
    "large": ("drawn large, filling almost its whole cell",
              "drawn at a large size that takes up nearly all of its part of the grid"),
}
_KIND = (
    "The {name} {belongs} to the {group} category.",
    "As for its kind, the {name} {is} from the {group} group.",
)
_RELATION = (
    "The {a} {is} {rel} the {b}.",
    "Seen from the {b}, the {a} {sits} {rel} {it_b}.",
)
_SUMMARY = (
    "In total the image contains {count} emoji: {kinds}. {Empty} of the nine cells are empty "
    "and show only the {bg} background.",
    "Counting everything, there are {count} emoji, namely {kinds}, while {empty} cells of the "
    "grid stay plain {bg}.",
)
_CLOSING = (
    "There is no text, no border and nothing else in the picture besides these emoji.",
    "Apart from these emoji the image is empty, with no text, frame or shading.",
)
_ORDINALS = ("first", "second", "third", "fourth")


def _verbs(name: str) -> dict[str, str]:
    """Verb forms agreeing with a name: 'the cat is' but 'the grapes are'."""
    if _is_plural(name):
        return {"is": "are", "appears": "appear", "belongs": "belong", "sits": "sit", "it": "them"}
    return {"is": "is", "appears": "appears", "belongs": "belongs", "sits": "sits", "it": "it"}


def _dense_sentences(scene: EmojiScene, rng: random.Random) -> dict[str, list[str]]:
    """A long description, by part: every object's name, position, size and kind, the
    relation of neighbours in reading order, counts per kind and the background; several
    sentences, templates varied by `rng`."""
    count, bg = _NUMBERS[len(scene.names)], scene.background
    parts: dict[str, list[str]] = {"intro": [rng.choice(_INTRO).format(count=count, bg=bg)], "objects": [],
                                   "kinds": [], "relations": [], "summary": []}
    for i, (name, cell, size) in enumerate(zip(scene.names, scene.layout, scene.sizes)):
        verbs, pos = _verbs(name), _position(cell)
        parts["objects"].append(rng.choice(_OBJECT).format(
            Ord=_ORDINALS[i].capitalize(), ord=_ORDINALS[i], a_name=_with_article(name),
            pos=pos, Pos=pos[0].upper() + pos[1:], appears=verbs["appears"],
            size=rng.choice(_SIZE_PHRASE[size]).format(bg=bg)))
        group = _category_words(emoji_info(scene.emojis[i]).category)[2]
        parts["kinds"].append(rng.choice(_KIND).format(name=name, group=group, **verbs))
    for i in range(len(scene.names) - 1):
        a, b = scene.names[i], scene.names[i + 1]
        parts["relations"].append(rng.choice(_RELATION).format(
            a=a, b=b, rel=_relation(scene.layout[i], scene.layout[i + 1]),
            it_b=_verbs(b)["it"], **{k: v for k, v in _verbs(a).items() if k != "it"}))
    empty = _NUMBERS[GRID * GRID - len(scene.names)]
    parts["summary"].append(rng.choice(_SUMMARY).format(
        count=count, kinds=_kind_counts(scene), bg=bg, empty=empty, Empty=empty.capitalize()))
    parts["summary"].append(rng.choice(_CLOSING))
    return parts


def _kind_counts(scene: EmojiScene) -> str:
    """'two animals and one food or drink item', kinds in order of first appearance."""
    counts: dict[str, int] = {}
    for e in scene.emojis:
        category = emoji_info(e).category
        counts[category] = counts.get(category, 0) + 1
    phrases = [f"{_NUMBERS[k]} {_category_words(c)[0 if k == 1 else 1]}" for c, k in counts.items()]
    return _join(phrases)


def _korean_and(word: str) -> str:
    """Korean 'and' is a particle whose form depends on whether the word ends in a consonant."""
    last = word[-1]
    has_final_consonant = "\uac00" <= last <= "\ud7a3" and (ord(last) - 0xAC00) % 28 != 0
    return word + ("과" if has_final_consonant else "와")


def _localized_short(names: Sequence[str], lang: str) -> str:
    """The emoji names joined with the language's own word for 'and' (no articles)."""
    if lang == "ko":
        return " ".join([_korean_and(n) for n in names[:-1]] + [names[-1]])
    if lang in ("ja", "zh"):
        sep = {"ja": "と", "zh": "和"}[lang]
        return sep.join(names)
    if lang == "ar":  # the Arabic "and" is written attached to the next word
        return " و".join(names)
    conjunction = {"es": "y", "de": "und", "fr": "et", "it": "e", "pt": "e", "ru": "и",
                   "tr": "ve", "fa": "و", "id": "dan"}[lang]
    comma = "، " if lang == "fa" else ", "  # Persian lists use the Arabic comma
    return _join(names, conjunction, comma)


# ----------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------

def caption_records(scenes: Sequence[EmojiScene], fields: Sequence[str] = DEFAULT_RECORD_FIELDS,
                    image_root: str | os.PathLike | None = None) -> list:
    """One CaptionRecord per scene with the captions of `fields`, in that order.

    The first two fields form the stage-1 positive pair and the CRA pair. With
    `image_root` (the folder given to write_image_dataset) each record points at its PNG.
    """
    from llm2clip.data.records import CaptionRecord

    records = []
    for scene in scenes:
        missing = [f for f in fields if f not in scene.captions]
        if missing:
            raise KeyError(f"{scene.id} has no caption field(s) {missing}; "
                           f"it has {sorted(scene.captions)}")
        image = None if image_root is None else str(Path(image_root) / _image_relpath(scene))
        captions = [scene.captions[f] for f in fields]
        records.append(CaptionRecord(id=scene.id, captions=captions, image=image))
    return records


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------

FONT_ENV = "LLM2CLIP_EMOJI_FONT"
DEBIAN_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
_FONT_SIZE = 109  # the only size the font's colour bitmaps (CBDT) come in


def font_path() -> Path:
    """$LLM2CLIP_EMOJI_FONT, else the Debian font; a clear error if neither exists."""
    candidate = Path(os.environ.get(FONT_ENV) or DEBIAN_FONT)
    if not candidate.is_file():
        raise FileNotFoundError(
            f"Noto Color Emoji font not found at {candidate}. Install the Debian package "
            f"`fonts-noto-color-emoji` (scripts/system-deps.sh does) or point ${FONT_ENV} "
            f"at NotoColorEmoji.ttf.")
    return candidate


@functools.lru_cache(maxsize=4)
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, _FONT_SIZE)


@functools.lru_cache(maxsize=1024)
def emoji_glyph(char: str) -> Image.Image:
    """The emoji as an RGBA image at the font's native size, cropped to its pixels."""
    font = _font(str(font_path()))
    left, top, right, bottom = font.getbbox(char)
    canvas = Image.new("RGBA", (right + 8, bottom + 8), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), char, font=font, embedded_color=True)
    # Drawing onto transparent black leaves the edge colours multiplied by their alpha;
    # read them back as premultiplied ("RGBa") so pasting gives no dark fringe.
    canvas = Image.frombytes("RGBa", canvas.size, canvas.tobytes()).convert("RGBA")
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise ValueError(f"the emoji font has no glyph for {char!r}")
    return canvas.crop(box)


@functools.lru_cache(maxsize=4096)
def _scaled_glyph(char: str, longest_side: int) -> Image.Image:
    glyph = emoji_glyph(char)
    scale = longest_side / max(glyph.size)
    size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
    return glyph.resize(size, Image.LANCZOS)


def render_scene(scene: EmojiScene, size: int = 224) -> Image.Image:
    """The scene as an RGB image: each emoji centred in its grid cell at its size."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    cell = size / GRID
    for char, (row, col), obj_size in zip(scene.emojis, scene.layout, scene.sizes):
        glyph = _scaled_glyph(char, max(1, round(cell * _SIZE_FRACTION[obj_size])))
        x = round((col + 0.5) * cell - glyph.width / 2)
        y = round((row + 0.5) * cell - glyph.height / 2)
        image.paste(glyph, (x, y), mask=glyph)
    return image


# ----------------------------------------------------------------------------------------
# Writing a dataset folder
# ----------------------------------------------------------------------------------------

def _image_relpath(scene: EmojiScene) -> str:
    return f"images/{scene.id}.png"


def write_image_dataset(scenes: Sequence[EmojiScene], out_dir: str | os.PathLike,
                        size: int = 224) -> Path:
    """PNGs under out_dir/images/ plus out_dir/captions.jsonl; returns the JSONL path.

    Resumable: images that already exist are kept. Every file is written to a temporary
    name first and renamed, so an interrupted run never leaves a half-written file.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for scene in scenes:
        target = out / _image_relpath(scene)
        if not target.exists():
            png = io.BytesIO()
            render_scene(scene, size).save(png, format="PNG")
            atomic_write_bytes(target, png.getvalue())
    index = out / "captions.jsonl"
    atomic_write_text(index, "".join(json.dumps(_jsonl_row(scene), ensure_ascii=False) + "\n" for scene in scenes))
    return index


def _jsonl_row(scene: EmojiScene) -> dict:
    # Captions are top-level fields (as in DreamLIP-style rows); the scene layout is kept
    # apart under "meta" so that no reader mistakes it for a caption.
    meta = {"emojis": scene.emojis, "names": scene.names, "layout": [list(c) for c in scene.layout],
            "sizes": scene.sizes, "background": scene.background}
    return {"id": scene.id, "image": _image_relpath(scene), **scene.captions, "meta": meta}
