"""Pure-text pairs from WordNet (Debian's `wordnet-base`): a word and its definition, or a
word and a synonym from the same synset. Stage 1 mixes such pairs into the caption pairs
(paper §3.1 adds pure-text retrieval data) so the caption encoder learns more than the
demo's own caption grammar; held-out synsets give a CRA set of another kind.

Database format (wndb(5)): one synset per line of `data.<pos>`,
`offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [pointers...] | gloss`,
w_cnt in hex; lines starting with two spaces are the licence header.
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .text_pairs import TextPair

DEBIAN_WORDNET = "/usr/share/wordnet"
WORDNET_ENV = "LLM2CLIP_WORDNET"
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")


@dataclass(frozen=True)
class Synset:
    words: tuple[str, ...]  # lemmas, underscores as spaces, adjective markers like "(a)" removed
    definition: str  # the gloss without its quoted examples


def wordnet_dir() -> Path:
    """$LLM2CLIP_WORDNET, else Debian's folder; a clear error if it holds no database."""
    folder = Path(os.environ.get(WORDNET_ENV) or DEBIAN_WORDNET)
    if not (folder / "data.noun").is_file():
        raise FileNotFoundError(f"WordNet database not found in {folder} (no data.noun). Install the Debian "
                                f"package `wordnet-base` (scripts/system-deps.sh does) or point ${WORDNET_ENV} "
                                "at a folder holding data.noun, data.verb, ...")
    return folder


def read_synsets(folder: str | os.PathLike | None = None) -> list[Synset]:
    """Every synset with a non-empty definition, in file order (noun, verb, adj, adv)."""
    folder = Path(folder) if folder else wordnet_dir()
    synsets = []
    for pos in PARTS_OF_SPEECH:
        path = folder / f"data.{pos}"
        with open(path, encoding="utf-8", errors="strict") as handle:
            for number, line in enumerate(handle, 1):
                if line.startswith("  "):
                    continue  # the licence header
                synset = _parse(line, f"{path}: line {number}")
                if synset.definition:
                    synsets.append(synset)
    return synsets


def _parse(line: str, where: str) -> Synset:
    head, bar, gloss = line.partition(" | ")
    fields = head.split()
    if not bar or len(fields) < 5:
        raise DataError(f"{where}: not a WordNet synset line (expected `offset lex ss_type w_cnt word ... | gloss`)")
    try:
        count = int(fields[3], 16)
    except ValueError:
        raise DataError(f"{where}: word count {fields[3]!r} is not hexadecimal") from None
    words = tuple(dict.fromkeys(_lemma(fields[4 + 2 * i]) for i in range(count)))
    definition = re.sub(r'"[^"]*"', "", gloss).split(";")[0].strip()
    return Synset(words, definition)


def _lemma(raw: str) -> str:
    return re.sub(r"\([a-z]+\)$", "", raw).replace("_", " ")


def wordnet_pairs(synsets: list[Synset], n: int, seed: int) -> list[TextPair]:
    """`n` pairs from distinct synsets drawn at random: word -> definition, or (for half of
    the synsets with two or more words) word -> synonym."""
    rng = random.Random(seed)
    chosen = rng.sample(synsets, min(n, len(synsets)))
    pairs = []
    for synset in chosen:
        word = rng.choice(synset.words)
        others = [w for w in synset.words if w != word]
        if others and rng.random() < 0.5:
            pairs.append(TextPair(word, rng.choice(others)))
        else:
            pairs.append(TextPair(word, synset.definition))
    return pairs


def split_synsets(synsets: list[Synset], n_heldout: int, seed: int) -> tuple[list[Synset], list[Synset]]:
    """(training synsets, held-out synsets): no held-out synset shares a word with a training one."""
    order = list(range(len(synsets)))
    random.Random(seed).shuffle(order)
    heldout = [synsets[i] for i in order[:n_heldout]]
    held_words = {w for s in heldout for w in s.words}
    train = [synsets[i] for i in order[n_heldout:] if not held_words.intersection(synsets[i].words)]
    return train, heldout
