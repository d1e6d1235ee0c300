"""WordNet text pairs (data/wordnet.py): the database format, pairs, a held-out split."""
import pytest

from llm2clip.data.errors import DataError
from llm2clip.data.wordnet import Synset, read_synsets, split_synsets, wordnet_dir, wordnet_pairs

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
NOUNS = (
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04431553 n 0000 | that which is perceived "
    "or known or inferred to have its own distinct existence (living or nonliving)  \n"
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a member of the genus Canis; "
    '"the dog barked all night"  \n'
)
ADJS = "00001740 00 a 02 able(a) 0 capable 0 000 | (usually followed by `to') having the necessary means  \n"


def _database(folder, nouns=NOUNS):
    for pos, body in (("noun", nouns), ("verb", ""), ("adj", ADJS), ("adv", "")):
        (folder / f"data.{pos}").write_text(HEADER + body, encoding="utf-8")
    return folder


def test_synsets_are_read_from_the_database_format(tmp_path):
    synsets = read_synsets(_database(tmp_path))
    assert synsets == [
        Synset(("entity",), "that which is perceived or known or inferred to have its own distinct existence "
                            "(living or nonliving)"),
        Synset(("dog", "domestic dog", "Canis familiaris"), "a member of the genus Canis"),  # examples dropped
        Synset(("able", "capable"), "(usually followed by `to') having the necessary means"),
    ]


def test_a_malformed_line_names_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"data\.noun: line 4: word count 'zz'"):
        read_synsets(_database(tmp_path, NOUNS + "00000001 03 n zz entity 0 000 | broken count\n"))


def test_pairs_and_held_out_split(tmp_path):
    synsets = [Synset((f"word{i}", f"alias{i}"), f"definition {i}") for i in range(100)]
    synsets.append(Synset(("word3", "other"), "shares word3 with synset 3"))
    train, heldout = split_synsets(synsets, 20, seed=0)
    held_words = {w for s in heldout for w in s.words}
    assert len(heldout) == 20 and not held_words & {w for s in train for w in s.words}
    pairs = wordnet_pairs(train, 50, seed=1)
    assert pairs == wordnet_pairs(train, 50, seed=1) and len(pairs) == 50
    by_word = {w: s for s in train for w in s.words}
    for pair in pairs:  # a word with its own definition or a synonym, never its own copy
        synset = by_word[pair.query]
        assert pair.positive == synset.definition or (pair.positive in synset.words and pair.positive != pair.query)
    assert {p.positive.startswith("definition") for p in pairs} == {True, False}


def test_debian_wordnet_when_installed():
    try:
        folder = wordnet_dir()
    except FileNotFoundError:
        pytest.skip("Debian's wordnet-base is not installed (scripts/system-deps.sh installs it)")
    synsets = read_synsets(folder)
    assert len(synsets) > 100_000
    assert any(s.words[0] == "dog" and "Canis" in s.definition for s in synsets)
