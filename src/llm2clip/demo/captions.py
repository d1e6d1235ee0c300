"""The demo's captions of a scene, from the emoji's CLDR names: two short ones worded
differently (the stage-1 positive pair), a spatial one, a dense one and a long one well
over CLIP's 77 tokens (long-caption retrieval), and a short one per language
(multilingual retrieval). Sentence templates are varied by a seeded generator.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

from .emoji_pool import GRID, LANGUAGES, category_words, emoji_info

if TYPE_CHECKING:
    from .scenes import EmojiScene


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
    """All caption fields of a scene: short, short_alt, spatial, dense, long, walk, short_<lang>."""
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
    # The walk goes through the objects in reading order and stops: the near-duplicate
    # benchmark's caption (near_duplicates.py), where what tells scenes apart comes late.
    captions["walk"] = " ".join(sentences["intro"] + sentences["objects"])
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
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth")


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
        group = category_words(emoji_info(scene.emojis[i]).category)[2]
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
    phrases = [f"{_NUMBERS[k]} {category_words(c)[0 if k == 1 else 1]}" for c, k in counts.items()]
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
