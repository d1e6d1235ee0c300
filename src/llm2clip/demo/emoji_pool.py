"""What the demo's scenes are drawn from: emoji with their names in 14 languages,
background colours, object sizes and the grid.

Only data that ships in packages is used (the `emoji` package's CLDR names): no downloads.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable

import emoji

LANGUAGES = ("es", "de", "fr", "it", "pt", "ru", "tr", "ar", "fa", "id", "ja", "ko", "zh")
GRID = 3

# Named colours with fixed RGB values, far enough apart to be told apart in a caption.
BACKGROUNDS = {
    "white": (255, 255, 255), "black": (0, 0, 0), "light gray": (205, 205, 205),
    "dark gray": (80, 80, 80), "beige": (240, 228, 200), "pale yellow": (255, 246, 170),
    "light blue": (170, 210, 240), "navy blue": (25, 35, 95), "light green": (175, 225, 170),
    "pink": (250, 190, 205), "lavender": (215, 200, 245),
}
SIZES = ("small", "large")

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


def category_words(category: str) -> tuple[str, str, str]:
    """(counted singular, counted plural, group label), e.g. ('animal', 'animals', 'animals')."""
    for name, *words, _ in _CATEGORIES:
        if name == category:
            return tuple(words)
    raise KeyError(category)

