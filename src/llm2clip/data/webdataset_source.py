"""Stage-2 data streamed from webdataset tar shards (img2dataset layout).

A sample is the tar members sharing a key: an image (`jpg`/`jpeg`/`png`/`webp`), the
real caption in `txt`, and a `json` whose string fields are more captions (DreamLIP's
`longSV`, ... or img2dataset's `caption`); `txt` counts as the field `caption` unless
the json has one. The sample id is the key, so a store written by
`llm2clip embed --data "shards/{00000..00099}.tar"` joins to it.

Shards are given as a brace pattern, a `::`-joined list, local paths, URLs or `pipe:`
commands (webdataset's own expansion and openers). Every epoch permutes the shard list
with (seed, epoch); process `rank` of `world_size` takes every world_size-th shard and
DataLoader worker w of W every W-th of those, so each shard is read once per epoch
across all ranks and workers (`resampled: true` draws shards with replacement instead).
Within an epoch each worker passes its raw (undecoded) samples through webdataset's
shuffle buffer (`shuffle_buffer` samples, seeded from (seed, epoch, rank, worker)), so
batches mix shards and change every epoch. Each worker batches its own samples, and the
DataLoader hands out worker batches round-robin, so batch b of the run is batch b // W
of worker b % W: a resumed run skips exactly the raw samples of the batches already
trained (after the shuffle, before decoding) and then sees what an uninterrupted run
would. Resuming needs the same shards, workers, batch size, buffer and processes.

Offline, stage 2 first reads the caption members of the shards (never the images) and
checks them against the store (`shard_captions`, embeddings/alignment.py); each sample's
drawn caption is checked again when it is used. Per-sample faults (unreadable image, no
image, a key that tries to leave its folder, no caption, a caption that no longer matches
the store) are counted skips, as for CSV/JSONL data; a shard that cannot be opened or is
truncated is logged and the rest of that shard is skipped.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import DataError
from .caption_choice import CaptionChoice, drawable_captions
from .image_text import collate_samples
from .records import CaptionRecord

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSIONS = ("txt", "json")


def expand_shards(spec: str | list[str]) -> list[str]:
    """`data/{00000..00009}.tar` (or `a.tar::b.tar`, or a list) -> the shard URLs."""
    from webdataset.shardlists import expand_urls

    shards = [u for item in ([spec] if isinstance(spec, str) else spec) for u in expand_urls(item)]
    if not shards:
        raise DataError(f"no shards in {spec!r}")
    return shards


def is_shard_spec(data: str) -> bool:
    """True for webdataset shards (`x.tar`, `x-{000..009}.tar`, `pipe:... .tar`), not a records file."""
    return ".tar" in str(data)


def iter_shard(url: str, on_error: Callable[[str], None] | None = None,
               captions_only: bool = False) -> Iterator[dict[str, Any]]:
    """The raw samples of one shard ({'__key__', '__url__', ext: bytes, ...}); a broken shard
    ends early and is reported to `on_error` (default: raise DataError naming it).
    `captions_only`: only the caption members (txt, json) are read; see `_caption_members`."""
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    try:
        files = _caption_members(url) if captions_only else tar_file_expander(url_opener([{"url": url}]))
        yield from group_by_keys(files)
    except Exception as err:  # noqa: BLE001 - tarfile/gopen raise many kinds on a bad shard
        message = f"{url}: unreadable shard ({type(err).__name__}: {err})"
        if on_error is None:
            raise DataError(message) from None
        on_error(message)


def _caption_members(url: str) -> Iterator[dict[str, Any]]:
    """The caption files of a shard, as webdataset's tar expander yields them.

    A local shard is opened for random access, so tarfile seeks over the images and only
    their 512-byte headers are read; a URL or `pipe:` stream has to pass by in full, but
    only the caption members are kept.
    """
    from webdataset.tariterators import tar_file_expander, url_opener

    if not Path(url).is_file():
        yield from tar_file_expander(url_opener([{"url": url}]), select_files=_is_caption_member)
        return
    with tarfile.open(url, "r:*") as tar:
        for member in tar:
            if member.isreg() and _is_caption_member(member.name):
                yield {"fname": member.name, "data": tar.extractfile(member).read(), "__url__": url}


def _is_caption_member(name: str) -> bool:
    from webdataset.tariterators import base_plus_ext

    return (base_plus_ext(name)[1] or "").lower() in CAPTION_EXTENSIONS


def sample_captions(sample: dict[str, Any]) -> dict[str, str]:
    """{field: caption} of a raw sample: the json's non-empty string fields, + `txt` as `caption`."""
    captions: dict[str, str] = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as err:
            raise DataError(f"{sample['__url__']}: {sample['__key__']}.json is not JSON ({err})") from None
        if isinstance(meta, dict):
            captions.update({k: v for k, v in meta.items() if isinstance(v, str) and v.strip() and k != "key"})
    if "txt" in sample:
        text = sample["txt"].decode("utf-8", errors="replace").strip()
        if text:
            captions.setdefault("caption", text)
    return captions


