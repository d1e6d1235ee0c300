"""Does an embedding store still belong to the data it is used with?

Offline stage 2 (and the demo's evaluation) looks a caption's embedding up by (sample id,
field). If a caption was edited after `llm2clip embed`, or the rows of a file without an id
column were reordered (its ids are then row numbers), the lookup still succeeds and returns
another caption's embedding: the image trains against the wrong text, silently. So every
stored row keeps a hash of the text it embedded (`store.text_hash`), and before the first
step every caption that can be drawn is hashed and compared with it.

What can be drawn: a caption of a configured field that the store holds for that sample
(`drawable_captions`). A sample with configured captions none of which is stored (an id
the store does not know, e.g. a row added after embedding) could never train: it counts
as a mismatch too. All mismatches make one StoreMismatchError: the count, the first few
(id, field) pairs and the command that re-embeds the data.

Streamed: captions are compared CHUNK at a time (hashes computed, the stored hashes
gathered from the memory-mapped shards in one read per shard, compared as arrays), and
only the count and the first mismatches are kept, so memory stays flat at any data size.
Under torch.distributed each rank checks its own slice of the data and the ranks then
agree (`agree_across_ranks`), so every rank stops if any rank found a mismatch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .. import distributed as dist_utils
from ..data.records import field_matches
from .errors import StoreMismatchError
from .text_hash import text_hashes_of

if TYPE_CHECKING:  # store.py calls this module: import the type for annotations only
    from .store import EmbeddingStore

CHUNK = 65_536  # captions compared per vectorised step
SHOWN = 5  # mismatches named in the error


@dataclass
class Mismatches:
    count: int = 0
    examples: list[str] = field(default_factory=list)
    samples: int = 0  # samples with a configured caption
    captions: int = 0  # captions compared with the store

    def add(self, what: str) -> None:
        self.count += 1
        if len(self.examples) < SHOWN:
            self.examples.append(what)


class AlignmentCheck:
    """Feed it (sample id, {field: caption}) with `add`; `finish` returns what differs."""

    def __init__(self, store: EmbeddingStore, fields: Sequence[str] | None = None):
        self.store, self.fields = store, fields
        self.found = Mismatches()
        self._wanted: dict[str, bool] = {}  # field_matches per source label (a handful of labels)
        self._rows: list[int] = []
        self._texts: list[str] = []
        self._keys: list[tuple[str, str]] = []

    def add(self, sample_id: str, captions: dict[str, str]) -> None:
        # the hot loop (once per caption of the data): what drawable_captions keeps, inlined
        wanted, stored, row_of = [], 0, self.store.row
        for source, text in captions.items():
            if not self._is_wanted(source):
                continue
            wanted.append(source)
            row = row_of(sample_id, source)
            if row is not None:
                stored += 1
                self._rows.append(row)
                self._texts.append(text)
                self._keys.append((sample_id, source))
        if not wanted:
            return  # no configured caption: not trained in any mode
        self.found.samples += 1
        if not stored:
            self.found.add(f"sample id {sample_id!r} is not in the store" if not self.store.has_sample(sample_id)
                           else f"sample id {sample_id!r} has none of its captions ({', '.join(wanted)}) stored")
        if len(self._rows) >= CHUNK:
            self._compare()

    def finish(self) -> Mismatches:
        self._compare()
        return self.found

    def _is_wanted(self, source: str) -> bool:
        wanted = self._wanted.get(source)
        if wanted is None:
            wanted = self._wanted[source] = field_matches(source, self.fields)
        return wanted

    def _compare(self) -> None:
        if not self._rows:
            return
        differs = (self.store.text_hashes(np.array(self._rows)) != text_hashes_of(self._texts)).any(axis=1)
        for i in np.flatnonzero(differs):
            sample_id, source = self._keys[i]
            self.found.add(f"sample id {sample_id!r} field {source!r}: the caption text differs from the one "
                           "that was embedded")
        self.found.captions += len(self._rows)
        self._rows, self._texts, self._keys = [], [], []


def agree_across_ranks(found: Mismatches) -> Mismatches:
    """Every rank's findings merged (in rank order), on every rank."""
    if dist_utils.world_size() == 1:
        return found
    import torch.distributed as dist

    gathered: list = [None] * dist_utils.world_size()
    dist.all_gather_object(gathered, asdict(found))
    merged = Mismatches()
    for part in gathered:
        merged.count += part["count"]
        merged.samples += part["samples"]
        merged.captions += part["captions"]
        merged.examples += part["examples"][:SHOWN - len(merged.examples)]
    return merged


def verify_alignment(store: EmbeddingStore, samples: Iterable[tuple[str, dict[str, str]]],
                     fields: Sequence[str] | None, data: str, redo: str) -> Mismatches:
    """Check every drawable caption of `samples` (this rank's share) against `store`.

    Raises StoreMismatchError on every rank if any rank found a mismatch; `data` names the
    data in the message and `redo` says how to re-embed it.
    """
    check = AlignmentCheck(store, fields)
    for sample_id, captions in samples:
        check.add(sample_id, captions)
    found = agree_across_ranks(check.finish())
    if found.count:
        shown = "; ".join(found.examples) + (f"; ... ({found.count - len(found.examples)} more)"
                                             if found.count > len(found.examples) else "")
        raise StoreMismatchError(
            f"{store.directory}: {found.count} caption(s) of {data} do not match the embedding store "
            f"({found.captions} captions of {found.samples} samples checked): {shown}. The data changed after it "
            f"was embedded (edited captions, or rows reordered in a file whose ids are row numbers). {redo}")
    return found


def unstored_fields(store: EmbeddingStore, fields: Sequence[str]) -> list[str]:
    """The configured fields of which the store holds no caption for any sample."""
    return [f for f in fields if not any(field_matches(stored, [f]) for stored in store.fields)]


def embed_command(store: EmbeddingStore, encoder: str, data: str, id_field: str = "id") -> str:
    """The `llm2clip embed` command that rewrites `store` for `data` (same fields and dtype;
    `--overwrite`, as embed keeps a finished store of other captions otherwise)."""
    fields = " ".join(dict.fromkeys(_field_of(label) for label in store.fields))
    quoted = f'"{data}"' if "{" in data or " " in data else data
    ids = f" --id-field {id_field}" if id_field != "id" else ""
    return (f"Re-embed the data: llm2clip embed --model {encoder or '<caption encoder>'} --data {quoted}{ids} "
            f"--fields {fields} --dtype {store.dtype} --out {store.directory} --overwrite")


def _field_of(label: str) -> str:
    """`caption.3` (4th caption of a list-valued field) -> `caption`; other labels as they are."""
    name, _, position = label.rpartition(".")
    return name if name and position.isdigit() else label
