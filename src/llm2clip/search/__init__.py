"""Image search with a trained model: build a FAISS index of a folder (or shards) of images
with the image side, query it with text of any length or language through the caption
encoder and adaptor, or with an image; show the results as an HTML gallery.

    from llm2clip.search import build_index, Index
    build_index("runs/stage2/final", "photos/", "photos.index")
    Index.open("photos.index").search(["a long description ..."], k=10)

Needs the `search` extra (faiss-cpu).
"""
from .build import build_index, finish_index
from .errors import IncompleteIndexError, IndexMismatchError, SearchIndexError
from .faiss_index import IndexKind
from .gallery import QueryResult, write_contact_sheet, write_gallery
from .index import Hit, Index
from .showcase import search_showcase

__all__ = ["build_index", "finish_index", "Index", "Hit", "IndexKind", "QueryResult", "write_gallery",
           "write_contact_sheet", "search_showcase", "SearchIndexError", "IndexMismatchError",
           "IncompleteIndexError"]