def check_key(sample: dict[str, Any]) -> str:
    """The sample id; a key that is absolute or climbs out (`../`) is refused."""
    key = sample["__key__"]
    parts = key.replace("\\", "/").split("/")
    if key.startswith(("/", "\\")) or ".." in parts:
        raise DataError(f"{sample['__url__']}: sample key {key!r} leaves the shard's folder")
    return key


def shard_captions(urls: list[str], workers: int = 0) -> Iterator[tuple[str, dict[str, str]]]:
    """(sample id, {field: caption}) of every sample of `urls` that training would not skip
    for its key or its json; only the caption members are read (as for `embed`).

    Parsing tar headers in Python is most of the cost, so with `workers` > 0 that many
    DataLoader worker processes read the shards in parallel, each handing back a shard's
    captions at a time (samples then arrive in worker-interleaved shard order)."""
    if workers <= 0 or len(urls) < 2:
        for url in urls:
            yield from _captions_of_shard(url)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_ShardCaptionLists(urls), batch_size=None, collate_fn=as_is,
                        num_workers=min(workers, len(urls)))
    for captions in loader:
        yield from captions


def _captions_of_shard(url: str) -> Iterator[tuple[str, dict[str, str]]]:
    for sample in iter_shard(url, on_error=log.warning, captions_only=True):
        try:
            yield check_key(sample), sample_captions(sample)
        except DataError:  # a per-sample fault, skipped in training as well
            continue


