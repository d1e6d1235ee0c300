"""The near-duplicate long-caption benchmark: Urban-1k's property in miniature.

Each family is FAMILY_SIZE scenes of 6-9 emoji that are identical (cells, sizes,
background, sentence templates) except for the emoji at one position, drawn at random
from the fifth object on; each member has its own emoji there. Their `walk` captions go
through every object in reading order ("The first emoji is ..., the second ..."), so the
members' captions are word for word the same up to the changed object's sentence, which
starts past a 77-token text tower's window: a CLIP-style tower sees the same text for
every member of a family and can only guess among them, while a tower that reads the
whole caption can tell them apart. `window_identical` checks the property with a real
tokenizer; the demo reports the share of families that have it.
"""
from __future__ import annotations

import random
from typing import Sequence

from .emoji_pool import BACKGROUNDS, GRID, SIZES, emoji_pool
from .scenes import EmojiScene, compose_scene

FAMILY_SIZE = 4
OBJECTS = (5, 7)  # objects per scene, inclusive
FIRST_CHANGED = 3  # 0-based: the changed object is the fourth or a later one
NEAR_DUPLICATE_FIELD = "walk"


def make_families(n_families: int, seed: int, prefix: str,
                  exclude: frozenset = frozenset()) -> list[EmojiScene]:
    """`n_families` x FAMILY_SIZE scenes, a family's members consecutive, ids
    `{prefix}-{family:04d}-{member}`; a pure function of the arguments. No scene has the
    emoji set of another or of one in `exclude` (sets of characters)."""
    rng, pool = random.Random(seed), emoji_pool()
    used, scenes = set(exclude), []
    while len(scenes) < n_families * FAMILY_SIZE:
        k = rng.randint(*OBJECTS)
        drawn = rng.sample(pool, k + FAMILY_SIZE - 1)  # the scene's emoji, then the other members'
        cells = sorted(divmod(c, GRID) for c in rng.sample(range(GRID * GRID), k))  # reading order
        sizes = [rng.choice(SIZES) for _ in range(k)]
        background, style = rng.choice(sorted(BACKGROUNDS)), rng.getrandbits(32)
        changed = rng.randint(FIRST_CHANGED, k - 1)
        members = [[info.char for info in drawn[:k]] for _ in range(FAMILY_SIZE)]
        for m in range(1, FAMILY_SIZE):
            members[m][changed] = drawn[k + m - 1].char
        keys = [frozenset(chars) for chars in members]
        if any(key in used for key in keys):
            continue
        used.update(keys)
        family = f"{prefix}-{len(scenes) // FAMILY_SIZE:04d}"
        scenes += [compose_scene(f"{family}-{m}", chars, cells, sizes, background, style)
                   for m, chars in enumerate(members)]
    return scenes


def families_of(scenes: Sequence[EmojiScene]) -> list[list[EmojiScene]]:
    """Consecutive groups of FAMILY_SIZE, as make_families lays them out."""
    return [list(scenes[i:i + FAMILY_SIZE]) for i in range(0, len(scenes), FAMILY_SIZE)]


def window_identical(tokenizer, texts: Sequence[str], window: int = 77) -> tuple[bool, bool]:
    """(the texts' first `window` tokens are identical, the full token sequences all differ),
    with the text tower's own tokenizer (special tokens included, as the tower counts them)."""
    ids = [tuple(tokenizer(text)["input_ids"]) for text in texts]
    return len({seq[:window] for seq in ids}) == 1, len(set(ids)) == len(ids)
