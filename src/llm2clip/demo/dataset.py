"""Step 1 of the demo: its data folder, a pure function of the demo's size.

    train_captions.jsonl   stage 1's scenes (captions only)
    stage2_train.jsonl     the first n_stage2 of them and n_stage2_families near-duplicate
                           families, with images: the baseline's and stage 2's pairs
                           (short + long; a family scene's long caption is its walk)
    val.jsonl, test_captions.jsonl          held-out scenes (all captions, images)
    neardup_val.jsonl, neardup_test.jsonl   near-duplicate families (near_duplicates.py)
    multilingual_test.jsonl                 the first n_multilingual test scenes' 13 translations
    wordnet_train.jsonl, wordnet_heldout.jsonl   WordNet pairs (query, positive)
    construction.json      how the near-duplicate families came out (checked with MiniLM)

Scenes of every split have distinct emoji sets; WordNet's held-out synsets share no word
with the training ones.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..atomic_file import atomic_write_text
from .emoji_pool import LANGUAGES
from .near_duplicates import (FAMILY_SIZE, FIRST_CHANGED, NEAR_DUPLICATE_FIELD, OBJECTS, families_of,
                              make_families, window_identical)
from .sizes import DemoSize

log = logging.getLogger("llm2clip.demo")

FILES = ("train", "stage2", "val", "test", "neardup_val", "neardup_test", "multilingual_test",
         "wordnet_train", "wordnet_heldout", "construction")
FILE_NAMES = {"train": "train_captions.jsonl", "stage2": "stage2_train.jsonl", "test": "test_captions.jsonl",
              "construction": "construction.json"}
MULTILINGUAL_FIELDS = tuple(f"short_{lang}" for lang in LANGUAGES)


def data_files(folder: Path) -> dict[str, Path]:
    return {name: folder / FILE_NAMES.get(name, f"{name}.jsonl") for name in FILES}


def step_data(folder: Path, size: DemoSize) -> dict[str, str]:
    from .rendering import write_image_dataset
    from .scenes import make_scenes

    files = data_files(folder)
    if all(f.is_file() for f in files.values()):
        log.info("data: reusing %s", folder)
        return {k: str(v) for k, v in files.items()}
    scenes = make_scenes(size.n_train + size.n_test + size.n_val, seed=0)  # a prefix-stable draw
    train, test = scenes[:size.n_train], scenes[size.n_train:size.n_train + size.n_test]
    val = scenes[size.n_train + size.n_test:]
    taken = frozenset(frozenset(s.emojis) for s in scenes)
    neardup_test = make_families(size.n_test_families, seed=101, prefix="fam-test", exclude=taken)
    taken |= {frozenset(s.emojis) for s in neardup_test}
    neardup_val = make_families(size.n_val_families, seed=102, prefix="fam-val", exclude=taken)
    taken |= {frozenset(s.emojis) for s in neardup_val}
    train_families = make_families(size.n_stage2_families, seed=103, prefix="fam-train", exclude=taken)
    write_image_dataset(train[:size.n_stage2] + train_families + val + test + neardup_val + neardup_test, folder)
    (folder / "captions.jsonl").unlink(missing_ok=True)  # write_image_dataset's index: superseded
    rows = {
        "train": [_row(s, with_image=False) for s in train],
        "stage2": [_row(s) for s in train[:size.n_stage2]] + [_family_training_row(s) for s in train_families],
        "val": [_row(s) for s in val], "test": [_row(s) for s in test],
        "neardup_val": [_row(s) for s in neardup_val], "neardup_test": [_row(s) for s in neardup_test],
        "multilingual_test": [_row(s, fields=MULTILINGUAL_FIELDS) for s in test[:size.n_multilingual]],
    }
    rows.update(_wordnet_rows(size))
    for name, path in files.items():
        if name != "construction":
            _write_jsonl(path, rows[name])
    atomic_write_text(files["construction"], json.dumps(construction(neardup_val, neardup_test), indent=2) + "\n")
    log.info("data: %d train scenes (%d with images for stage 2, + %d near-duplicate families), %d val, "
             "%d test scenes, %d + %d near-duplicate families (val, test) in %s", len(train), size.n_stage2,
             size.n_stage2_families, len(val), len(test), size.n_val_families, size.n_test_families, folder)
    return {k: str(v) for k, v in files.items()}


def construction(neardup_val, neardup_test) -> dict:
    """The near-duplicate benchmark's construction and the share of families whose captions
    the baseline's 77-token text tower sees as one text (MiniLM's own tokenizer)."""
    from transformers import AutoTokenizer

    from ..baseline.text_tower import CLIP_TEXT_TOKENS, embedded_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_minilm_path())
    facts = {"family_size": FAMILY_SIZE, "objects_per_scene": list(OBJECTS),
             "changed_object_from": FIRST_CHANGED + 1, "caption_field": NEAR_DUPLICATE_FIELD,
             "window_tokens": CLIP_TEXT_TOKENS}
    for split, scenes in (("val", neardup_val), ("test", neardup_test)):
        checks = [window_identical(tokenizer, [s.captions[NEAR_DUPLICATE_FIELD] for s in family], CLIP_TEXT_TOKENS)
                  for family in families_of(scenes)]
        facts[split] = {"families": len(checks), "identical_within_window": sum(same for same, _ in checks),
                        "all_captions_differ": sum(differ for _, differ in checks)}
    return facts


def _row(scene, with_image: bool = True, fields=None) -> dict:
    captions = scene.captions if fields is None else {f: scene.captions[f] for f in fields}
    row = {"id": scene.id, **captions}
    if with_image:
        row["image"] = f"images/{scene.id}.png"
    return row


def _family_training_row(scene) -> dict:
    """A near-duplicate scene as a training pair: short + its walk as the long caption (its
    `long`, with the relations, would pass the LLM's 256 tokens for 7 objects)."""
    return {"id": scene.id, "short": scene.captions["short"], "long": scene.captions[NEAR_DUPLICATE_FIELD],
            "image": f"images/{scene.id}.png"}


def _wordnet_rows(size: DemoSize) -> dict[str, list[dict]]:
    from ..data.wordnet import read_synsets, split_synsets, wordnet_pairs

    train, heldout = split_synsets(read_synsets(), size.n_wordnet_heldout, seed=0)
    return {"wordnet_train": _pair_rows(wordnet_pairs(train, size.n_wordnet, seed=1), "train"),
            "wordnet_heldout": _pair_rows(wordnet_pairs(heldout, len(heldout), seed=2), "heldout")}


def _pair_rows(pairs, split: str) -> list[dict]:
    return [{"id": f"wordnet-{split}-{i:05d}", "query": p.query, "positive": p.positive} for i, p in enumerate(pairs)]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