class _ShardCaptionLists(IterableDataset):
    """Worker w of W lists the captions of shards w, w+W, ... (one list per shard)."""

    def __init__(self, urls: list[str]):
        self.urls = urls

    def __iter__(self) -> Iterator[list[tuple[str, dict[str, str]]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for url in self.urls[worker::workers]:
            yield list(_captions_of_shard(url))


def read_webdataset_records(spec: str | list[str], caption_fields: list[str] | None = None) -> list[CaptionRecord]:
    """Caption records of every sample in the shards (for `llm2clip embed`); only the
    caption members are read. `caption_fields` keeps only those fields (samples with
    none are left out)."""
    records, seen, unsafe = [], set(), []
    for url in expand_shards(spec):
        for sample in iter_shard(url, captions_only=True):
            try:
                key = check_key(sample)
            except DataError as err:  # a per-sample fault: counted and left out, as in training
                unsafe.append(str(err))
                continue
            if key in seen:
                raise DataError(f"{url}: sample key {key!r} occurs twice in the shards")
            seen.add(key)
            captions = sample_captions(sample)
            if caption_fields is not None:
                captions = {f: captions[f] for f in caption_fields if f in captions}
            if captions:
                records.append(CaptionRecord(id=key, captions=list(captions.values()),
                                             sources=list(captions.keys()), image=None))
    if unsafe:
        log.warning("left out %d samples whose key leaves the shard's folder, e.g. %s", len(unsafe), unsafe[0])
    if not records:
        raise DataError(f"{spec}: no samples with captions{' in ' + str(caption_fields) if caption_fields else ''}")
    return records


class WebDatasetStream(IterableDataset):
    """Batches (as `collate_samples` makes them) of one rank, forever; see the module doc."""

    def __init__(self, shards: str | list[str], preprocess, choice: CaptionChoice, batch_size: int,
                 store=None, with_text: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 resampled: bool = False, skip_batches: int = 0, shuffle_buffer: int = 0):
        self.shards = expand_shards(shards)
        if len(self.shards) < world_size and not resampled:
            raise DataError(f"{len(self.shards)} shards cannot feed {world_size} processes; use more shards "
                            "or data.resampled: true")
        if shuffle_buffer < 0:
            raise ValueError(f"data.shuffle_buffer must be >= 0 (0: off), got {shuffle_buffer}")
        self.shuffle_buffer = shuffle_buffer
        self.preprocess, self.choice, self.batch_size = preprocess, choice, batch_size
        self.store, self.with_text = store, with_text
        self.seed, self.rank, self.world_size, self.resampled = seed, rank, world_size, resampled
        self.skip_batches = skip_batches  # batches of this rank already trained (resume)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # the DataLoader asks worker 0 first, so worker 0 plays the stream that owns batch
        # skip_batches; a stream owns batches b with b % workers == its index
        worker = (physical + self.skip_batches) % workers
        mine = len(range(worker, self.skip_batches, workers))
        raw = itertools.islice(self._raw_samples(worker, workers), mine * self.batch_size, None)
        while True:
            items = [self._sample(s, epoch) for s, epoch in itertools.islice(raw, self.batch_size)]
            if len(items) < self.batch_size:
                return
            yield collate_samples(items)

    def _raw_samples(self, worker: int, workers: int) -> Iterator[tuple[dict, int]]:
        for epoch in itertools.count():
            samples = (sample for url in self._epoch_shards(epoch, worker, workers)
                       for sample in iter_shard(url, on_error=log.warning))
            for sample in self._shuffled(samples, epoch, worker):
                yield sample, epoch

    def _shuffled(self, samples: Iterator[dict], epoch: int, worker: int) -> Iterator[dict]:
        """The epoch's raw (undecoded) samples through webdataset's shuffle buffer.

        Its RNG is seeded from (seed, epoch, rank, worker), so the order is a function of
        the run's seed (a resumed run skips exactly the samples an uninterrupted one
        trained, before decoding them) and differs every epoch, and so do the in-batch
        negatives. The buffer fills before the first sample leaves it; it does not mix
        epochs, so each sample keeps its epoch's caption choice.
        """
        if not self.shuffle_buffer:
            return samples
        from webdataset.filters import shuffle

        state = int(np.random.default_rng([self.seed, epoch, self.rank, worker]).integers(2 ** 63))
        return shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(state))(samples)

    def _epoch_shards(self, epoch: int, worker: int, workers: int) -> list[str]:
        if self.resampled:  # with replacement, independent per rank and worker
            rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
            return [self.shards[i] for i in rng.integers(len(self.shards), size=len(self.shards))]
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        mine = [self.shards[i] for i in order[self.rank::self.world_size]][worker::workers]
        if not mine:
            raise DataError(f"rank {self.rank} worker {worker} has no shard: {len(self.shards)} shards for "
                            f"{self.world_size} processes x {workers} workers; use fewer workers or more shards")
        return mine

    def _sample(self, sample: dict[str, Any], epoch: int) -> dict[str, Any]:
        from ..vision.image_loading import decode_image

        key = sample.get("__key__", "?")
        try:
            key = check_key(sample)
            captions = drawable_captions(sample_captions(sample), key, self.store)
            index = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16)  # a stable per-sample draw
            source = self.choice.pick(captions, index, epoch)
            if source is None:
                return {"id": key, "skipped": "no_caption_in_the_configured_fields"}
            item: dict[str, Any] = {"id": key, "source": source}
            if self.store is not None:
                # checked before training too; a shard changed since (or read from a
                # changing URL) must still never pair an image with another caption's row
                if not self.store.text_matches(key, source, captions[source]):
                    return {"id": key, "skipped": "caption_differs_from_the_store"}
                item["text_embedding"] = torch.from_numpy(self.store.get(key, source))
            if self.with_text:
                item["text"] = captions[source]
            ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
            if ext is None:
                return {"id": key, "skipped": "no_image_in_the_sample"}
            image = decode_image(sample[ext], f"{sample['__url__']}:{key}.{ext}")
            item["pixels"] = self.preprocess([image])[0]
            return item
        except (DataError, OSError) as err:
            return {"id": key, "skipped": type(err).__name__ + ": " + str(err)}


def as_is(batch):
    """The DataLoader's collate for a stream that batches itself (module-level: workers pickle it)."""
    return batch
