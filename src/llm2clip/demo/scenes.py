"""Emoji scenes: 2-4 distinct emoji on a 3x3 grid over a plain background colour, with
their captions (captions.py); a pure function of (n, seed), no randomness per run."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .captions import scene_captions
from .emoji_pool import BACKGROUNDS, GRID, SIZES, emoji_info, emoji_pool

DEFAULT_RECORD_FIELDS = ("short", "short_alt", "spatial", "dense")


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
        image = None if image_root is None else str(Path(image_root) / image_relpath(scene))
        captions = [scene.captions[f] for f in fields]
        records.append(CaptionRecord(id=scene.id, captions=captions, image=image))
    return records


def image_relpath(scene: EmojiScene) -> str:
    """Where write_image_dataset puts the scene's PNG, relative to its folder."""
    return f"images/{scene.id}.png"
