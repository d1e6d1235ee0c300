"""The errors of an embedding store (store.py reads it, writer.py writes it, alignment.py
checks it against the data): all DataErrors, so the CLI prints them as one line."""
from ..errors import DataError


class StoreError(DataError):
    """An embedding store that cannot be used; the message names the folder/shard."""


class StoreMismatchError(StoreError):
    """A store written by another encoder, or for other captions, than the caller expects."""


class IncompleteStoreError(StoreError):
    """A store whose writing has not finished (missing shards or manifest)."""
