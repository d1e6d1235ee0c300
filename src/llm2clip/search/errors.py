"""The errors of image indexes (ValueErrors, so the CLI prints them as one line)."""
from ..embeddings.store import StoreError


class SearchIndexError(StoreError):
    """An index that cannot be used; the message names the folder."""


class IndexMismatchError(SearchIndexError):
    """An index built by another model than the one it is used with."""


class IncompleteIndexError(SearchIndexError):
    """An index whose build has not finished (no index.json)."""
